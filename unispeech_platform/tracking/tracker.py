"""The one small tracking interface the train loop sees. Rank 0 gets an MLflow tracker, other ranks a no-op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.tracking.best_effort import RETRY_FIRST_S, BestEffortStore
from unispeech_platform.tracking.spool import Spool, spool_path


class Tracker(Protocol):
    run_id: str | None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...


class NullTracker:
    """Does nothing: used on ranks other than 0 and when tracking is disabled."""

    run_id: str | None = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass


class MLflowTracker:
    """Rank-0 tracker bound to an existing run; best effort (tracking.best_effort): it never raises because the
    server is away, it spools to ``spool`` (a file path; None = memory only) and replays.

    Constructing it replays what an earlier attempt left in the spool. Steps at or below the highest step already
    recorded for the run (in the store, or in the spool while the store is away) are dropped, so a worker group
    restored from an older checkpoint does not log a step twice (no gaps either: the previous attempt logged
    them)."""

    def __init__(self, uri: str, run_id: str, watermark_key: str = "loss", *, spool: str | None = None,
                 warn: Callable[[str], None] | None = None, retry_first_s: float = RETRY_FIRST_S):
        self.store = BestEffortStore(uri, Spool(spool), warn=warn, retry_first_s=retry_first_s)
        self.run_id = run_id
        self.store.flush(force=True)
        self.watermark = self.store.max_step(run_id, watermark_key)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step <= self.watermark:  # replayed after a restore: already recorded
            return
        self.store.log_metrics(self.run_id, metrics, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.store.set_tags(self.run_id, tags)

    def pending_line(self) -> str | None:
        """A warning naming what is still spooled, or None."""
        return self.store.pending_line()


def make_tracker(uri: str | None, run_id: str | None, *, layout: RunLayout | None = None, spool: str | None = None,
                 warn: Callable[[str], None] | None = None) -> Tracker:
    """MLflow when a store and a run are known, else the no-op. ``layout``: the job's run, whose outage records
    the tracker keeps with the driver's (``spool``, a file path, is the older spelling of the same)."""
    if not (uri and run_id):
        return NullTracker()
    return MLflowTracker(uri, run_id, spool=spool_path(layout) if layout is not None else spool, warn=warn)
