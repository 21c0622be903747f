"""What a person sees while a job runs: one line per logging interval (from rank 0, printed by the driver), stage
banners, errors; not the libraries' chatter. Ray Data's per-operator progress bars, Ray's forwarding of every
worker's stdout/stderr (DeepSpeed build and accelerator notices, torch warnings, controller logs) and INFO logs of
Ray/MLflow are off unless ``--verbose`` (or UNISPEECH_VERBOSE=1). Worker logs stay in Ray's session log directory;
a failing worker's traceback still reaches the driver through Ray Train's error.

    pretrain  update 125/400  loss 5.183  ctc 6.971  contrastive 3.040  lr 5.00e-04  7.7 audio-s/s  ETA 3m12s
    pretrain  health 125  contrastive acc 42%  cos(pos,neg) 0.61  cos(pos,pred) 0.50  code ppl 38.1  ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

VERBOSE_ENV = "UNISPEECH_VERBOSE"
NO_PROGRESS_ENV = "UNISPEECH_NO_PROGRESS"
"""Set by --no-progress (runtime/job_flags.py), so that every process of the job (a Ray job's driver) sees it."""
NOISY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic", "DeepSpeed")
# Loggers whose warnings only restate our own quiet defaults (Ray Data's "Progress bars disabled. To enable, ..."
# once per process after connect_ray turned them off): silent unless verbose.
OUR_CHOICE_LOGGERS = ("ray.data._internal.progress",)

# metric key -> (label, format) of the update line, in this order; keys a task does not report are left out
UPDATE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("loss", "loss", "{:.3f}"),
    ("ctc_loss", "ctc", "{:.3f}"),
    ("contrastive_loss", "contrastive", "{:.3f}"),
    ("diversity_loss", "diversity", "{:.3f}"),
    ("lr", "lr", "{:.2e}"),
)
# the health line of a pretraining interval (unispeech_core/telemetry.py): is the self-supervised half learning?
HEALTH_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("contrastive_accuracy", "contrastive acc", "{:.0%}"),
    ("cos_pos_neg", "cos(pos,neg)", "{:.2f}"),
    ("cos_pos_pred", "cos(pos,pred)", "{:.2f}"),
    ("code_perplexity", "code ppl", "{:.1f}"),
    ("prob_perplexity", "soft ppl", "{:.0f}"),
    ("code_randomness", "random codes", "{:.0%}"),
    ("masked_frames_per_utt", "masked/utt", "{:.0f}"),
    ("grad_share/contrastive", "contrastive grad share", "{:.0%}"),
    ("ctc_blank_share", "ctc blank", "{:.0%}"),
)
DEV_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("dev_loss", "loss", "{:.3f}"),
    ("dev_ctc_loss", "ctc", "{:.3f}"),
    ("dev_contrastive_loss", "contrastive", "{:.3f}"),
    ("dev_per", "PER", "{:.1%}"),
    ("dev_accuracy", "accuracy", "{:.1%}"),
)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") not in ("", "0", "false")


def progress_bars() -> bool:
    """Whether progress bars (tqdm, Ray Data's) are wanted: no --no-progress in this job or the one that started
    this process."""
    return os.environ.get(NO_PROGRESS_ENV, "0") in ("", "0", "false")


def set_verbose(on: bool) -> None:
    """Process-wide (an environment variable, so a Ray job's driver and child processes see it too)."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    quiet_libraries()


def quiet_libraries() -> None:
    """INFO logs of Ray, MLflow and DeepSpeed off unless verbose. On a machine without CUDA, DeepSpeed is told it
    runs on CPU (instead of warning so on every import in every process)."""
    level = logging.INFO if verbose() else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name in OUR_CHOICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose() else logging.ERROR)
    if not verbose() and "DS_ACCELERATOR" not in os.environ and not _cuda_visible():
        os.environ["DS_ACCELERATOR"] = "cpu"


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def duration(seconds: float) -> str:
    """``3m12s``, ``1h04m``, ``45s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _fields(metrics: dict[str, float], fields: tuple[tuple[str, str, str], ...]) -> list[str]:
    return [f"{label} {fmt.format(metrics[key])}" for key, label, fmt in fields if metrics.get(key) is not None]


def task_line(task: str, *parts: str) -> str:
    """A console line of a job: its task in a fixed-width column, then the parts."""
    return "  ".join([f"{task:<8}", *parts])


TIME_SHARE = "time_share/"
"""Prefix of the step-time breakdown's metrics (train/phase_clock.py)."""


def biggest_shares(metrics: dict[str, float], n: int = 2) -> list[tuple[str, float]]:
    """The ``n`` largest phase shares of an interval's metrics, largest first."""
    named = [(k.removeprefix(TIME_SHARE), v) for k, v in metrics.items()
             if k.startswith(TIME_SHARE) and k != f"{TIME_SHARE}slowest_rank"]
    return sorted(named, key=lambda kv: -kv[1])[:n]


def update_line(task: str, step: int, max_steps: int, metrics: dict[str, float], eta_s: float | None) -> str:
    """The one line of a logging interval."""
    parts = [f"update {step}/{max_steps}", *_fields(metrics, UPDATE_FIELDS)]
    if metrics.get("audio_seconds_per_s") is not None:
        parts.append(f"{metrics['audio_seconds_per_s']:.1f} audio-s/s")
    if top := biggest_shares(metrics):
        parts.append("time " + " ".join(f"{name} {share:.0%}" for name, share in top))
    if metrics.get("nonfinite_skipped"):
        parts.append(f"skipped {int(metrics['nonfinite_skipped'])} non-finite")
    if metrics.get("oom_skipped"):
        parts.append(f"skipped {int(metrics['oom_skipped'])} out-of-memory")
    if eta_s is not None:
        parts.append(f"ETA {duration(eta_s)}")
    return task_line(task, *parts)


def health_status_line(task: str, step: int, metrics: dict[str, float]) -> str | None:
    """The health statistics of a logging interval (None when the task reports none: fine-tuning)."""
    parts = _fields(metrics, HEALTH_FIELDS)
    return task_line(task, f"health {step}", *parts) if parts else None


def dev_line(task: str, step: int, metrics: dict[str, float]) -> str:
    return task_line(task, f"dev at {step}", *_fields(metrics, DEV_FIELDS))


class Eta:
    """Remaining time from the pace of this attempt (a restored job does not count the steps it skipped)."""

    def __init__(self, start_step: int, max_steps: int, clock: Any = None):
        import time

        self.clock = clock or time.monotonic
        self.start_step, self.max_steps, self.t0 = start_step, max_steps, self.clock()

    def __call__(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return (self.clock() - self.t0) / done * (self.max_steps - step)


class ConsoleLines:
    """Lines from the workers, printed by the driver: a Ray queue (an actor using no CPU) the rank-0 worker puts
    lines into and a driver thread that prints them as they come. Without Ray forwarding worker output, this is
    the console of a training job."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._print_lines, name="console-lines", daemon=True)

    def _print_lines(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                print(self.queue.get(block=True, timeout=0.5), flush=True)
            except Empty:
                if self._stop.is_set():
                    return
            except Exception:  # the queue actor is gone (Ray shut down): nothing more will come
                return

    @contextlib.contextmanager
    def printing(self) -> Iterator[ConsoleLines]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)
            with contextlib.suppress(Exception):
                import ray

                ray.kill(self.queue.actor)


def emit(queue: Any, line: str) -> None:
    """Worker side: hand ``line`` to the driver's console (print it here when there is no queue)."""
    if queue is None:
        print(line, flush=True)
        return
    try:
        queue.put_nowait(line)
    except Exception:  # a full or lost console never stops training
        logging.getLogger("unispeech.console").info(line)
