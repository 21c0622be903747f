"""Preemption: SIGTERM on a training worker saves a checkpoint at the next update boundary, then the worker group
restarts from it.

Why a flag and not an exit: Ray's worker process answers SIGTERM with an immediate exit, which loses every update
since the last checkpoint (a spot node or a Kubernetes pod gets SIGTERM, then SIGKILL after a grace period).
Here the first SIGTERM only sets a flag. At the end of each update every rank all-reduces the flag (MAX), so all
ranks stop at the same update, save one checkpoint together (`save_and_report` is collective) and raise
`Preempted`; Ray Train then restarts the worker group from that checkpoint (each preemption is one of
`train.max_failures`). A second SIGTERM, or one that arrives while no training runs, goes to the handler that was
installed before ours (Ray's: exit), so a process that must die still dies.

Python runs signal handlers on the main thread only, and Ray Train runs the training function in a thread of the
worker actor; `SigtermFlagCallback` installs the handler from the actor's main thread when Ray Train sets up each
worker (docs/training.md#fault-tolerance).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from ray.train.v2._internal.execution.callback import WorkerCallback

log = logging.getLogger("unispeech.train")


class Preempted(RuntimeError):
    """Raised on every rank after the preemption checkpoint is saved: Ray Train restarts the worker group."""


class SigtermFlag:
    """The process-wide SIGTERM flag (one per worker process)."""

    def __init__(self) -> None:
        self.requested = False
        self.armed = False  # True while a training loop checks the flag at update boundaries
        self.installed = False
        self._previous: Any = signal.SIG_DFL

    def install(self) -> None:
        """Install the handler (main thread only; idempotent)."""
        if self.installed:
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self.armed and not self.requested:
            self.requested = True
            log.warning("SIGTERM: a checkpoint is saved at the end of this update, then the worker group restarts")
            return
        previous = self._previous  # a second SIGTERM, or no training running: the usual exit
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def arm(self) -> None:
        """Start honouring SIGTERM with a checkpoint. In a process whose training runs on the main thread (tests,
        local mode) the handler is installed here; under Ray Train the callback has installed it already."""
        if not self.installed and threading.current_thread() is threading.main_thread():
            self.install()
        if not self.installed:
            log.warning("no SIGTERM handler in this worker (SigtermFlagCallback not used): SIGTERM exits at once")
        self.requested = False
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


SIGTERM_FLAG = SigtermFlag()
"""This process' flag: set by the handler, read by the train loop."""


class SigtermFlagCallback(WorkerCallback):
    """Installs the SIGTERM handler on each Ray Train worker's main thread (Ray Train calls this hook from the
    worker actor's main thread when it sets the worker up; the training function itself runs in another thread,
    where `signal.signal` is refused)."""

    def after_init_train_context(self) -> None:
        try:
            SIGTERM_FLAG.install()
        except ValueError as e:  # not the main thread after all (a Ray change): train on, SIGTERM exits at once
            log.warning("SIGTERM handler not installed: %s", e)


@dataclass(frozen=True)
class PreemptionSignals:
    sigterm_rank: int | None
    """The lowest rank whose process got SIGTERM (save, then restart), or None."""
    node_draining: bool
    """Ray Train's preemption watcher reports a node of this worker group being drained (a spot reclaim through
    Ray: `ray start --block` on SIGTERM, KubeRay, the autoscaler): save once and train on, as Ray recommends;
    when the node goes, Ray restarts from that checkpoint (counted in `max_preemption_failures`)."""


def ray_node_draining() -> bool:
    """This worker's copy of Ray Train's preemption notice, read without the barrier that
    `ray.train.get_preemption_info()` costs on every call (the all-reduce below already agrees across ranks)."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        return get_train_context().preemption_context.preemption_info is not None
    except Exception:  # noqa: BLE001 - no Ray Train context (tests, local mode) or a Ray without the watcher
        return False


def preemption_signals(device: torch.device, *, draining: bool | None = None) -> PreemptionSignals:
    """Collective, at an update boundary: the same signals on every rank (one all-reduce), so the ranks save and
    stop at the same update. ``draining``: this rank's drain notice (default: Ray Train's)."""
    mine = SIGTERM_FLAG.requested
    draining = ray_node_draining() if draining is None else draining
    if not (dist.is_available() and dist.is_initialized()):
        return PreemptionSignals(0 if mine else None, draining)
    world, rank = dist.get_world_size(), dist.get_rank()
    # MAX of (world - rank) picks the lowest signalled rank; 0 means nobody
    flags = torch.tensor([world - rank if mine else 0, int(draining)], dtype=torch.int64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    lowest, any_draining = (int(v) for v in flags.tolist())
    return PreemptionSignals(world - lowest if lowest else None, bool(any_draining))
