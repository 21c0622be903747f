"""One Tune trial = a short pretraining (+ optional short fine-tuning), each a Ray Train run started from this
driver function (Train V2: the Tune trainable is a plain function that fits TorchTrainers).

Metrics reach Tune through ``StageReport``, a ``TuneReportCallback`` that adds ``trial_step`` (the update count
across both stages, ASHA's time attribute) and only forwards reports that carry the sweep's metric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from unispeech_platform.config import as_overrides


class StageReport(TuneReportCallback):
    """Rank 0's reported metrics -> Tune, with ``trial_step = step_offset + step`` and the stage name."""

    def __init__(self, metric: str, stage: str, step_offset: int):
        super().__init__()
        self.metric, self.stage, self.step_offset = metric, stage, step_offset

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        result = dict(metrics[0])
        if self.metric not in result:  # Tune insists every result has the metric (strict metric checking)
            return
        result["trial_step"] = self.step_offset + int(result.get("step", 0))
        result["stage"] = self.stage
        if checkpoint:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        self._training_actor_item_queue.put(result)


@dataclass
class TrialSetup:
    """What every trial needs besides its sampled values (shipped with tune.with_parameters)."""

    pretrain_config: str
    finetune_config: str | None
    pretrain_overrides: dict[str, Any]
    finetune_overrides: dict[str, Any]
    metric: str
    init_ctc_head: bool
    runs_dir: str
    """Absolute directory of the trials' Ray Train runs (<trial_id>-pretrain, <trial_id>-finetune)."""
    tracking_uri: str | None
    experiment: str
    parent_run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stage(config_cls, path: str, fixed: dict[str, Any], sampled: dict[str, Any], name: str, s: TrialSetup):
    from unispeech_platform.config import load_config

    tracking = (
        [f"tracking.uri={s.tracking_uri}", f"tracking.experiment={s.experiment}", f"tracking.run_name={name}"]
        if s.tracking_uri else ["tracking.enabled=false"]
    )
    overrides = [*as_overrides(fixed), *as_overrides(sampled), *tracking,
                 f"checkpoint.name={name}", f"checkpoint.storage_path={s.runs_dir}"]
    return load_config(config_cls, path, overrides)


def run_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """The Tune trainable. Rerun after an interruption, it resumes each stage from its last checkpoint."""
    from ray import tune

    from unispeech_core.checkpoint import copy_ctc_head
    from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig
    from unispeech_platform.train import run_training
    from unispeech_platform.tune.mlflow_callback import nested_run

    s = TrialSetup(**setup)
    trial_id = tune.get_context().get_trial_id()

    def run_id(stage: str, parent: str | None) -> str | None:
        if not (s.tracking_uri and parent):
            return None
        return nested_run(s.tracking_uri, parent, trial_id, f"{trial_id}-{stage}", stage)

    pre = _stage(PretrainJobConfig, s.pretrain_config, s.pretrain_overrides, config, f"{trial_id}-pretrain", s)
    resumed = Path(s.runs_dir, pre.checkpoint.name).exists()
    pre_run = run_id("pretrain", s.parent_run_id)
    result = run_training(pre, resume=resumed, run_id=pre_run, callbacks=[StageReport(s.metric, "pretrain", 0)])
    if s.finetune_config is None:
        return
    layout = result.layout
    init_from = copy_ctc_head(layout.export_dir, layout.ctc_head_export_dir) if s.init_ctc_head else layout.export_dir
    fixed = {**s.finetune_overrides, "finetune.init_from": init_from}
    ft = _stage(FinetuneJobConfig, s.finetune_config, fixed, {}, f"{trial_id}-finetune", s)
    resumed = Path(s.runs_dir, ft.checkpoint.name).exists()
    run_training(ft, resume=resumed, run_id=run_id("finetune", pre_run),
                 callbacks=[StageReport(s.metric, "finetune", pre.train.max_steps)])
