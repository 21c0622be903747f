"""The one small tracking interface the train loop sees. Rank 0 gets an MLflow tracker, other ranks a no-op."""

from __future__ import annotations

from typing import Protocol


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
