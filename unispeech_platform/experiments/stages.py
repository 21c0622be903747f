"""Stage configs of one arm, built from the experiment's StageSpecs with the experiment-owned keys (data paths,
run names, storage, tracking) set; all of them are built (= validated) before Ray starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, as_overrides, load_config
from unispeech_platform.evaluate.config import EvaluateJobConfig
from unispeech_platform.experiments.config import ExperimentConfig
from unispeech_platform.runtime.layout import RunLayout


@dataclass
class ArmStages:
    name: str
    pretrain: PretrainJobConfig
    finetune: FinetuneJobConfig
    evaluate: EvaluateJobConfig
    init_dir: str
    """Where the fine-tuning starts from (the pretraining export, or its copy with the CTC head moved over)."""


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
        "tracking.experiment": cfg.tracking.experiment,
    }
    pre = load_config(PretrainJobConfig, cfg.pretrain.config, as_overrides({
        **cfg.pretrain.overrides, **exp.arms[arm], **common, **seeded,
        "data.path": str(corpus / "high"), "checkpoint.name": f"{label}-pretrain",
        "tracking.run_name": f"{label}/pretrain",
    }))
    layout = RunLayout.of(pre.checkpoint)
    init_dir = layout.ctc_head_export_dir if exp.init_ctc_head else layout.export_dir
    ft = load_config(FinetuneJobConfig, cfg.finetune.config, as_overrides({
        **cfg.finetune.overrides, **common, **seeded,
        "data.path": str(corpus / "low"), "data.labeled_only": True, "finetune.init_from": init_dir,
        "checkpoint.name": f"{label}-finetune", "tracking.run_name": f"{label}/finetune",
    }))
    ev = load_config(EvaluateJobConfig, cfg.evaluate.config, as_overrides({
        **cfg.evaluate.overrides,
        "data.path": str(corpus / "low"), "data.vocab_path": vocab,
        "evaluate.model_path": os.path.join(str(root), f"{label}-finetune"),
        "evaluate.output_dir": str(root / f"{label}-eval"),
        "tracking.enabled": uri is not None, "tracking.uri": uri, "tracking.experiment": cfg.tracking.experiment,
    }))
    return ArmStages(arm, pre, ft, ev, init_dir)
