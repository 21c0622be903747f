"""End-of-sweep outputs: the trials table (CSV, Markdown), the metric plotted against every swept knob, and the
best configuration written back as ready-to-run job YAML."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

TRIALS_CSV, TRIALS_MD, KNOBS_PNG = "trials.csv", "trials.md", "metric_vs_knobs.png"
BEST_PRETRAIN, BEST_FINETUNE = "best_pretrain.yaml", "best_finetune.yaml"


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


HEALTH_PREFIX = "health/"
"""Reported by a training stage for every failure state it named (train/interval_log.py watch_health)."""


def trial_health(last: dict[str, Any], history) -> str:
    """The failure states any stage of a trial named (its pretraining's appear in the history, not in the last
    result, which is the fine-tuning's), comma-separated; "" when none."""
    names = {k for k, v in last.items() if k.startswith(HEALTH_PREFIX) and _num(v)}
    if history is not None:
        names |= {c for c in history.columns if c.startswith(HEALTH_PREFIX) and history[c].notna().any()}
    return ",".join(sorted(n[len(HEALTH_PREFIX):] for n in names))


def trials_table(results, keys: list[str], metric: str, mode: str, total_steps: int) -> list[dict[str, Any]]:
    """One row per trial: its sampled values, last and best metric, steps reached, how it ended, and the failure
    states its runs named (e.g. a contrastive loss that never left chance: collinear_targets)."""
    rows = []
    for r in results:
        last = r.metrics or {}
        history = r.metrics_dataframe
        values = [] if history is None or metric not in history else [v for v in history[metric] if _num(v) is not None]
        step = int(last.get("trial_step", 0) or 0)
        status = "ERROR" if r.error else ("EARLY_STOPPED" if step < total_steps else "COMPLETED")
        rows.append({
            "trial": last.get("trial_id") or Path(r.path).name,
            **{k: (r.config or {}).get(k) for k in keys},
            f"{metric}_last": _num(last.get(metric)),
            f"{metric}_best": (min if mode == "min" else max)(values) if values else None,
            "trial_step": step,
            "status": status,
            "health": trial_health(last, history),
        })
    return sorted(rows, key=lambda row: row["trial"])


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """Best by the last reported metric among trials that ran to the end in no failure state, else among those
    that ran to the end, else among all that reported: a recipe is chosen by its mechanism, not by the metric
    alone (a low dev PER from a run whose contrastive term never worked is a supervised result)."""
    scored = [r for r in rows if r[f"{metric}_last"] is not None]
    completed = [r for r in scored if r["status"] == "COMPLETED"]
    pool = [r for r in completed if not r.get("health")] or completed or scored
    if not pool:
        return None
    sign = 1 if mode == "min" else -1
    return min(pool, key=lambda r: sign * r[f"{metric}_last"])


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    with open(out / TRIALS_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    (out / TRIALS_MD).write_text("\n".join(lines) + "\n", encoding="utf-8")


def knob_plot(rows: list[dict[str, Any]], keys: list[str], metric: str, path: Path) -> Path:
    """One panel per swept key: last metric of each trial against its value (hollow = stopped early)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for status, style in (("COMPLETED", dict(color="tab:blue")), ("EARLY_STOPPED", dict(facecolors="none", edgecolors="tab:red"))):
            pts = [(r[key], r[f"{metric}_last"]) for r in rows if r["status"] == status and r[f"{metric}_last"] is not None]
            pts = [(x, y) for x, y in pts if _num(x) is not None]
            if pts:
                ax.scatter([float(x) for x, _ in pts], [y for _, y in pts], label=status.lower(), **style)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
