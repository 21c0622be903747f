"""What a run records about the corpus it read: MLflow's dataset input (name, digest, source, schema, profile),
described here as plain values so the tracking layer only sends them (docs/training.md#mlflow).

Cheap: one listing and the Parquet footers (row counts) of the chosen parts, plus ``summary.json`` for the
hours; no audio is read. The digest covers what the run reads: the chosen parts' names below the corpus root,
their sizes and row counts, and ``summary.json`` (no modification times, so a copied corpus keeps its digest).
The source is the corpus path with any login or signed query redacted (config/redact.py): credentials never
reach MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from unispeech_platform.config.data import DataConfig
from unispeech_platform.config.redact import redact_uri

from .schema import PARTITION_COLUMNS, SCHEMA, scan_corpus, select_parts
from .storage import absolute, locate
from .summary import read_summary

DIGEST_CHARS = 16
"""MLflow stores a dataset digest in at most 36 characters."""


@dataclass(frozen=True)
class CorpusDataset:
    name: str
    digest: str
    source_type: str
    """"local", or the URI scheme (s3, gs, ...)."""
    source: str
    """JSON ``{"uri": <the corpus path, redacted>}``."""
    columns: list[tuple[str, str]] = field(default_factory=list)
    """(column, Arrow type) of what a part holds, the partition columns last."""
    profile: dict[str, Any] = field(default_factory=dict)
    """splits, languages, rows, hours (None when no summary.json says) and the same per ``<lang>/<split>``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hours(summary: dict[str, Any] | None, lang: str, split: str) -> float | None:
    try:
        return float(summary["languages"][lang][split]["hours"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None


def describe_corpus(data: DataConfig, splits: list[str]) -> CorpusDataset:
    """The dataset input of the ``splits`` (and data.langs) of the corpus at data.path (CorpusError when it
    cannot be read: the caller's preflight has read it already)."""
    root = absolute(data.path)
    parts = select_parts(scan_corpus(root), data.langs, splits)
    loc = locate(root)
    sizes = {info.path: info.size for info in loc.walk()}
    summary_loc = loc.join("summary.json")
    summary_text = summary_loc.read_text() if summary_loc.is_file() else ""
    summary = read_summary(root) if summary_text else None
    h = hashlib.sha256(summary_text.encode())
    partitions: dict[str, dict[str, Any]] = {}
    for part in sorted(parts, key=lambda p: str(p.path)):
        rel = "/".join(loc.relative(str(part.path)))
        h.update(json.dumps([rel, sizes.get(str(part.path)), part.num_rows]).encode())
        entry = partitions.setdefault(f"{part.lang}/{part.split}", {"rows": 0, "hours": _hours(summary, part.lang,
                                                                                                part.split)})
        entry["rows"] += part.num_rows
    hours = [p["hours"] for p in partitions.values()]
    profile = {
        "splits": sorted({p.split for p in parts}), "languages": sorted({p.lang for p in parts}),
        "rows": sum(p["rows"] for p in partitions.values()),
        "hours": round(sum(hours), 6) if hours and None not in hours else None,
        "partitions": partitions,
    }
    shown = redact_uri(root)
    scheme = shown.split("://", 1)[0] if "://" in shown else "local"
    columns = [(f.name, str(f.type)) for f in SCHEMA] + [(c, "string") for c in PARTITION_COLUMNS]
    name = os.path.basename(shown.split("?", 1)[0].rstrip("/")) or shown
    return CorpusDataset(name=name, digest=h.hexdigest()[:DIGEST_CHARS], source_type=scheme,
                         source=json.dumps({"uri": shown}), columns=columns, profile=profile)
