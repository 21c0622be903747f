"""Running one job of the check: its own process group, its output in a log file, a time limit that is the
smaller of its cap and what is left of the shared budget, so the table is printed before the outer timeout."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from .plan import REPO

# Seconds each subprocess may take at most (pretrain includes a first-use FusedAdam JIT build, ~1 min, when nvcc
# is found); all of them also share the --budget-s deadline.
STEP_CAPS = {"corpus": 90, "pretrain": 270, "finetune": 120, "evaluate": 90}
MIN_STEP_S = 30


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_logged(name: str, cmd: list[str], logs: Path, budget: Budget) -> tuple[int | None, str, str]:
    """Run one job in its own process group with output to <logs>/<name>.log. Returns (exit code or None on
    timeout, log path, stdout+stderr text). The group is killed on timeout, Ray's local processes included."""
    limit = min(STEP_CAPS[name], budget.left() - 15)
    log = logs / f"{name}.log"
    if limit < MIN_STEP_S:
        return None, str(log), f"not started: {budget.left():.0f} s of budget left"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray, never a cluster this machine may know
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = None
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
    text = Path(log).read_text(errors="replace")
    if code is None:
        text += f"\n(timed out after {limit:.0f} s)"
    return code, str(log), text


def status(code: int | None, seconds: float) -> str:
    return f"timeout after {seconds:.0f} s" if code is None else f"exit {code} in {seconds:.0f} s"
