"""Did each seed's contrastive half learn? One row per arm and seed, read back from its pretraining run's MLflow
history: the contrastive loss at the end against chance ln(K+1), the first update below 0.9·ln(K+1), contrastive
accuracy, hard code perplexity over time and the failure states the detectors named (docs/training.md#health).

Read from MLflow rather than carried out of the workers: the history is already there at every log interval, and
a table rebuilt later from a parent run id (``tools/pretrain_health.py``) shows the same rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from unispeech_core import UniSpeechConfig
from unispeech_platform.config.sections import TrainSection
from unispeech_platform.train.health import Objective, Thresholds, left_chance, tagged_states

PERPLEXITY_AT = (0.25, 0.5, 0.75, 1.0)
"""Points of the run (share of its updates) at which the code perplexity is shown."""


@dataclass
class PretrainHealth:
    """One pretraining run's contrastive half, as its logged history shows it."""

    chance: float
    """ln(K+1) for the run's num_negatives K."""
    last_step: int
    contrastive_end: float | None = None
    """Contrastive loss of the last log interval; None for a run without the term (ctc_weight 1)."""
    first_below: int | None = None
    """The logged update from which the loss stays below 0.9·ln(K+1) (train/health.py LEAVES_CHANCE) to the end,
    on a codebook that is not collapsed (a collapsed one drives the loss to ~0 without learning, and a run that
    recovers from it climbs back to chance); None if it never left chance for good."""
    accuracy_end: float | None = None
    cos_pos_neg_end: float | None = None
    code_perplexity: dict[int, float] = field(default_factory=dict)
    """update -> hard code perplexity (summed over groups, as logged), at PERPLEXITY_AT of the run."""
    lowest_perplexity: tuple[int, float] | None = None
    """(update, value) of the lowest logged code perplexity: a near-collapse the detector's threshold does not
    reach shows here (runs before 2026-12-05 evening judged a collapse only from train.health_after_steps)."""
    states: dict[str, int] = field(default_factory=dict)
    """failure state -> the update the detector named it (MLflow tags health/<state>)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PretrainHealth:
        lowest = d.get("lowest_perplexity")
        return cls(**{**d, "code_perplexity": {int(k): v for k, v in d.get("code_perplexity", {}).items()},
                      "lowest_perplexity": (int(lowest[0]), float(lowest[1])) if lowest else None})


History = Callable[[str], list[tuple[int, float]]]
"""metric key -> [(update, value)] of one run."""


DEFAULT_GROUPS: int = UniSpeechConfig.num_codevector_groups
DEFAULT_COLLAPSE: float = TrainSection.model_fields["collapse_perplexity"].default


def summarize(history: History, tags: dict[str, str], num_negatives: int, *, contrastive: bool = True,
              groups: int = DEFAULT_GROUPS, collapse_perplexity: float = DEFAULT_COLLAPSE) -> PretrainHealth:
    """The row of one run from its metric history and tags (pure: the tests give it hand-made histories);
    ``contrastive``: the run has the term (ctc_weight < 1); ``groups`` and ``collapse_perplexity`` (per group)
    say when a logged code perplexity is a collapsed codebook (train/health.py's codebook_collapse)."""
    chance = math.log(num_negatives + 1)
    loss = sorted(history("contrastive_loss"))
    steps = [s for s, _ in sorted(history("loss"))] or [s for s, _ in loss]
    health = PretrainHealth(chance=chance, last_step=steps[-1] if steps else 0, states=tagged_states(tags))
    if not contrastive or not loss:
        return health
    ppl = sorted(history("code_perplexity"))
    health.contrastive_end = loss[-1][1]
    health.first_below = _left_for_good(loss, dict(ppl), Objective(groups, num_negatives, ctc_weight=0.0),
                                        Thresholds(collapse_per_group=collapse_perplexity))
    health.accuracy_end = _last(history("contrastive_accuracy"))
    health.cos_pos_neg_end = _last(history("cos_pos_neg"))
    if ppl:
        health.lowest_perplexity = min(ppl, key=lambda p: (p[1], p[0]))
        for share in PERPLEXITY_AT:
            target = share * health.last_step
            step, value = min(ppl, key=lambda p: (abs(p[0] - target), p[0]))
            health.code_perplexity[step] = value
    return health


def _left_for_good(loss: Sequence[tuple[int, float]], perplexity: dict[int, float], objective: Objective,
                   limits: Thresholds) -> int | None:
    """The first update of the final stretch of ``loss`` (sorted) that has left chance (train/health.py)."""
    first = None
    for step, value in loss:
        if left_chance(value, perplexity.get(step), objective, limits):
            first = step if first is None else first
        else:
            first = None
    return first


def _last(points: Sequence[tuple[int, float]]) -> float | None:
    return sorted(points)[-1][1] if points else None


def read_health(store, run_id: str, num_negatives: int, *, contrastive: bool, groups: int,
                collapse_perplexity: float) -> PretrainHealth:
    """The row of a pretraining run in an MLflow store (tracking.RunStore)."""
    run = store.run(run_id)
    return summarize(lambda key: store.metric_history(run_id, key), dict(run.data.tags), num_negatives,
                     contrastive=contrastive, groups=groups, collapse_perplexity=collapse_perplexity)


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def health_table(rows: Sequence[tuple[str, int, PretrainHealth]]) -> str:
    """Markdown: one row per (arm, seed, health), in the given order."""
    head = ("| arm | seed | contrastive at end (chance ln(K+1)) | below 0.9·ln(K+1) from update | accuracy at end "
            "| cos(pos,neg) at end | code perplexity, all groups (update: value) | lowest (update) "
            "| failure states named (update) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for arm, seed, h in rows:
        if h.contrastive_end is None:
            contrastive, first = "— (no contrastive term)", "—"
        else:
            contrastive = f"{h.contrastive_end:.3f} ({h.chance:.3f})"
            first = str(h.first_below) if h.first_below is not None else f"never in {h.last_step}"
        ppl = ", ".join(f"{s}: {v:.1f}" for s, v in sorted(h.code_perplexity.items())) or "—"
        states = ", ".join(f"{k} ({v})" for k, v in sorted(h.states.items(), key=lambda kv: kv[1])) or "none"
        lowest = f"{h.lowest_perplexity[1]:.1f} ({h.lowest_perplexity[0]})" if h.lowest_perplexity else "—"
        lines.append(f"| {arm} | {seed} | {contrastive} | {first} | {_num(h.accuracy_end, '.2f')} | "
                     f"{_num(h.cos_pos_neg_end, '.2f')} | {ppl} | {lowest} | {states} |")
    return "\n".join(lines)
