"""Crash loops: a failure that comes back at the same place after a restore stops the job instead of burning
`train.max_failures` restarts.

Ray Train restarts the worker group from the last checkpoint after any worker error; a deterministic failure (an
out-of-memory batch, a corrupt data part, an unreadable checkpoint) then fails again at the same update, every
time. The history of one `trainer.fit()` survives the restarts as small event files in the run directory
(`<run_dir>/restarts/<fit id>/`, through pyarrow's filesystem, so NFS and s3:// work alike):

    001-start.json           rank 0, when attempt 1 starts: the checkpoint it restores
    001-failed-rank1.json    a rank whose attempt 1 raised: where (e.g. "update 7"), the error, the likely cause
    stopped.json             the crash-loop verdict: the one line the driver reports

Each event is its own file (no appends, no races between ranks). When the same place has failed in two attempts,
the next attempt returns at once on every rank and the driver turns `stopped.json` into one error line
(`TrainingStoppedError`, exit 1). Preemptions are not failures and are not recorded.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from unispeech_platform.runtime.errors import TrainingStoppedError
from unispeech_platform.train.faults import PEER_CAUSE, first_line, likely_cause

log = logging.getLogger("unispeech.train")
EVENTS_DIR = "restarts"
STOPPED = "stopped.json"
CAUSE_ORDER = ("out of memory", "unreadable data", "the same error", PEER_CAUSE)
"""When ranks report different errors for the same place, the most specific diagnosis wins; a peer's collective
error (a consequence) comes last."""


@dataclass
class Place:
    """Where an attempt is, in words, for its failure record (e.g. "update 7"); the loop moves it as it goes."""

    where: str = "setup"


@dataclass
class Attempt:
    index: int
    """1 for the first start of this fit, 2 after the first restart, ..."""
    checkpoint: str | None
    """The checkpoint this attempt restored (its directory name), or None on a fresh start."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """The failure events of its ranks: rank, where, error, cause."""


class RestartHistory:
    """The attempts of one fit of one run (a driver invocation), read and written by the workers and the driver."""

    def __init__(self, run_dir: str, fit_id: str):
        import pyarrow.fs

        self.fs, base = pyarrow.fs.FileSystem.from_uri(run_dir)
        self.dir = f"{base.rstrip('/')}/{EVENTS_DIR}/{fit_id}"

    # -- storage ------------------------------------------------------------------------------------------------
    def _write(self, name: str, payload: dict[str, Any]) -> None:
        self.fs.create_dir(self.dir, recursive=True)
        with self.fs.open_output_stream(f"{self.dir}/{name}") as f:
            f.write(json.dumps({**payload, "time": time.time()}, indent=1).encode())

    def _events(self) -> dict[str, dict[str, Any]]:
        import pyarrow.fs

        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.dir, allow_not_found=True))
        events = {}
        for info in infos:
            if info.type == pyarrow.fs.FileType.File and info.base_name.endswith(".json"):
                with self.fs.open_input_stream(info.path) as f:
                    events[info.base_name] = json.loads(f.read())
        return events

    # -- reading ------------------------------------------------------------------------------------------------
    def attempts(self) -> list[Attempt]:
        events = self._events()
        attempts: dict[int, Attempt] = {}
        for name, event in sorted(events.items()):
            if name.endswith("-start.json"):
                attempts[event["attempt"]] = Attempt(event["attempt"], event.get("checkpoint"))
        for name, event in sorted(events.items()):
            if "-failed-rank" in name and event["attempt"] in attempts:
                attempts[event["attempt"]].failures.append(event)
        return [attempts[i] for i in sorted(attempts)]

    def crash_loop(self) -> str | None:
        """The verdict when one place failed in two attempts (the later one restored and failed there again)."""
        where_attempts: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in self.attempts():
            for where in dict.fromkeys(f["where"] for f in attempt.failures):
                where_attempts[where].append(attempt)
        for where, failed in where_attempts.items():
            if len(failed) >= 2:
                last = failed[-1]
                records = [f for f in last.failures if f["where"] == where]
                cause = min(records, key=_specificity)["cause"]
                restored = last.checkpoint or "the start (no checkpoint)"
                return (f"{where} failed in {len(failed)} attempts (attempts {', '.join(str(a.index) for a in failed)}"
                        f"; the last restored {restored}): likely cause: {cause}. Fix it and rerun with --resume")
        return None

    def stopped(self) -> str | None:
        """The crash-loop line written by the workers that refused to start again, or None."""
        return self._events().get(STOPPED, {}).get("message")

    # -- writing ------------------------------------------------------------------------------------------------
    def begin(self, checkpoint: str | None) -> tuple[int, str | None]:
        """Rank 0, at the start of an attempt: record it; returns (its index, the crash-loop verdict or None).
        A verdict is recorded as `stopped.json`; the attempt must not train."""
        index = len(self.attempts()) + 1
        verdict = self.crash_loop()
        self._write(f"{index:03d}-start.json", {"attempt": index, "checkpoint": checkpoint})
        if verdict is not None:
            self._write(STOPPED, {"attempt": index, "message": verdict})
        return index, verdict

    def record_failure(self, attempt: int, rank: int, where: str, error: BaseException) -> None:
        """Any rank whose attempt raised. Never raises itself: the original error must reach Ray Train."""
        try:
            self._write(f"{attempt:03d}-failed-rank{rank}.json", {
                "attempt": attempt, "rank": rank, "where": where, "error": first_line(error),
                "cause": likely_cause(error),
            })
        except Exception as e:  # noqa: BLE001 - bookkeeping must not replace the real failure
            log.warning("could not record the failure of attempt %d in %s: %s", attempt, self.dir, e)


def new_fit_id() -> str:
    """A readable, unique name for one driver invocation's history (time and pid)."""
    import os

    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def fit_or_stop(trainer, history: RestartHistory):
    """Driver side: ``trainer.fit()``, with a crash loop turned into one ``TrainingStoppedError``: the workers
    refused to train again (``stopped.json``), or Ray Train's restarts ran out on a place that failed twice."""
    try:
        result = trainer.fit()
    except Exception as e:
        verdict = _read_safely(history.crash_loop)
        if verdict is not None:
            raise TrainingStoppedError(verdict) from e
        raise
    verdict = _read_safely(history.stopped)
    if verdict is not None:
        raise TrainingStoppedError(verdict)
    return result


def _read_safely(read) -> str | None:
    try:
        return read()
    except Exception as e:  # noqa: BLE001 - an unreadable history must not hide the job's own outcome
        log.warning("restart history unreadable: %s", e)
        return None


def _specificity(record: dict[str, Any]) -> tuple[int, int]:
    cause = record["cause"]
    rank_of_cause = next((i for i, prefix in enumerate(CAUSE_ORDER) if cause.startswith(prefix)), len(CAUSE_ORDER))
    return rank_of_cause, record["rank"]
