"""Stage configs of one arm, built from the experiment's StageSpecs with the experiment-owned keys (data paths,
run names, storage, tracking) set as typed values; all of them are built (= validated) before Ray starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, load_config, with_overrides
from unispeech_platform.evaluate.config import EvaluateJobConfig
from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.tracking.uri import resolve_experiment


@dataclass
class ArmStages:
    name: str
    pretrain: PretrainJobConfig
    finetune: FinetuneJobConfig
    evaluate: EvaluateJobConfig
    init_dir: str
    """Where the fine-tuning starts from (the last pretraining stage's export, or its copy with the CTC head moved
    over)."""
    continued: PretrainJobConfig | None = None
    """A two-stage arm's stage 2 (experiment.continued): continued pretraining on the unlabeled target audio from
    ``pretrain``'s export; None for a one-stage arm."""

    @property
    def last_pretraining(self) -> PretrainJobConfig:
        """The pretraining stage the fine-tuning starts from."""
        return self.continued or self.pretrain


def arm_stages(cfg: ExperimentConfig, arm: str, uri: str | None, root: Path | None = None,
               seed: int | None = None) -> ArmStages:
    """``seed`` (default: the first of experiment.seeds) seeds both training stages and names the runs."""
    exp, corpus = cfg.experiment, Path(cfg.corpus.root).resolve()
    seed = exp.seeds[0] if seed is None else seed
    label, seeded = exp.run_label(arm, seed), {"train.seed": seed, "data.seed": seed}
    root = root or Path(exp.storage_path).resolve() / exp.name
    vocab = str(corpus / "vocab.json")
    common = {
        "data.vocab_path": vocab,
        "checkpoint.storage_path": str(root),
        "tracking.enabled": uri is not None,
        "tracking.uri": uri,
        "tracking.experiment": resolve_experiment(cfg.tracking),
    }
    pre = load_config(PretrainJobConfig, cfg.pretrain.config, values={
        **cfg.pretrain.overrides, **exp.arms[arm], **common, **seeded,
        "data.path": str(corpus / "high"), "checkpoint.name": f"{label}-pretrain",
        "tracking.run_name": f"{label}/pretrain",
    })
    pre, continued = two_stages(cfg, arm, pre, label, {**common, **seeded})
    layout = RunLayout.of((continued or pre).checkpoint)
    init_dir = layout.ctc_head_export_dir if exp.init_ctc_head else layout.export_dir
    ft = load_config(FinetuneJobConfig, cfg.finetune.config, values={
        **cfg.finetune.overrides, **common, **seeded,
        "data.path": str(corpus / "low"), "data.labeled_only": True, "finetune.init_from": init_dir,
        "checkpoint.name": f"{label}-finetune", "tracking.run_name": f"{label}/finetune",
    })
    ev = load_config(EvaluateJobConfig, cfg.evaluate.config, values={
        **cfg.evaluate.overrides,
        "data.path": str(corpus / "low"), "data.vocab_path": vocab,
        "evaluate.model_path": os.path.join(str(root), f"{label}-finetune"),
        "evaluate.output_dir": str(root / f"{label}-eval"),
        # the experiment records the scores into the arm's run itself, best effort (experiments.runs)
        "tracking.enabled": False,
    })
    check_fair(cfg, arm)
    return ArmStages(arm, labeled_only_if_supervised(pre), ft, with_shifted_split(cfg, ev), init_dir, continued)


def two_stages(cfg: ExperimentConfig, arm: str, pre: PretrainJobConfig, label: str, common: dict
               ) -> tuple[PretrainJobConfig, PretrainJobConfig | None]:
    """(stage 1, stage 2) of a two-stage arm (experiment.continued), the budget of ``pre`` split between them:
    stage 1 on the labeled rows, stage 2 from stage 1's export on the unlabeled languages' rows only (the targets'
    unlabeled audio); (pre, None) for any other arm."""
    spec = cfg.experiment.continued.get(arm)
    if spec is None:
        return pre, None
    total = pre.train.max_steps
    if total < 2:
        from unispeech_platform.config import ConfigError

        raise ConfigError(f"experiment.continued.{arm}: train.max_steps={total} cannot be split into two stages")
    second = min(max(round(spec.share * total), 1), total - 1)
    first = with_overrides(pre, {"train.max_steps": total - second, "data.labeled_only": True})
    from unispeech_platform.config import flatten

    stage2 = load_config(PretrainJobConfig, cfg.pretrain.config, values={  # flat: the stage's own keys win
        **flatten(cfg.pretrain.overrides), **flatten(cfg.experiment.arms[arm]), **flatten(spec.overrides), **common,
        "train.max_steps": second, "data.path": pre.data.path, "data.labeled_only": False,
        "data.langs": cfg.corpus.unlabeled_languages(),
        "pretrain.init_from": RunLayout.of(first.checkpoint).export_dir,
        "checkpoint.name": f"{label}-continued", "tracking.run_name": f"{label}/continued",
    })
    return first, stage2


SHARED_KEYS = ("train.max_steps", "train.num_workers", "data.max_batch_size", "data.max_batch_seconds",
               "data.labeled_only", "data.path", "data.langs", "data.train_splits")
"""Pretraining keys that must be equal for every arm (updates, batch budget, data): an arm may not set them."""


def check_fair(cfg: ExperimentConfig, arm: str) -> None:
    """Every arm gets the same updates and batch budget: its overrides may not touch SHARED_KEYS."""
    from unispeech_platform.config import ConfigError, flatten

    bad = sorted(k for k in flatten(cfg.experiment.arms[arm]) if k in SHARED_KEYS)
    if bad:
        raise ConfigError(f"experiment.arms.{arm} sets {bad}: every arm gets the same updates, batch budget and "
                          "data; set them in pretrain.overrides")


def labeled_only_if_supervised(pre: PretrainJobConfig) -> PretrainJobConfig:
    """An arm with ctc_weight 1 (supervised transfer) learns nothing from an unlabeled row yet would spend its
    batch budget on it, and the setting's premise is that it cannot use unlabeled audio: it reads the labeled
    rows only (filtered in the Parquet scan), with the same updates and batch budget as every other arm. The
    effective ctc_weight decides: a preset that leaves it unset trains with UniSpeechConfig's default."""
    if pre.model.effective("ctc_weight") < 1.0 or pre.data.labeled_only:
        return pre
    return with_overrides(pre, {"data.labeled_only": True})


def with_shifted_split(cfg: ExperimentConfig, ev: EvaluateJobConfig) -> EvaluateJobConfig:
    """Evaluation also scores the shifted test split when the corpus has one (after the configured splits, so
    the results table's first split stays ``test``)."""
    shifted = cfg.corpus.shifted_test
    if not shifted.enabled or shifted.split in ev.evaluate.splits:
        return ev
    splits = [*ev.evaluate.splits, shifted.split]
    return with_overrides(ev, {"evaluate.splits": splits})
