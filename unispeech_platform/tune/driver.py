"""One Tune trial = a short pretraining (+ optional short fine-tuning), each a Ray Train run started from this
driver function (Train V2: the Tune trainable is a plain function that fits TorchTrainers).

Metrics reach Tune through ``StageReport``, a ``TuneReportCallback`` that adds ``trial_step`` (the update count
across both stages, ASHA's time attribute) and only forwards reports that carry the sweep's metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ray.tune.integration.ray_train import TuneReportCallback

from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, with_overrides

Job = TypeVar("Job", bound=PretrainJobConfig)


class StageReport(TuneReportCallback):
    """Rank 0's reported metrics -> Tune, with ``trial_step = step_offset + step`` and the stage name. Forwarded
    by Ray's own ``after_report`` (which adds the checkpoint path), given the amended metrics."""

    def __init__(self, metric: str, stage: str, step_offset: int, carry: dict[str, float] | None = None):
        super().__init__()
        self.metric, self.stage, self.step_offset = metric, stage, step_offset
        self.carry = dict(carry or {})
        """Added to every forwarded result: a fine-tuning stage carries its pretraining's end (report.pretraining_end)."""

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        result = {**self.carry, **metrics[0]}
        if self.metric not in result:  # Tune insists every result has the metric (strict metric checking)
            return
        result["trial_step"] = self.step_offset + int(result.get("step", 0))
        result["stage"] = self.stage
        super().after_report(run_context, [result, *metrics[1:]], checkpoint)


@dataclass(frozen=True, kw_only=True)
class TrialSetup:
    """What every trial needs besides its sampled values (shipped with tune.with_parameters): the stage configs,
    typed and validated on the driver with the sweep's fixed overrides (data paths absolute)."""

    pretrain: PretrainJobConfig
    finetune: FinetuneJobConfig | None
    """Run after each trial's pretraining, from its export (finetune.init_from is set per trial)."""
    metric: str
    init_ctc_head: bool
    runs_dir: str
    """Absolute directory of the trials' Ray Train runs (<trial_id>-pretrain, <trial_id>-finetune)."""
    tracking_uri: str | None
    experiment: str
    parent_run_id: str | None


def _stage(job: Job, values: dict[str, Any], name: str, s: TrialSetup) -> Job:
    """A trial's stage: its config with the trial's values and its run name, storage and tracking set (typed)."""
    tracking = ({"tracking.uri": s.tracking_uri, "tracking.experiment": s.experiment, "tracking.run_name": name}
                if s.tracking_uri else {"tracking.enabled": False})
    return with_overrides(job, {**values, **tracking, "checkpoint.name": name, "checkpoint.storage_path": s.runs_dir})


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune trainable: ``config`` holds the sampled values by dotted key. Rerun after an interruption, it
    resumes each stage from its last checkpoint."""
    from ray import tune

    from unispeech_core.checkpoint import copy_ctc_head
    from unispeech_platform.train import run_training
    from unispeech_platform.tune.mlflow_callback import nested_run
    from unispeech_platform.tune.report import pretraining_end

    s = setup
    trial_id = tune.get_context().get_trial_id()

    def run_id(stage: str, parent: str | None) -> str | None:
        if not (s.tracking_uri and parent):
            return None
        return nested_run(s.tracking_uri, parent, trial_id, f"{trial_id}-{stage}", stage)

    pre = _stage(s.pretrain, config, f"{trial_id}-pretrain", s)
    resumed = Path(s.runs_dir, pre.checkpoint.name).exists()
    pre_run = run_id("pretrain", s.parent_run_id)
    result = run_training(pre, resume=resumed, run_id=pre_run, callbacks=[StageReport(s.metric, "pretrain", 0)])
    if s.finetune is None:
        return
    layout = result.layout
    init_from = copy_ctc_head(layout.export_dir, layout.ctc_head_export_dir) if s.init_ctc_head else layout.export_dir
    ft = _stage(s.finetune, {"finetune.init_from": init_from}, f"{trial_id}-finetune", s)
    resumed = Path(s.runs_dir, ft.checkpoint.name).exists()
    run_training(ft, resume=resumed, run_id=run_id("finetune", pre_run),
                 callbacks=[StageReport(s.metric, "finetune", pre.train.max_steps, pretraining_end(result.metrics))])
