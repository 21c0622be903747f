"""What the loop logs every `train.log_every` updates (and after the last): one set of metrics per interval to
MLflow (rank 0), one console line, and the alarms that read them (docs/training.md#what-a-step-does).

The place to add a metric or a health check: a metric family is one more entry in `IntervalLog.metrics`, a
failure state one more detector in train/health.py (read here and after each dev evaluation). Gathering is collective: every rank runs the same all-reduces in the same
order (keep a new family's collective unconditional, or conditional on something every rank shares).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from unispeech_platform.runtime.console import Eta, health_status_line, update_line
from unispeech_platform.runtime.flops import mfu
from unispeech_platform.train.engine import state_memory_mb
from unispeech_platform.train.health import TAG_PREFIX, report_health
from unispeech_platform.train.metrics import Window, all_reduce_sums
from unispeech_platform.train.step_efficiency import bare_audio_seconds_per_s, timed_steps

if TYPE_CHECKING:
    from unispeech_platform.train.session import Session

log = logging.getLogger("unispeech.train")


class IntervalLog:
    """The metrics window since the last log, and the row counts it adds to the restored checkpoint's."""

    def __init__(self, s: Session):
        self.window = Window(s.device, s.rank)
        """Sums since the last log; `train/step.py` adds each update and micro-batch."""
        self.dropped_before = dict(s.state.dropped_rows)  # counts up to the restored checkpoint (all ranks)
        self.augmented_before = dict(s.state.augmented_rows)
        self.eta = Eta(s.state.step, s.train.max_steps)
        self.mfu_basis = mfu_basis(s)
        self.bare_rate: float | None = None
        """CPU: the bare model step's audio-s/s per worker, timed once after the first interval (perf/step_efficiency)."""
        self.bare_steps = timed_steps(s.train, s.device)

    @staticmethod
    def due(s: Session) -> bool:
        return s.state.step % s.train.log_every == 0 or s.is_last_update

    def log(self, s: Session) -> None:
        """Collective: gather the interval's metrics, log them (rank 0), say the update and health lines, name any
        failure state (train/health.py)."""
        metrics = self.metrics(s)
        if self.bare_steps and s.feed.last is not None:  # once; collective (every rank logs at the same update)
            self.bare_rate = measured_bare_rate(s, self.bare_steps)
            self.bare_steps = 0
        if self.bare_rate:
            metrics["perf/bare_audio_seconds_per_s_per_worker"] = self.bare_rate
            metrics["perf/step_efficiency"] = metrics["perf/audio_seconds_per_s_per_worker"] / self.bare_rate
        s.tracker.log_metrics(metrics, s.state.step)
        s.last_report = metrics
        s.say(update_line(s.job.task, s.state.step, s.train.max_steps, metrics, self.eta(s.state.step)))
        health = health_status_line(s.job.task, s.state.step, metrics)
        if health is not None:
            s.say(health)
        watch_health(s, metrics)

    def metrics(self, s: Session) -> dict[str, float]:
        """Collective, in this order on every rank: the window's means, rows dropped (and augmented), the skip
        counters, memory per rank."""
        metrics = self.window.reduce(s.world)
        if self.mfu_basis is not None:  # GPU runs: achieved model FLOP/s per worker over the device's peak
            metrics["perf/mfu"] = mfu(metrics["perf/audio_seconds_per_s_per_worker"], *self.mfu_basis)
        metrics.update(self._dropped_rows(s))
        if s.job.data.augment.enabled:  # the same on every rank; docs/data.md#augmentation
            metrics.update(self._augmented_rows(s))
        metrics["nonfinite_skipped"] = s.state.nonfinite_skipped
        metrics["oom_skipped"] = s.state.oom_skipped
        memory = all_reduce_sums(state_memory_mb(s.engine), s.device)  # mean per rank, measured
        metrics.update({k: v / s.world for k, v in memory.items()})
        return metrics

    def _dropped_rows(self, s: Session) -> dict[str, float]:
        """Bad rows the data pipeline dropped, summed over ranks, since the run began (``bad_rows/<reason>``)."""
        return _since_run_start(s, s.feed.dropped, self.dropped_before, s.state.dropped_rows, "bad_rows/")

    def _augmented_rows(self, s: Session) -> dict[str, float]:
        """Rows the data pipeline augmented, summed over ranks, since the run began (``augmented/<effect>``)."""
        return _since_run_start(s, s.feed.augmented, self.augmented_before, s.state.augmented_rows, "augmented/")


def _since_run_start(s: Session, this_attempt: dict[str, int], before: dict[str, int], total: dict[str, int],
                     prefix: str) -> dict[str, float]:
    """Collective: this attempt's counts summed over ranks, added to those up to the restored checkpoint; ``total``
    (the checkpointed state's) is updated, the metrics are ``<prefix><key>``."""
    out = {}
    for key, n in all_reduce_sums(dict(this_attempt), s.device).items():
        total[key] = before.get(key, 0) + int(n)
        out[f"{prefix}{key}"] = total[key]
    return out


def measured_bare_rate(s: Session, steps: int) -> float:
    """Collective: the bare step's audio-s/s per worker (train/step_efficiency.py), timed on every rank at once
    on its last batch and averaged over ranks."""
    rate = bare_audio_seconds_per_s(s.task, s.engine.module, s.feed.last, s.device, s.amp, steps)
    return all_reduce_sums({"bare": rate}, s.device)["bare"] / s.world


def mfu_basis(s: Session) -> tuple[float, float] | None:
    """(training FLOPs per audio second of this model, the GPU's dense bf16 peak FLOP/s) for ``perf/mfu``; None on
    CPU or a GPU whose peak runtime/flops.py does not know. The FLOPs are counted once, on one 10 s utterance of
    the pretraining model (forward + backward; a CTC fine-tuning skips the quantizer and contrastive head, a few
    percent of the FLOPs)."""
    if s.device.type != "cuda":
        return None
    import torch

    from unispeech_platform.runtime.flops import peak_for, pretraining_flops_per_audio_second

    peak = peak_for(torch.cuda.get_device_name(s.device))
    if peak is None:
        return None
    return pretraining_flops_per_audio_second(s.task.config, device=str(s.device)), peak


def watch_health(s: Session, metrics: dict[str, float]) -> None:
    """Collective in effect (every rank holds the same reduced metrics): name newly seen failure states, keep them
    in the checkpointed state, and end the run after this update when a state is in train.stop_on."""
    stop = report_health(s.health, metrics, s.state.step, tracker=s.tracker, say=s.say, task=s.job.task)
    s.state.health_seen = sorted(s.health.seen)
    # in what each checkpoint reports to Ray Train, so a sweep's trial table names them (tune/report.py)
    s.last_report.update({f"{TAG_PREFIX}{state}": 1.0 for state in s.state.health_seen})
    if stop is not None and s.stopped_on is None:
        s.stopped_on = stop
