"""The check's output: one row per check and the table they print as (check | result | value | pass)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    check: str
    result: str
    value: str = ""
    ok: bool | None = True
    """True pass, False fail, None skipped (a dependency failed or no time was left)."""
    log: str | None = None
    """Log file of the subprocess behind the row, tailed on failure."""


def render(rows: list[Row]) -> str:
    header = ("check", "result", "value", "pass")
    cells = [(r.check, r.result, r.value, {True: "PASS", False: "FAIL", None: "SKIP"}[r.ok]) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]

    def line(c: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def tail(path: str, lines: int = 25) -> str:
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError as e:
        return f"(no log: {e})"
