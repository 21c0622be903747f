"""Per language/split statistics, ``summary.json`` and the tables the corpus jobs print."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .schema import SUMMARY_FILE


@dataclass
class PartitionStats:
    """Counts for one ``(lang, split)`` partition."""

    utterances: int = 0
    seconds: float = 0.0
    labeled: int = 0
    phones: int = 0
    speakers: set[str] = field(default_factory=set)
    inventory: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "utterances": self.utterances,
            "hours": round(self.seconds / 3600, 6),
            "labeled": self.labeled,
            "labeled_fraction": round(self.labeled / self.utterances, 4) if self.utterances else 0.0,
            "phones": self.phones,
            "speakers": sorted(self.speakers),
        }


class CorpusStats:
    """Accumulates :class:`PartitionStats` row by row (the writer and the validator both feed it)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, str], PartitionStats] = {}

    def add_utterance(
        self, lang: str, split: str, *, seconds: float, phones: str | None, speaker: str | None
    ) -> None:
        p = self.partitions.setdefault((lang, split), PartitionStats())
        p.utterances += 1
        p.seconds += seconds
        if speaker is not None:
            p.speakers.add(speaker)
        if phones is not None:
            tokens = phones.split()
            p.labeled += 1
            p.phones += len(tokens)
            p.inventory.update(tokens)

    def add(self, lang: str, split: str, row: dict[str, Any]) -> None:
        """Add a schema row (uses its declared num_samples / sample_rate, no decoding)."""
        rate = row.get("sample_rate") or 0
        seconds = (row.get("num_samples") or 0) / rate if rate else 0.0
        self.add_utterance(lang, split, seconds=seconds, phones=row.get("phones"), speaker=row.get("speaker"))

    def phone_inventory(self) -> Counter:
        total: Counter = Counter()
        for p in self.partitions.values():
            total.update(p.inventory)
        return total

    def to_dict(self) -> dict[str, Any]:
        langs: dict[str, dict[str, Any]] = {}
        for (lang, split), p in sorted(self.partitions.items()):
            langs.setdefault(lang, {})[split] = p.to_dict()
        return {
            "languages": langs,
            "total": {
                "utterances": sum(p.utterances for p in self.partitions.values()),
                "hours": round(sum(p.seconds for p in self.partitions.values()) / 3600, 6),
                "phone_inventory": len(self.phone_inventory()),
            },
        }

    def table(self, title: str) -> Table:
        t = Table(title=title)
        for col in ("lang", "split", "utterances", "hours", "speakers", "labeled", "phones", "inventory"):
            t.add_column(col, justify="left" if col in ("lang", "split") else "right")
        for (lang, split), p in sorted(self.partitions.items()):
            t.add_row(
                lang,
                split,
                str(p.utterances),
                f"{p.seconds / 3600:.3f}",
                str(len(p.speakers)),
                f"{p.labeled / p.utterances:.0%}" if p.utterances else "-",
                str(p.phones),
                str(len(p.inventory)),
            )
        tot = self.to_dict()["total"]
        t.add_row(
            "all", "", str(tot["utterances"]), f"{tot['hours']:.3f}", "", "", "", str(tot["phone_inventory"])
        )
        return t


def print_table(table: Table) -> None:
    Console(width=120).print(table)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a hidden temp file and rename, so readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_summary(root: Path, stats: CorpusStats, **extra: Any) -> dict[str, Any]:
    """Write ``summary.json`` atomically; the corpus jobs write it last, so its presence marks completion."""
    summary = {**extra, **stats.to_dict()}
    atomic_write_text(Path(root) / SUMMARY_FILE, json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def read_summary(root: str | Path) -> dict[str, Any] | None:
    """The corpus' summary.json (a local path or a URI), or None when there is none."""
    from .storage import locate

    loc = locate(root).join(SUMMARY_FILE)
    if not loc.is_file():
        return None
    return json.loads(loc.read_text())
