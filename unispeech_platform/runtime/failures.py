"""One row (or input) that could not be used, with where it is and why: the one failure record of the import, the
validator and the transcriber, so their reports, summaries and tests read the same fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Failure:
    """``where``: the file and row (``file:row``, ``file#id``), the Parquet part or the clip it came from;
    ``reason``: a short code (data/audio.py, data/espeak.py, the importers) a report can count; ``detail``: one
    line for a person. ``id``, ``lang`` and ``split`` name the row where the caller knows them. ``rows``: how many
    rows it stands for (an unreadable Parquet row group is one failure for all of its rows: data/row_groups.py)."""

    where: str
    id: str = ""
    lang: str = ""
    split: str = ""
    reason: str
    detail: str = ""
    rows: int = 1

    def line(self, fields: tuple[str, ...]) -> str:
        """The named fields joined by tabs, each on one line (a detail may quote a multi-line message)."""
        return "\t".join(" ".join(str(getattr(self, name)).split()) for name in fields)

    def message(self) -> str:
        """``reason: detail`` (or the reason alone) for a printed line."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        """A failure as ``dataclasses.asdict`` wrote it; ``path`` is the older name of ``where``."""
        known = {("where" if key == "path" else key): value for key, value in data.items()}
        rows = int(known.pop("rows", 1) or 1)
        return cls(**{key: "" if value is None else str(value) for key, value in known.items()}, rows=rows)
