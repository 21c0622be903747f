"""The experiment's result table (the paper's layout): PER per target language and arm as mean ± sd over seeds,
the macro average and each seed's average beside it, and the relative PER reduction of the reference arm
(UniSpeech) vs every other arm with its hierarchical bootstrap confidence interval over seeds, test speakers and
utterances (experiments/statistics.py says how and why)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from unispeech_platform.evaluate.scoring import WEIGHTED, Score
from unispeech_platform.experiments.pretrain_health import PretrainHealth, health_table
from unispeech_platform.experiments.statistics import (
    AVERAGE,
    CONFIDENCE,
    Aggregate,
    UtteranceErrors,
    aggregate,
)
from unispeech_platform.tracking.uri import resolve_experiment


@dataclass
class ArmResult:
    """One arm trained and scored with one seed."""

    name: str
    scores: list[Score]
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage (pretrain, finetune, evaluate)."""
    run_id: str | None = None
    seed: int = 0
    label: str = ""
    """Name of this arm's runs for this seed (ExperimentSection.run_label); the arm's name when empty."""
    utterances: dict[str, dict[str, UtteranceErrors]] = field(default_factory=dict)
    """split -> lang -> per-utterance edits (what the seed statistics and the bootstrap need), splits sorted."""
    machine: str = ""
    """Where it ran (runtime.hardware.machine_line()); a --resume may join results of several machines."""
    health: dict[str, PretrainHealth] = field(default_factory=dict)
    """Pretraining stage ("pretrain", a two-stage arm's "continued") -> its contrastive half as MLflow recorded
    it (experiments/pretrain_health.py); empty without tracking."""

    def per(self) -> dict[str, float]:
        """lang -> PER on the first scored split; MACRO -> the average."""
        split = self.scores[0].split
        return {s.lang: s.per for s in self.scores if s.split == split and s.lang != WEIGHTED}


def evaluation_speakers(evaluation) -> dict[tuple[str, str], str]:
    """(lang, id) -> speaker of the utterances an evaluation job config scores (its corpus and splits): what the
    hierarchical bootstrap groups them by."""
    from unispeech_platform.data.speakers import corpus_speakers

    return corpus_speakers(evaluation.data.path, list(evaluation.evaluate.splits))


def aggregate_results(results: list[ArmResult], reference: str | None) -> dict[str, Aggregate]:
    """split -> every (arm, seed) result of that split pooled into mean ± sd and reductions with CIs (arms and
    seeds in run order; the first split, ``test``, is the headline)."""
    arms = list(dict.fromkeys(r.name for r in results))
    seeds = list(dict.fromkeys(r.seed for r in results))
    runs = {(r.name, r.seed): r.utterances for r in results}
    missing = [f"{a} seed {s}" for a in arms for s in seeds if (a, s) not in runs]
    if missing:
        raise ValueError(f"no result for {', '.join(missing)}: every arm needs every seed")
    splits = list(runs[(arms[0], seeds[0])])
    return {split: aggregate({k: v.get(split, {}) for k, v in runs.items()}, arms, seeds, reference) for split in splits}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _mean_sd(agg: Aggregate, arm: str, lang: str) -> str:
    sd = agg.sd(arm, lang)
    return _pct(agg.mean(arm, lang)) + ("" if math.isnan(sd) else f" ± {_pct(sd)}")


def _signed(v: float) -> str:
    return f"{100 * v:+.1f}%"


def _test_set(agg: Aggregate) -> str:
    """E.g. "54 test utterances of 9 speakers × 3 seeds"."""
    total = sum(agg.utterances.values())
    known = [n for n in agg.speakers.values() if n is not None]
    speakers = f" of {sum(known)} speakers" if len(known) == len(agg.speakers) else ""
    seeds = f" × {len(agg.seeds)} seeds" if len(agg.seeds) > 1 else " (1 seed)"
    return f"{total} test utterances{speakers}{seeds}"


def results_table(agg: Aggregate) -> str:
    """Markdown: PER % per arm (rows) and language plus the average (columns) as mean ± sd over seeds, each seed's
    average beside it; then the reference arm's relative reduction vs each other arm on the average with its
    hierarchical CI (naming what was resampled), and per language."""
    langs, several = agg.langs, len(agg.seeds) > 1
    head = ["arm", *langs, AVERAGE, *(["avg per seed " + " / ".join(str(s) for s in agg.seeds)] if several else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for arm in agg.arms:
        cells = [_mean_sd(agg, arm, x) for x in langs]
        seeds = [" / ".join(_pct(v) for v in agg.per_seed(arm))] if several else []
        lines.append("| " + " | ".join([arm, *cells, f"**{_mean_sd(agg, arm, AVERAGE)}**", *seeds]) + " |")
    text = "\n".join(lines) + "\n"
    if not agg.reductions:
        return text
    ci = f"{100 * CONFIDENCE:.0f}% CI"
    text += "\n" + "\n".join(
        f"- {r.reference} vs {r.baseline}: {_signed(r.value[AVERAGE])} relative PER reduction on the average "
        f"({ci} {_signed(r.low[AVERAGE])} … {_signed(r.high[AVERAGE])}, hierarchical bootstrap over "
        f"{_test_set(agg)}, resampling {agg.resampled()}; {r.verdict()})" for r in agg.reductions) + "\n"
    head = ["relative PER reduction", *langs, AVERAGE]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in agg.reductions:
        rows.append("| " + " | ".join([f"{r.reference} vs {r.baseline}", *(
            f"{_signed(r.value[x])} [{_signed(r.low[x])}, {_signed(r.high[x])}]" for x in [*langs, AVERAGE])]) + " |")
    return text + "\n" + "\n".join(rows) + "\n"


def results_tables(aggs: dict[str, Aggregate]) -> str:
    """results_table of the first split (the headline: ``test``), then one per further split (e.g. the shifted
    test condition), each under a line naming it."""
    (_, agg), *rest = aggs.items()
    text = results_table(agg)
    for split, other in rest:
        text += f"\nPER % on the `{split}` split (the same models):\n\n" + results_table(other)
    return text


def method_note(aggs: dict[str, Aggregate]) -> str:
    """How the numbers above were computed, in one paragraph under the tables."""
    agg = next(iter(aggs.values()))
    sizes = "; ".join(f"{split}: " + ", ".join(f"{lang} {n}" for lang, n in a.utterances.items())
                      for split, a in aggs.items())
    spread = (f"mean ± sample standard deviation over seeds {agg.seeds}" if len(agg.seeds) > 1
              else f"one seed ({agg.seeds[0]}): no standard deviation")
    return (f"PER: {spread}; the average is the macro average over languages. Test utterances per language "
            f"({sizes}). Reductions: (PER_baseline − PER_reference) / PER_baseline of the seed means; "
            f"{100 * CONFIDENCE:.0f}% CI: percentiles of {agg.resamples} hierarchical bootstrap resamples "
            f"({agg.resampled()}, each with replacement; the same draw for every arm; per resample PER = edits / "
            "reference phones pooled per language and drawn seed, averaged over the drawn seeds, then "
            "macro-averaged). A verdict (better/worse) is given only where the interval excludes 0.\n")


PIPELINE = ("pretrain", "continued", "finetune", "evaluate")
"""The stages of one arm and seed in the order they run (a two-stage arm's "continued" after "pretrain")."""


def timing_table(results: list[ArmResult]) -> str:
    """Seconds per stage, one row per arm and seed, columns in pipeline order; "—" where a run has no such stage."""
    seen = {k for r in results for k in r.seconds}
    stages = [s for s in PIPELINE if s in seen] + sorted(seen - set(PIPELINE))
    lines = ["| run | " + " | ".join(f"{s} (s)" for s in stages) + " |", "|---" * (len(stages) + 1) + "|"]
    lines += ["| " + (r.label or r.name) + " | "
              + " | ".join(f"{r.seconds[s]:.0f}" if s in r.seconds else "—" for s in stages) + " |"
              for r in results]
    return "\n".join(lines) + "\n"


def parent_metrics(aggs: dict[str, Aggregate]) -> dict[str, float]:
    """per/<arm>/<lang> and per/<arm>/avg: the mean over seeds (with one arm simply per/<lang>); per_sd/... the
    sample sd (with several seeds); rel_reduction/vs_<arm> on the average and rel_reduction_ci_low|high/vs_<arm>.
    Keys of the first split (test) have no suffix, those of further splits end in /<split>."""
    out = {}
    for i, (split, agg) in enumerate(aggs.items()):
        suffix, single = ("" if i == 0 else f"/{split}"), len(agg.arms) == 1
        for arm in agg.arms:
            for lang in [*agg.langs, AVERAGE]:
                key = (lang if single else f"{arm}/{lang}") + suffix
                out[f"per/{key}"] = agg.mean(arm, lang)
                if len(agg.seeds) > 1:
                    out[f"per_sd/{key}"] = agg.sd(arm, lang)
        for r in agg.reductions:
            out[f"rel_reduction/vs_{r.baseline}{suffix}"] = r.value[AVERAGE]
            out[f"rel_reduction_ci_low/vs_{r.baseline}{suffix}"] = r.low[AVERAGE]
            out[f"rel_reduction_ci_high/vs_{r.baseline}{suffix}"] = r.high[AVERAGE]
    return out


PAPER = ("Paper (Wang et al. 2021, ICML, Common Voice): UniSpeech reduces PER by 13.4% relative vs the "
         "self-supervised XLSR-style baseline and by 17.8% vs supervised transfer.")


def resumed_lines(kept: dict[str, str]) -> list[str]:
    """For a --resume: which arms and seeds finished before it, and where (the wall time is this attempt's)."""
    if not kept:
        return []
    where = "; ".join(f"{m or 'machine not recorded'}: {', '.join(k for k, km in kept.items() if km == m)}"
                      for m in dict.fromkeys(kept.values()))
    return [f"- resumed (`--resume`): {len(kept)} run(s) finished before it and were kept, the wall time is this "
            f"attempt's; kept runs by machine: {where}"]


def pretraining_health_lines(results: list[ArmResult]) -> list[str]:
    """The per-seed pretraining health table (docs/training.md#health), or nothing where no run recorded one."""
    rows = [(r.name if stage == "pretrain" else f"{r.name} ({stage})", r.seed, h)
            for r in sorted(results, key=lambda r: (r.name, r.seed)) for stage, h in r.health.items()]
    if not rows:
        return []
    return ["Pretraining health per arm and seed (from each pretraining run's MLflow history; the states are the "
            "detectors' names, docs/training.md#health):", "", health_table(rows), ""]


def results_markdown(cfg, result, *, command: str, date: str, machine: str) -> str:
    """The results block: what was run, where, the table with its statistics, stage times, and the paper's
    numbers beside it."""
    c = cfg.corpus
    from unispeech_platform.config import flatten

    pre, ft = flatten(cfg.pretrain.overrides), flatten(cfg.finetune.overrides)  # as applied (nested --set merged)
    lines = [
        f"## Cross-lingual results: `{cfg.experiment.name}`",
        "",
        f"- command: `{command}`",
        f"- date: {date}; machine: {machine}; wall time {result.seconds / 60:.1f} min",
        f"- corpus: {c.describe()}",  # unlabeled audio, test speakers and the shifted split when configured
        f"- pretraining: {cfg.pretrain.config} + {pre}; fine-tuning: {cfg.finetune.config} + {ft}",
        f"- arms (pretraining overrides): {cfg.experiment.arms}; seeds {cfg.experiment.seeds} (every arm "
        "pretrained, fine-tuned and evaluated once per seed)",
        *(["- two-stage arms (the authors' recipe: stage 1 on the labeled rows, then contrastive-only continued "
           "pretraining on the unlabeled target audio, same total updates): "
           + ", ".join(f"{arm} (stage 2: {spec.share:.0%} of the updates, {spec.overrides})"
                       for arm, spec in cfg.experiment.continued.items())] if cfg.experiment.continued else []),
        f"- MLflow: experiment `{resolve_experiment(cfg.tracking)}`, parent run `{result.run_id}`",
        *resumed_lines(getattr(result, "kept", {})),
        "",
        "PER % on the test speakers of the targets (greedy CTC decoding):",
        "",
        result.table,
        method_note(result.aggregates),
        "Stage wall times:",
        "",
        result.timings,
        *pretraining_health_lines(result.arms),
        PAPER,
        "",
    ]
    return "\n".join(lines)
