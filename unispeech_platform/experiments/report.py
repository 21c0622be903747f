"""The experiment's result table (the paper's layout): PER per target language and arm, the macro average, and
the relative PER reduction of the reference arm (UniSpeech) vs every other arm."""

from __future__ import annotations

from dataclasses import dataclass, field

from unispeech_platform.evaluate.scoring import MACRO, WEIGHTED, Score


@dataclass
class ArmResult:
    name: str
    scores: list[Score]
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage (pretrain, finetune, evaluate)."""
    run_id: str | None = None

    def per(self) -> dict[str, float]:
        """lang -> PER on the first scored split; MACRO -> the average."""
        split = self.scores[0].split
        return {s.lang: s.per for s in self.scores if s.split == split and s.lang != WEIGHTED}


def relative_reductions(results: list[ArmResult], reference: str) -> dict[str, float]:
    """baseline arm -> (PER_baseline - PER_reference) / PER_baseline on the average (positive = reference better)."""
    ref = next(r for r in results if r.name == reference).per()[MACRO]
    out = {}
    for r in results:
        if r.name != reference:
            base = r.per()[MACRO]
            out[r.name] = (base - ref) / base if base > 0 else 0.0
    return out


def results_table(results: list[ArmResult], reference: str | None = None) -> str:
    """Markdown: one row per arm, one column per language plus the average (PER %), then the reductions."""
    langs = [k for k in results[0].per() if k != MACRO]
    head = ["arm", *langs, "avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        per = r.per()
        lines.append("| " + " | ".join([r.name, *(f"{100 * per.get(x, float('nan')):.1f}" for x in langs),
                                        f"**{100 * per[MACRO]:.1f}**"]) + " |")
    text = "\n".join(lines) + "\n"
    if reference and len(results) > 1:
        red = relative_reductions(results, reference)
        text += "\n" + "\n".join(
            f"- {reference} vs {base}: {100 * v:+.1f}% relative PER reduction on the average"
            f" ({'better' if v > 0 else 'worse' if v < 0 else 'equal'})" for base, v in red.items()) + "\n"
    return text


def timing_table(results: list[ArmResult]) -> str:
    stages = list(dict.fromkeys(k for r in results for k in r.seconds))  # pipeline order
    lines = ["| arm | " + " | ".join(f"{s} (s)" for s in stages) + " |", "|---" * (len(stages) + 1) + "|"]
    lines += ["| " + r.name + " | " + " | ".join(f"{r.seconds.get(s, 0):.0f}" for s in stages) + " |" for r in results]
    return "\n".join(lines) + "\n"


def parent_metrics(results: list[ArmResult], reference: str | None) -> dict[str, float]:
    """per/<arm>/<lang> and per/<arm>/avg (with one arm simply per/<lang>), rel_reduction/vs_<arm>."""
    single = len(results) == 1
    out = {}
    for r in results:
        for lang, v in r.per().items():
            out[f"per/{lang}" if single else f"per/{r.name}/{lang}"] = v
    if reference and not single:
        out.update({f"rel_reduction/vs_{k}": v for k, v in relative_reductions(results, reference).items()})
    return out


PAPER = ("Paper (Wang et al. 2021, ICML, Common Voice): UniSpeech reduces PER by 13.4% relative vs the "
         "self-supervised XLSR-style baseline and by 17.8% vs supervised transfer.")


def results_markdown(cfg, result, *, command: str, date: str, machine: str) -> str:
    """The results section: what was run, where, the table, stage times, and the paper's numbers beside it."""
    c = cfg.corpus
    from unispeech_platform.config import flatten

    pre, ft = flatten(cfg.pretrain.overrides), flatten(cfg.finetune.overrides)  # as applied (nested --set merged)
    lines = [
        f"## Cross-lingual results: `{cfg.experiment.name}`",
        "",
        f"- command: `{command}`",
        f"- date: {date}; machine: {machine}; wall time {result.seconds / 60:.1f} min",
        f"- corpus: synthetic espeak-ng, pretraining on {c.high_resource} ({c.high_per_lang} utterances each, "
        f"all labeled), targets {c.low_resource} ({c.low_per_lang} utterances each: {c.speakers - 2} train "
        f"speakers, 1 dev, 1 test), {c.min_words}-{c.max_words} words per utterance",
        f"- pretraining: {cfg.pretrain.config} + {pre}; fine-tuning: {cfg.finetune.config} + {ft}",
        f"- arms (pretraining overrides): {cfg.experiment.arms}",
        f"- MLflow: experiment `{cfg.tracking.experiment}`, parent run `{result.run_id}`",
        "",
        "PER % on the test speakers of the targets (greedy CTC decoding):",
        "",
        result.table,
        "Stage wall times:",
        "",
        result.timings,
        PAPER,
        "",
    ]
    return "\n".join(lines)
