"""End-of-sweep outputs: the trials table (CSV, Markdown), the metric plotted against every swept knob, and the
best configuration written back as ready-to-run job YAML."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unispeech_platform.train.health import Objective, Thresholds, left_chance

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


PRETRAIN_END = "pretrain/"
"""Prefix of what every fine-tuning result of a trial carries of its pretraining's last report (tune/driver.py):
a pretraining report without the sweep's metric (e.g. no dev PER at ctc_weight 0) never reaches Tune itself."""
CARRIED = ("contrastive_loss", "code_perplexity", "contrastive_accuracy", "cos_pos_neg")
"""The pretraining's last-interval statistics each fine-tuning result carries (in Tune's results beside the
trial's own); the row judges the contrastive half by the first two (contrastive_end)."""

TrialObjective = Callable[[dict[str, Any]], tuple[Objective, Thresholds]]
"""A trial's sampled values -> its pretraining objective and detector thresholds (tune/sweep.py trial_objective)."""


def pretraining_end(metrics: dict[str, Any]) -> dict[str, float]:
    """What a trial's fine-tuning results carry of its pretraining's last report: the contrastive half's last
    interval (prefixed PRETRAIN_END) and the failure states it named (``health/<state>``, as named)."""
    out = {f"{PRETRAIN_END}{k}": float(metrics[k]) for k in CARRIED if _num(metrics.get(k)) is not None}
    out.update({k: 1.0 for k, v in metrics.items() if k.startswith(HEALTH_PREFIX) and _num(v)})
    return out


def contrastive_end(last: dict[str, Any], objective: Objective, limits: Thresholds) -> tuple[float | None, bool | None]:
    """(the pretraining's contrastive loss at its end, whether it had left chance there on a sound codebook);
    (None, None) for a trial without the term (ctc_weight 1) or whose pretraining reported none."""
    if objective.ctc_weight >= 1.0:
        return None, None
    loss, ppl = _num(last.get(f"{PRETRAIN_END}contrastive_loss")), _num(last.get(f"{PRETRAIN_END}code_perplexity"))
    if loss is None and last.get("stage") == "pretrain":  # a sweep without fine-tuning: its own last report
        loss, ppl = _num(last.get("contrastive_loss")), _num(last.get("code_perplexity"))
    if loss is None:
        return None, None
    return loss, left_chance(loss, ppl, objective, limits)


def trial_health(last: dict[str, Any], history) -> str:
    """The failure states any stage of a trial named (its pretraining's appear in the history, not in the last
    result, which is the fine-tuning's), comma-separated; "" when none."""
    names = {k for k, v in last.items() if k.startswith(HEALTH_PREFIX) and _num(v)}
    if history is not None:
        names |= {c for c in history.columns if c.startswith(HEALTH_PREFIX) and history[c].notna().any()}
    return ",".join(sorted(n[len(HEALTH_PREFIX):] for n in names))


def trials_table(results, keys: list[str], metric: str, mode: str, total_steps: int,
                 objective_of: TrialObjective | None = None) -> list[dict[str, Any]]:
    """One row per trial: its sampled values, last and best metric, steps reached, how it ended, where its
    pretraining's contrastive loss ended and whether it had left chance there (``objective_of`` gives each trial's
    K and thresholds; without it the columns stay empty), and the failure states its runs named (e.g.
    collinear_targets while the contrastive loss sat at chance, which a run may leave later)."""
    rows = []
    for r in results:
        last = r.metrics or {}
        history = r.metrics_dataframe
        values = [] if history is None or metric not in history else [v for v in history[metric] if _num(v) is not None]
        step = int(last.get("trial_step", 0) or 0)
        status = "ERROR" if r.error else ("EARLY_STOPPED" if step < total_steps else "COMPLETED")
        loss, left = contrastive_end(last, *objective_of(r.config or {})) if objective_of else (None, None)
        rows.append({
            "trial": last.get("trial_id") or Path(r.path).name,
            **{k: (r.config or {}).get(k) for k in keys},
            f"{metric}_last": _num(last.get(metric)),
            f"{metric}_best": (min if mode == "min" else max)(values) if values else None,
            "trial_step": step,
            "status": status,
            "contrastive_end": loss,
            "left_chance": left,
            "health": trial_health(last, history),
        })
    return sorted(rows, key=lambda row: row["trial"])


def sound(row: dict[str, Any]) -> bool:
    """A trial whose mechanism worked: its contrastive term had left chance at the end of pretraining (a state
    named on the way, e.g. collinear targets before the loss left chance, does not count against it); for a trial
    without the term, or whose end is unknown, no failure state named."""
    left = row.get("left_chance")
    return bool(left) if left is not None else not row.get("health")


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """Best by the last reported metric among sound trials (``sound``) that ran to the end, else among those
    that ran to the end, else among all that reported: a recipe is chosen by its mechanism, not by the metric
    alone (a low dev PER from a run whose contrastive term never worked is a supervised result)."""
    scored = [r for r in rows if r[f"{metric}_last"] is not None]
    completed = [r for r in scored if r["status"] == "COMPLETED"]
    pool = [r for r in completed if sound(r)] or completed or scored
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
