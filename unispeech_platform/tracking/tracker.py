"""The one small tracking interface the train loop sees. Rank 0 gets an MLflow tracker, other ranks a no-op."""

from __future__ import annotations

from typing import Protocol

from unispeech_platform.tracking.store import RunStore


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
    """Rank-0 tracker bound to an existing run. Steps at or below the highest step stored before this tracker
    opened the run are dropped, so a worker group restored from an older checkpoint does not log a step twice
    (no gaps either: those steps were logged by the previous attempt)."""

    def __init__(self, uri: str, run_id: str, watermark_key: str = "loss"):
        self.store = RunStore(uri)
        self.run_id = run_id
        self.watermark = max((step for step, _ in self.store.metric_history(run_id, watermark_key)), default=-1)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step <= self.watermark:  # replayed after a restore: already in the store
            return
        self.store.log_metrics(self.run_id, metrics, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.store.set_tags(self.run_id, tags)


def make_tracker(uri: str | None, run_id: str | None) -> Tracker:
    """MLflow when a store and a run are known, else the no-op."""
    return MLflowTracker(uri, run_id) if uri and run_id else NullTracker()
