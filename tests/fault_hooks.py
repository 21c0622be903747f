"""Faults the tests inject into a real training job, through the loop's before-update seam
(unispeech_platform/train/hooks.py).

Each function returns a Ray `worker_process_setup_hook` for `train_helpers.local_ray(setup_hook=...)`: Ray runs it
once in every worker process of the jobs that driver starts (the runtime_env of `ray.init` is the job's, and the
Train controller and worker actors inherit it: Ray merges their own `env_vars` with the job's, and the hook
travels as one of them). The hooks are closures, so Ray's cloudpickle ships them by value: the workers need not
import this module (tests/ is not on their path).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing unispeech_platform.train imports Ray: train_helpers must set RAY_AUTH_MODE first
    from unispeech_platform.train.hooks import BeforeUpdate


def fail_at_update(update: int, rank: int = 0) -> Callable[[], None]:
    """That rank fails at the start of that update in every attempt: a fault no restore can fix (the crash-loop
    test)."""

    def fail(on_rank: int, at: int) -> None:
        if (on_rank, at) == (rank, update):
            raise RuntimeError(f"injected fault at update {update} on rank {rank} (tests/fault_hooks.py)")

    return _installing(fail)


def wait_at_update(update: int, path: Path, timeout_s: float = 300) -> Callable[[], None]:
    """Every rank waits at the start of that update until ``path`` exists (at most ``timeout_s``), so a test can
    line a fault up with training whatever the machine's speed (the tracking-outage test restarts a server while
    the job waits)."""
    gate = str(path)

    def wait(_rank: int, at: int) -> None:
        import os
        import time

        if at != update:
            return
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise RuntimeError(f"wait_at_update: {gate} did not appear within {timeout_s:g} s")
            time.sleep(0.1)

    return _installing(wait)


def _installing(hook: BeforeUpdate) -> Callable[[], None]:
    def install_before_update_hook() -> None:
        from unispeech_platform.train.hooks import BEFORE_UPDATE

        BEFORE_UPDATE.append(hook)

    return install_before_update_hook
