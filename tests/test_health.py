"""(No Ray) Each failure-state detector fires on a constructed state, names it once, stays silent on healthy
statistics, and stop_on ends the run at the state (unispeech_platform/train/health.py)."""

from __future__ import annotations

import math

import pytest

from unispeech_platform.train.health import HEALTH_STATES, HealthMonitor, Objective, diagnose, health_line

OBJECTIVE = Objective(num_groups=2, num_negatives=20, ctc_weight=0.5)
CHANCE = math.log(21)
HEALTHY = {"code_perplexity": 40.0, "prob_perplexity": 150.0, "code_randomness": 0.3, "contrastive_accuracy": 0.4,
           "cos_pos_neg": 0.6, "cos_pos_pred": 0.5, "contrastive_loss": 2.1, "temperature": 1.2,
           "grad_share/ctc": 0.6, "grad_share/contrastive": 0.4, "dev_blank_share": 0.7}

STATES = {
    "codebook_collapse": {"code_perplexity": 4.0},  # 2 per group
    "collinear_targets": {"cos_pos_neg": 0.995, "contrastive_loss": CHANCE},
    "random_codes": {"code_randomness": 0.88},
    "starved_contrastive": {"grad_share/ctc": 0.95, "grad_share/contrastive": 0.05},  # 19x
    "ctc_blank_plateau": {"dev_blank_share": 0.97},
}


def test_healthy_statistics_name_no_state():
    assert diagnose(HEALTHY, OBJECTIVE) == []


@pytest.mark.parametrize("state", HEALTH_STATES)
def test_each_state_is_named_on_its_constructed_metrics(state):
    found = diagnose({**HEALTHY, **STATES[state]}, OBJECTIVE)
    assert [f.state for f in found] == [state]
    message = found[0].message
    assert "\n" not in message and ("model." in message or "data." in message)


def test_the_boundaries_are_where_the_docs_put_them():
    assert diagnose({**HEALTHY, "code_perplexity": 4.2}, OBJECTIVE) == []  # 2.1 per group
    near_chance = {**HEALTHY, "cos_pos_neg": 0.995, "contrastive_loss": 0.97 * CHANCE}
    assert diagnose(near_chance, OBJECTIVE) == []  # collinear but the loss already left chance
    assert diagnose({**HEALTHY, "grad_share/ctc": 0.9, "grad_share/contrastive": 0.1}, OBJECTIVE) == []  # 9x
    pure_ssl = Objective(num_groups=2, num_negatives=20, ctc_weight=0.0)
    assert diagnose({**HEALTHY, **STATES["starved_contrastive"], **STATES["ctc_blank_plateau"]}, pure_ssl) == []


def test_a_state_is_reported_once_and_stop_on_stops_every_time_it_is_present():
    monitor = HealthMonitor(OBJECTIVE, stop_on=("codebook_collapse",), after_steps=10)
    collapsed = {**HEALTHY, **STATES["codebook_collapse"]}
    new, stop = monitor.check(collapsed, 10)
    assert [f.state for f in new] == ["codebook_collapse"] and stop == "codebook_collapse"
    assert monitor.check(collapsed, 20) == ([], "codebook_collapse")
    assert monitor.check({**HEALTHY, **STATES["ctc_blank_plateau"]}, 299)[0] == []  # every CTC run starts there
    assert [f.state for f in monitor.check({**HEALTHY, **STATES["ctc_blank_plateau"]}, 300)[0]] == ["ctc_blank_plateau"]
    new, stop = monitor.check({**HEALTHY, **STATES["random_codes"]}, 30)
    assert [f.state for f in new] == ["random_codes"] and stop is None
    (line,) = health_line(30, new)
    assert line.startswith("HEALTH random_codes at update 30: random codes: 88% of hard Gumbel samples")


def test_the_blank_plateau_is_named_from_the_training_batches_between_dev_evaluations():
    """A run that scores its dev split only at the end (the presets' pretraining) names the plateau from the
    training micro-batches' greedy CTC output at update 300; a dev evaluation's share, where present, decides."""
    monitor = HealthMonitor(OBJECTIVE)
    assert monitor.check({**HEALTHY, "ctc_blank_share": 0.99}, 299)[0] == []  # every CTC run starts there
    assert diagnose({**HEALTHY, "ctc_blank_share": 0.99}, OBJECTIVE) == []  # the dev evaluation's 0.7 decides
    training_only = {k: v for k, v in HEALTHY.items() if k != "dev_blank_share"}
    (found,) = monitor.check({**training_only, "ctc_blank_share": 0.99}, 300)[0]
    assert found.state == "ctc_blank_plateau" and "99.0% of training frames" in found.message
    assert diagnose({**training_only, "ctc_blank_share": 0.9}, OBJECTIVE) == []


def test_the_training_blank_share_counts_the_labeled_rows_valid_frames():
    """(Real model) ctc_blank_share against a hand count: frames past a row's length and unlabeled rows are not
    counted; the blank is the pad id."""
    import torch
    from evaluate_helpers import CI_MODEL

    from unispeech_core import UniSpeechConfig, UniSpeechForCTC
    from unispeech_platform.train.tasks.base import ctc_blank_share

    model = UniSpeechForCTC(UniSpeechConfig(**CI_MODEL, vocab_size=6, pad_token_id=0))
    samples = 16000
    mask = torch.ones(3, samples, dtype=torch.long)
    mask[1, samples // 2:] = 0  # row 1 is half as long
    frames = model.unispeech._get_feat_extract_output_lengths(mask.sum(-1)).tolist()
    logits = torch.zeros(3, frames[0], 6)
    logits[..., 3] = 1.0  # a phone everywhere ...
    logits[0, :10, 0] = 2.0  # ... but 10 blank frames in row 0
    logits[1, :, 0] = 2.0  # row 1: blank everywhere, padding included
    logits[2, :, 0] = 2.0  # row 2: blank everywhere, but unlabeled
    share = ctc_blank_share(model, logits, {"attention_mask": mask}, torch.tensor([True, True, False]), blank=0)
    expected = (10 + frames[1]) / (frames[0] + frames[1])
    assert share["ctc_blank_share"].item() == pytest.approx(expected)
    assert ctc_blank_share(model, logits, {"attention_mask": mask}, torch.tensor([False] * 3), blank=0) == {}


def test_before_after_steps_only_a_collapsed_codebook_is_named():
    """Every run starts with collinear targets, hot codes and a starved contrastive term, so those wait for
    health_after_steps; no run starts with a collapsed codebook: a collapse at update 75 that the diversity term
    undoes by 200 (the labeled-only preset's UniSpeech seeds 0 and 1, 2026-12-05) is named when it shows."""
    monitor = HealthMonitor(OBJECTIVE, stop_on=("collinear_targets",), after_steps=200)
    early = {**HEALTHY, **STATES["collinear_targets"], **STATES["random_codes"], **STATES["starved_contrastive"]}
    assert monitor.check(early, 75) == ([], None)
    new, stop = monitor.check({**early, **STATES["codebook_collapse"]}, 75)
    assert [f.state for f in new] == ["codebook_collapse"] and stop is None
    new, stop = monitor.check(early, 200)
    assert [f.state for f in new] == ["collinear_targets", "random_codes", "starved_contrastive"]
    assert stop == "collinear_targets"


def test_supervised_transfer_names_no_state_of_the_contrastive_half():
    """At ctc_weight 1 the quantizer trains on nothing (the supervised arm's codes fell to 1.1–2.5 per group by update
    75 in the unlabeled CPU preset): its code statistics are not a failure of the run."""
    supervised = Objective(num_groups=2, num_negatives=20, ctc_weight=1.0)
    contrastive_states = {k: v for state in ("codebook_collapse", "collinear_targets", "random_codes")
                          for k, v in STATES[state].items()}
    assert diagnose({**HEALTHY, **contrastive_states}, supervised) == []
    assert [f.state for f in diagnose({**HEALTHY, **contrastive_states}, OBJECTIVE)] == [
        "codebook_collapse", "collinear_targets", "random_codes"]


def test_random_codes_at_a_cold_temperature_do_not_advise_a_colder_one():
    """Random codes at Gumbel temperature ≤ 1 come from flat quantizer logits: a faster decay (0.998, τ 0.56 at
    update 650) left 96% of one seed's samples off the argmax (2026-12-05), so the hint names no temperature knob."""
    (hot,) = diagnose({**HEALTHY, "code_randomness": 0.9, "temperature": 1.6}, OBJECTIVE)
    (cold,) = diagnose({**HEALTHY, "code_randomness": 0.9, "temperature": 0.55}, OBJECTIVE)
    assert "decay it faster" in hot.message and "logits are flat" not in hot.message
    assert "logits are flat" in cold.message and "decay it faster" not in cold.message
