"""The console a person reads: one update line per logging interval with ETA, dev lines, durations."""

from __future__ import annotations

from unispeech_platform.runtime.console import Eta, dev_line, duration, health_status_line, update_line


def test_update_line_shows_the_losses_the_task_reports_throughput_and_eta():
    metrics = {"loss": 5.1834, "ctc_loss": 6.971, "contrastive_loss": 3.04, "prob_perplexity": 83.4, "lr": 5e-4,
               "audio_seconds_per_s": 7.74, "grad_norm": 1.0, "data_wait_fraction": 0.1}
    assert update_line("pretrain", 125, 400, metrics, 192.0) == (
        "pretrain  update 125/400  loss 5.183  ctc 6.971  contrastive 3.040  lr 5.00e-04  "
        "7.7 audio-s/s  ETA 3m12s")
    health = {**metrics, "contrastive_accuracy": 0.423, "cos_pos_neg": 0.614, "cos_pos_pred": 0.5, "code_perplexity": 38.14,
              "code_randomness": 0.12, "masked_frames_per_utt": 31.2, "grad_share/contrastive": 0.3}
    assert health_status_line("pretrain", 125, health) == (
        "pretrain  health 125  contrastive acc 42%  cos(pos,neg) 0.61  cos(pos,pred) 0.50  code ppl 38.1  soft ppl 83  "
        "random codes 12%  masked/utt 31  contrastive grad share 30%")
    assert health_status_line("ctc", 1, {"loss": 2.0}) is None
    assert health_status_line("ctc", 300, {"loss": 2.0, "ctc_blank_share": 0.974}) == "ctc       health 300  ctc blank 97%"
    assert update_line("ctc", 1, 10, {"loss": 2.0, "nonfinite_skipped": 3}, None) == (
        "ctc       update 1/10  loss 2.000  skipped 3 non-finite")


def test_dev_line_formats_fractions_as_percentages():
    assert dev_line("ctc", 50, {"dev_loss": 1.23456, "dev_per": 0.4567}) == "ctc       dev at 50  loss 1.235  PER 45.7%"
    assert dev_line("lid", 20, {"dev_accuracy": 0.83}) == "lid       dev at 20  accuracy 83.0%"


def test_duration_and_eta_from_the_pace_of_this_attempt():
    assert [duration(s) for s in (0, 45.4, 192, 3599, 3840)] == ["0s", "45s", "3m12s", "59m59s", "1h04m"]
    now = [100.0]
    eta = Eta(start_step=40, max_steps=100, clock=lambda: now[0])  # resumed at 40: earlier steps do not count
    assert eta(40) is None
    now[0] = 130.0  # 10 updates in 30 s -> 3 s/update, 50 left
    assert eta(50) == 150.0


def test_warnings_that_restate_our_quiet_defaults_are_silent_unless_verbose(monkeypatch):
    """Ray Data's "Progress bars disabled. To enable, ..." repeats what connect_ray chose; --verbose brings both
    the bars and the warning back."""
    import logging

    from unispeech_platform.runtime.console import quiet_libraries, set_verbose

    monkeypatch.setenv("UNISPEECH_VERBOSE", "0")
    quiet_libraries()
    progress = logging.getLogger("ray.data._internal.progress")
    assert not progress.isEnabledFor(logging.WARNING) and progress.isEnabledFor(logging.ERROR)
    set_verbose(True)
    assert progress.isEnabledFor(logging.WARNING)
    set_verbose(False)
