"""One optimizer update: its learning rate and task schedules, its micro-batches (forward, backward, step) and
the skips that keep every rank in step when a micro-batch goes wrong (docs/training.md#what-a-step-does)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import torch

from unispeech_platform.train.batches import LockstepBatches
from unispeech_platform.train.checkpoint import TrainState
from unispeech_platform.train.engine import grad_norm, set_lr
from unispeech_platform.train.faults import first_line, is_out_of_memory
from unispeech_platform.train.metrics import Window, any_rank, is_finite
from unispeech_platform.train.schedules import learning_rate
from unispeech_platform.train.tasks import Task

if TYPE_CHECKING:
    from unispeech_platform.train.session import Session

log = logging.getLogger("unispeech.train")
MAX_CONSECUTIVE_NONFINITE = 50
MAX_CONSECUTIVE_OOM = 10
"""Out-of-memory micro-batches skipped in a row before the job stops (the model, not a batch, does not fit)."""


def run_update(s: Session, window: Window) -> None:
    """Update ``s.state.step + 1``: the schedules are pure functions of the step (a restore restores them); the
    update's lr, grad norm, schedule values and timings go into ``window``."""
    state, feed = s.state, s.feed
    lr = learning_rate(s.job.optim, state.step, s.train.max_steps)
    set_lr(s.engine, lr)
    scheduled = s.task.before_update(s.engine.module, state.step)
    started, wait_before, audio_before = time.perf_counter(), feed.wait_s, feed.audio_s

    accumulate_update(s.task, s.engine, feed, state, window, s.train.grad_accum_steps, s.device, s.amp)
    state.step += 1
    state.epoch, state.position = feed.epoch, feed.position
    window.add_update(
        lr=lr,
        grad_norm=grad_norm(s.engine),
        seconds=time.perf_counter() - started,
        wait_s=feed.wait_s - wait_before,
        audio_s=feed.audio_s - audio_before,
        **scheduled,
    )


def accumulate_update(task: Task, engine, feed: LockstepBatches, state: TrainState, window: Window,
                      grad_accum_steps: int, device: torch.device,
                      amp: contextlib.AbstractContextManager | None = None) -> None:
    """The micro-batches of one optimizer update, each forward inside ``amp`` (the precision's autocast).

    A micro-batch that goes wrong on any rank is skipped by every rank (no backward, no step: collectives stay
    matched and the weights untouched), decided by one all-reduce per micro-batch: a non-finite loss (counted in
    ``state.nonfinite_skipped``) or a forward pass that ran out of memory (``state.oom_skipped``; ZeRO 0-2 only:
    their forward pass has no collectives, so the other ranks are not left waiting in one, while ZeRO-3 gathers
    parameters inside it and an out-of-memory error there fails the attempt). Too many in a row stop the job."""
    catch_oom = _zero_stage(engine) < 3
    done, nonfinite_run, oom_run = 0, 0, 0
    clock = window.clock
    while done < grad_accum_steps:
        with clock.phase("data_wait"):
            batch = feed.next()
        with clock.phase("forward"):
            loss, stats = _forward(task, engine, batch, device, amp, catch_oom)
        oom_here = loss is _OOM
        finite_here = not oom_here and is_finite(loss)
        out_of_memory, nonfinite = any_rank([oom_here, not oom_here and not finite_here], device)
        if out_of_memory:
            del loss, stats, batch
            _release_cached_memory(device)
            state.oom_skipped += 1
            oom_run += 1
            if oom_run >= MAX_CONSECUTIVE_OOM:
                raise MemoryError(f"{oom_run} consecutive micro-batches ran out of memory at update "
                                  f"{state.step + 1}: the model, not one batch, does not fit (lower "
                                  "data.max_batch_seconds, raise train.zero_stage or give workers more memory)")
            continue
        if nonfinite:
            state.nonfinite_skipped += 1
            nonfinite_run += 1
            if nonfinite_run >= MAX_CONSECUTIVE_NONFINITE:
                raise FloatingPointError(f"{nonfinite_run} consecutive non-finite losses at update {state.step}")
            continue
        nonfinite_run = oom_run = 0
        with clock.phase("backward"):
            engine.backward(loss)
        with clock.phase("optimizer"):
            engine.step()  # DeepSpeed updates only at the accumulation boundary
        window.add_micro(loss.detach().float(), stats)
        done += 1


_OOM = object()
"""What `_forward` returns instead of a loss when the forward pass ran out of memory."""


def _forward(task: Task, engine, batch, device: torch.device, amp, catch_oom: bool):
    """The task's forward pass; an out-of-memory error becomes ``(_OOM, {})`` when it can be skipped (the error
    and its frames, which hold the batch's activations, are released on return)."""
    try:
        with amp or contextlib.nullcontext():
            return task.forward(engine, batch, device)
    except Exception as e:
        if not (catch_oom and is_out_of_memory(e)):
            raise
        log.warning("out of memory in a forward pass: every rank skips this batch (%s)", first_line(e))
    return _OOM, {}


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _zero_stage(engine) -> int:
    stage = getattr(engine, "zero_optimization_stage", None)
    return int(stage()) if callable(stage) else 0
