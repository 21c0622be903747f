"""The tracking spool: tracking records that could not reach MLflow, kept in an append-only JSON-lines file until
they are replayed (docs/training.md#tracking-outages).

    <run dir>/mlflow_spool.jsonl            one record per line: {"seq", "time", "run_id", "kind", ...}
    <run dir>/mlflow_spool.jsonl.replayed   the seq of the last record replayed into MLflow (rewritten atomically)

Records are replayed in seq order; the marker says how far, so a later start replays only the rest. A record
replayed twice (a crash between the store accepting it and the marker being written) does no harm: params, tags
and artifacts overwrite themselves, and metrics at a step the store already holds are dropped
(tracking.best_effort). Hand-written: JSON lines and one integer are all it takes, and no library we use offers a
durable local queue without a server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from typing import Any

from unispeech_platform.runtime.layout import RunLayout

SPOOL_NAME = "mlflow_spool.jsonl"
REPLAYED_SUFFIX = ".replayed"
log = logging.getLogger("unispeech.tracking")


def spool_path(layout: RunLayout) -> str:
    """The run's spool: in its run directory, or (storage_path is a URI such as s3://) on this machine's disk under
    $XDG_CACHE_HOME/unispeech/tracking-spool (default ~/.cache), where only processes on this machine replay it."""
    if layout.is_local:
        return os.path.join(layout.run_dir, SPOOL_NAME)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", layout.name)[:64]
    digest = hashlib.sha256(layout.run_dir.encode()).hexdigest()[:12]
    return os.path.join(cache, "unispeech", "tracking-spool", f"{name}-{digest}.jsonl")


class Spool:
    """Pending tracking records, in order; on disk when ``path`` is given, else in memory only (lost with the
    process). Writing never raises: if the file cannot be written, records stay in memory and ``error`` says why."""

    def __init__(self, path: str | None):
        self.path = path
        self.pending: list[dict[str, Any]] = []
        self.last_seq = 0
        self.replayed_seq = 0
        self.error: str | None = None
        self._max_step: dict[tuple[str, str], int] = {}
        self._needs_newline = False
        if path and os.path.isfile(path):
            self._load(path)

    @property
    def where(self) -> str:
        return self.path or "memory (no spool file)"

    def _load(self, path: str) -> None:
        try:
            with open(path + REPLAYED_SUFFIX) as f:
                self.replayed_seq = int(f.read().strip() or 0)
        except (OSError, ValueError):
            self.replayed_seq = 0
        with open(path, "rb") as f:
            data = f.read()
        self._needs_newline = bool(data) and not data.endswith(b"\n")
        bad = 0
        for line in data.splitlines():
            try:
                record = json.loads(line)
                seq = int(record["seq"])
            except (ValueError, KeyError, TypeError):
                bad += 1  # a line torn by a crash mid-write
                continue
            self.last_seq = max(self.last_seq, seq)
            self._note(record)
            if seq > self.replayed_seq:
                self.pending.append(record)
        self.pending.sort(key=lambda r: r["seq"])
        if bad:
            log.warning("%s: skipped %d unreadable line(s)", path, bad)

    def _note(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "metrics":
            for key in record.get("metrics", {}):
                k = (record.get("run_id", ""), key)
                self._max_step[k] = max(self._max_step.get(k, -1), int(record["step"]))

    def max_step(self, run_id: str, key: str) -> int:
        """The highest step of ``key`` any record of this spool holds for the run (replayed or not), else -1."""
        return self._max_step.get((run_id, key), -1)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add a record (numbered and timestamped) at the end; durable on return unless ``error`` is set."""
        self.last_seq += 1
        record = {"seq": self.last_seq, "time": round(time.time(), 3), **record}
        self.pending.append(record)
        self._note(record)
        if self.path and self.error is None:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                with open(self.path, "a") as f:
                    f.write(("\n" if self._needs_newline else "") + json.dumps(record) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                self._needs_newline = False
            except OSError as e:
                self.error = f"cannot write {self.path}: {e}"
        return record

    def mark_replayed(self, seq: int) -> None:
        """Every record up to ``seq`` is in MLflow now."""
        self.replayed_seq = max(self.replayed_seq, seq)
        self.pending = [r for r in self.pending if r["seq"] > self.replayed_seq]
        if self.path and self.error is None and os.path.isfile(self.path):
            tmp = f"{self.path}{REPLAYED_SUFFIX}.tmp"
            try:
                with open(tmp, "w") as f:
                    f.write(str(self.replayed_seq))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path + REPLAYED_SUFFIX)
            except OSError as e:  # the records replay again at the next start, harmlessly
                log.warning("cannot record the spool's replay position in %s: %s", tmp, e)


def read_records(path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every record, the records not replayed yet) of a spool file: for people and tests."""
    spool = Spool(path)
    everything = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    everything.append(json.loads(line))
                except ValueError:
                    continue
    return everything, spool.pending
