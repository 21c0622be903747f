"""The training loop's one seam for tests: callbacks that run on every rank at the start of every update.

Production registers none, so the loop pays one empty iteration per update. Tests register theirs in every Ray
worker process through Ray's `worker_process_setup_hook` (tests/fault_hooks.py): a fault at a chosen update and
rank that no restore can fix (the crash-loop test), or a wait that lines a fault up with training whatever the
machine's speed (the tracking-outage test). Nothing here reads the environment: what a test injects is code the
test itself installs.
"""

from __future__ import annotations

from collections.abc import Callable

BeforeUpdate = Callable[[int, int], None]
"""``hook(rank, update)``: called before the first batch of ``update`` (1-based); what it raises fails the update."""

BEFORE_UPDATE: list[BeforeUpdate] = []
"""This process' hooks, called in the order they were added."""


def run_before_update_hooks(rank: int, update: int) -> None:
    for hook in BEFORE_UPDATE:
        hook(rank, update)
