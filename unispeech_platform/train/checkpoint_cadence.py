"""When the loop saves a checkpoint, and when it stops to be restarted from one: at the end of every update, every
rank takes the same decision (docs/training.md#fault-tolerance).

- every `checkpoint.every_steps` updates and after the last one;
- once per drain notice of this attempt (Ray reports a node of the run being preempted): save, train on;
- SIGTERM on any rank: save (unless just saved), then every rank raises `Preempted` and Ray Train restarts the
  worker group from that checkpoint (train/preemption.py has the signal mechanics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.distributed as dist

from unispeech_platform.runtime.console import task_line
from unispeech_platform.train.checkpoint import save_and_report
from unispeech_platform.train.preemption import Preempted, preemption_signals

if TYPE_CHECKING:
    from unispeech_platform.train.session import Session


class CheckpointCadence:
    def __init__(self) -> None:
        self.drain_saved = False
        """One checkpoint per drain notice of this attempt."""

    def after_update(self, s: Session) -> None:
        """Collective: the scheduled checkpoint, then the preemption signals (one all-reduce); raises `Preempted`
        on every rank after a SIGTERM's checkpoint."""
        step, last = s.state.step, s.is_last_update
        saved = step % s.job.checkpoint.every_steps == 0 or last
        if saved:
            s.place.where = f"the checkpoint at update {step}"
            _save(s)

        signals = preemption_signals(s.device)  # collective: all ranks act at the same update
        if signals.node_draining and not self.drain_saved and not saved and not last:
            s.say(task_line(s.job.task, f"Ray reports a node of this run being preempted: checkpoint at update "
                                        f"{step}; training goes on until the node goes"))
            _save(s)
            saved = self.drain_saved = True
        self.drain_saved = self.drain_saved or (signals.node_draining and saved)
        signalled = signals.sigterm_rank
        if signalled is not None and not last:
            s.say(task_line(s.job.task, f"SIGTERM on rank {signalled}: saving a checkpoint at update {step}, "
                                        "then Ray Train restarts the workers from it"))
            if not saved:
                _save(s)
            if dist.is_initialized():  # every rank's report is queued before any rank fails: Ray registers it
                dist.barrier()
            raise Preempted(f"SIGTERM on rank {signalled}: checkpoint saved at update {step}; restarting")


def _save(s: Session) -> None:
    """Collective: every rank's shards, reported to Ray Train with the latest metrics."""
    save_and_report(s.engine, s.state, s.last_report, s.task.config)
