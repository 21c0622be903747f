"""Failure-state detectors: name a known bad state of the objective the moment the logged statistics show it.

A run whose loss looks fine can be learning nothing: the contrastive loss parked at ln(K+1) (collinear targets),
at 0 over a collapsed codebook, over random Gumbel codes, starved by the CTC gradient, or a CTC head that predicts
only blanks. Each state here is a predicate over one log interval's metrics (already averaged over ranks, so every
rank reaches the same verdict), reported once per run with one console line and an MLflow tag ``health/<state>``;
``train.stop_on`` lists the states that end the run at that update (every rank stops together).
docs/training.md#health says how each state shows in the MLflow charts and which knob moves it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import get_args

from unispeech_platform.config.sections import HealthState, TrainSection
from unispeech_platform.runtime.console import task_line

log = logging.getLogger("unispeech.train")

HEALTH_STATES: tuple[str, ...] = get_args(HealthState)
"""Every state a detector can name (train.stop_on accepts these), in the order they are checked."""


@dataclass(frozen=True)
class Thresholds:
    """Where each state starts (defaults: docs/training.md#health)."""

    collapse_per_group: float = 2.0
    """codebook_collapse: hard code perplexity per codebook group at or below this."""
    collinear_cosine: float = 0.99
    """collinear_targets: mean cosine between positive and negatives at or above this ..."""
    chance_share: float = 0.98
    """... while the contrastive loss is at least this share of ln(K+1) (chance)."""
    random_codes: float = 0.8
    """random_codes: share of hard Gumbel samples that differ from the argmax code at or above this."""
    starved_ratio: float = 10.0
    """starved_contrastive: CTC sends at least this many times the contrastive term's gradient norm into the
    transformer input."""
    blank_share: float = 0.95
    """ctc_blank_plateau: share of blank frames in the dev predictions (between dev evaluations: in the training
    micro-batches' greedy CTC output) at or above this ..."""
    plateau_after_steps: int = 300
    """... from this update on: every CTC run starts on the blank plateau, the state is not leaving it."""


@dataclass(frozen=True)
class Finding:
    state: str
    message: str
    """One line: what was measured, what it means, which knob moves it."""


@dataclass(frozen=True)
class Objective:
    """What the detectors need to know about the model's objective."""

    num_groups: int
    num_negatives: int
    ctc_weight: float

    @property
    def contrastive(self) -> bool:
        """Whether the objective has a contrastive term: at ctc_weight 1 (supervised transfer) the quantizer
        trains on nothing, so its codes say nothing about the run."""
        return self.ctc_weight < 1


FLAT_LOGITS_TEMPERATURE = 1.0
"""random_codes at or below this Gumbel temperature: the samples are noise because the quantizer's logits are
flat, not because the temperature is high (2026-12-05: a decay reaching 0.56 at update 650 left 96% of one seed's
samples off the argmax; docs/training.md#random-codes)."""

LEAVES_CHANCE = 0.9
"""The contrastive term has left chance once its loss is below this share of ln(K+1) on a codebook that has not
collapsed: the experiments' health rows and a sweep's choice of trial read it alike (docs/training.md#health)."""


def left_chance(contrastive_loss: float, code_perplexity: float | None, objective: Objective,
                limits: Thresholds = Thresholds()) -> bool:
    """Whether one log interval's contrastive loss has left chance (below LEAVES_CHANCE·ln(K+1)) on a sound
    codebook (a collapsed one drives the loss to ~0 without learning)."""
    collapsed = code_perplexity is not None and code_perplexity / objective.num_groups <= limits.collapse_per_group
    return contrastive_loss < LEAVES_CHANCE * math.log(objective.num_negatives + 1) and not collapsed


def diagnose(metrics: dict[str, float], objective: Objective, limits: Thresholds = Thresholds()) -> list[Finding]:
    """Every state the metrics of one log interval (or one dev evaluation) are in, in HEALTH_STATES order."""
    found = []
    for state, check in _CHECKS.items():
        message = check(metrics, objective, limits)
        if message:
            found.append(Finding(state, message))
    return found


def _collapse(m: dict[str, float], o: Objective, t: Thresholds) -> str | None:
    ppl = m.get("code_perplexity")
    if ppl is None or ppl / o.num_groups > t.collapse_per_group or not o.contrastive:
        return None
    return (f"code perplexity {ppl / o.num_groups:.2f} per group (≤ {t.collapse_per_group:g}): every target is one "
            "of a few codes and the contrastive loss can fall to 0 without learning; raise "
            "model.diversity_loss_weight, lower the learning rate or the Gumbel temperature decay")


def _collinear(m: dict[str, float], o: Objective, t: Thresholds) -> str | None:
    cos, loss = m.get("cos_pos_neg"), m.get("contrastive_loss")
    chance = math.log(o.num_negatives + 1)
    if cos is None or loss is None or cos < t.collinear_cosine or loss < t.chance_share * chance or not o.contrastive:
        return None
    return (f"targets collinear: cos(positive, negatives) {cos:.3f}, contrastive loss {loss:.3f} ≈ ln(K+1) = "
            f"{chance:.3f}: every candidate gets the same logit and the contrastive gradient is ~0; raise "
            "model.mask_time_prob, lower model.ctc_weight, or lower the learning rate")


def _random(m: dict[str, float], o: Objective, t: Thresholds) -> str | None:
    share = m.get("code_randomness")
    if share is None or share < t.random_codes or not o.contrastive:
        return None
    tau = m.get("temperature")
    at = f" at Gumbel temperature {tau:.2f}" if tau is not None else ""
    if tau is not None and tau <= FLAT_LOGITS_TEMPERATURE:
        knob = ("the quantizer's logits are flat, so a colder or faster-decaying temperature does not help "
                "(docs/training.md#random-codes); on the CPU presets a higher model.diversity_loss_weight (0.3 → "
                "0.6) or more labeled rows per update (data.labeled_share) moved it")
    else:
        knob = "lower model.max_gumbel_temperature or decay it faster (model.gumbel_temperature_decay)"
    return (f"random codes: {100 * share:.0f}% of hard Gumbel samples differ from the argmax code{at}: the targets "
            f"are noise (soft prob_perplexity still looks healthy); {knob}")


def _starved(m: dict[str, float], o: Objective, t: Thresholds) -> str | None:
    ctc, con = m.get("grad_share/ctc"), m.get("grad_share/contrastive")
    if ctc is None or con is None or not 0 < o.ctc_weight < 1:
        return None
    if con > 0 and ctc / con < t.starved_ratio:
        return None
    ratio = "∞" if con <= 0 else f"{ctc / con:.1f}"
    return (f"contrastive starved: CTC sends {ratio}× the contrastive term's gradient into the transformer input "
            f"(≥ {t.starved_ratio:g}×): the run is supervised CTC in effect; lower model.ctc_weight or raise "
            "model.mask_time_prob (more masked frames)")


def _blank(m: dict[str, float], o: Objective, t: Thresholds) -> str | None:
    dev = m.get("dev_blank_share")  # a dev evaluation's, else the training micro-batches' of this interval
    share, where = (dev, "dev") if dev is not None else (m.get("ctc_blank_share"), "training")
    if share is None or share < t.blank_share or o.ctc_weight <= 0:
        return None
    return (f"CTC blank plateau: {100 * share:.1f}% of {where} frames predicted blank (≥ {100 * t.blank_share:g}%): "
            "the CTC head emits nothing yet; more updates, more labeled rows per update (data.labeled_share), or, "
            "in pretraining, less masking and replacement (model.mask_time_prob, model.replace_prob)")


_CHECKS: dict[str, Callable[[dict[str, float], Objective, Thresholds], str | None]] = {
    "codebook_collapse": _collapse,
    "collinear_targets": _collinear,
    "random_codes": _random,
    "starved_contrastive": _starved,
    "ctc_blank_plateau": _blank,
}


@dataclass
class HealthMonitor:
    """Reports each state once per run (named the first time it shows) and says when ``stop_on`` ends the run.
    ``seen`` is kept in the checkpointed train state so that a restore does not report a state again."""

    objective: Objective
    limits: Thresholds = field(default_factory=Thresholds)
    stop_on: tuple[str, ...] = ()
    after_steps: int = 0
    """No verdict before this update (the statistics of the first updates are noise: every run starts with
    collinear targets, hot Gumbel codes and a CTC gradient far above the contrastive one), except on a collapsed
    codebook, which no run starts with: it is named at the first interval it shows (a collapse at update 75 that
    the diversity term undoes by 200 is still the state the run was in)."""
    seen: set[str] = field(default_factory=set)

    def check(self, metrics: dict[str, float], step: int) -> tuple[list[Finding], str | None]:
        """(the states first seen now, the state that stops the run or None). Every state present is checked
        against stop_on, not only new ones: a restored run in a stop state stops again."""
        present = [f for f in diagnose(metrics, self.objective, self.limits) if self._judged(f.state, step)]
        new = [f for f in present if f.state not in self.seen]
        self.seen.update(f.state for f in new)
        stop = next((f.state for f in present if f.state in self.stop_on), None)
        return new, stop

    def _judged(self, state: str, step: int) -> bool:
        """Whether a state present at this update counts (see after_steps and Thresholds.plateau_after_steps)."""
        if state == "codebook_collapse":
            return True
        if state == "ctc_blank_plateau":
            return step >= max(self.after_steps, self.limits.plateau_after_steps)
        return step >= self.after_steps


def health_line(step: int, findings: Iterable[Finding]) -> list[str]:
    """The console lines of newly seen states."""
    return [f"HEALTH {f.state} at update {step}: {f.message}" for f in findings]


def health_monitor(train: TrainSection, config, *, pretraining: bool, seen: Iterable[str] = ()) -> HealthMonitor:
    """The run's monitor, from its train section and model config (UniSpeechConfig); ``seen``: the states a
    restored checkpoint had already reported. A fine-tuning task's objective is CTC only (ctc_weight 1)."""
    objective = Objective(num_groups=config.num_codevector_groups, num_negatives=config.num_negatives,
                          ctc_weight=config.ctc_weight if pretraining else 1.0)
    limits = Thresholds(collapse_per_group=train.collapse_perplexity,
                        plateau_after_steps=train.blank_plateau_after_steps)
    return HealthMonitor(objective, limits,
                         stop_on=tuple(train.stop_on), after_steps=train.health_after_steps, seen=set(seen))


TAG_PREFIX = "health/"
STOPPED_ON_TAG = TAG_PREFIX + "stopped_on"


def state_tag(state: str, step: int, message: str) -> dict[str, str]:
    """The MLflow tag naming a state: ``health/<state>`` = ``update N: <message>`` (read back by tagged_states)."""
    return {f"{TAG_PREFIX}{state}": f"update {step}: {message}"}


def tagged_states(tags: dict[str, str]) -> dict[str, int]:
    """A run's tags -> each failure state named in them -> the update it was named at (state_tag's format)."""
    out: dict[str, int] = {}
    for key, value in tags.items():
        if key.startswith(TAG_PREFIX) and key != STOPPED_ON_TAG:
            head = value.split(":", 1)[0].split()
            out[key.removeprefix(TAG_PREFIX)] = int(head[-1]) if head and head[-1].isdigit() else -1
    return out


def report_health(monitor: HealthMonitor, metrics: dict[str, float], step: int, *, tracker, say: Callable[[str], None],
                  task: str) -> str | None:
    """Check one interval's (or evaluation's) metrics: each newly seen state is one console line (and a log
    warning) and the MLflow tag ``health/<state>``; returns the state that stops the run (train.stop_on), also
    tagged ``health/stopped_on``, or None. Every rank calls it with the same metrics and reaches the same verdict."""
    new, stop = monitor.check(metrics, step)
    for finding, line in zip(new, health_line(step, new), strict=True):
        tracker.set_tags(state_tag(finding.state, step, finding.message))
        log.warning(line)
        say(task_line(task, line))
    if stop is not None:
        tracker.set_tags({STOPPED_ON_TAG: f"{stop} at update {step}"})
        say(task_line(task, f"stopping at update {step}: {stop} is in train.stop_on (the model is exported as it "
                              "is now)"))
    return stop
