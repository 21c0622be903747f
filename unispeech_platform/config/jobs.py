"""Job configs: one typed model per entrypoint, composed of the sections each component consumes. A training
job is keyed on its task (config/tasks.py: ``pretrain`` | ``ctc`` | ``lid``): the task follows from the config,
never from a string passed beside it."""

from __future__ import annotations

from pydantic import Field, model_validator

from unispeech_platform.config.base import Section
from unispeech_platform.config.data import DataConfig
from unispeech_platform.config.model import ModelSection
from unispeech_platform.config.sections import (
    CheckpointSection,
    FinetuneSection,
    OptimSection,
    PretrainSection,
    RaySection,
    TrackingSection,
    TrainSection,
)
from unispeech_platform.config.tasks import TASK_SPECS, TaskName


class PretrainJobConfig(Section):
    """`python -m jobs.pretrain`: UniSpeech multitask pretraining."""

    model: ModelSection = Field(default_factory=ModelSection)
    """UniSpeechConfig overrides (transformers' field names, typed and range-checked), e.g. hidden_size."""
    data: DataConfig
    """Corpus location, languages, batching (owned by unispeech_platform.data)."""
    train: TrainSection = Field(default_factory=TrainSection)
    """Distribution, steps, precision, logging/eval cadence."""
    optim: OptimSection = Field(default_factory=OptimSection)
    """AdamW and LR schedule."""
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    """MLflow."""
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    """Checkpoint storage, cadence, retention, export."""
    ray: RaySection = Field(default_factory=RaySection)
    """How to reach or start Ray."""
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    """Where pretraining starts (random weights, or pretrain.init_from)."""

    @property
    def task(self) -> TaskName:
        return "pretrain"


class FinetuneJobConfig(PretrainJobConfig):
    """`python -m jobs.finetune`: CTC (or LID) fine-tuning of a pretrained model."""

    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    """Initial weights, task, freezing."""

    @model_validator(mode="after")
    def _starts_from_finetune_init(self) -> FinetuneJobConfig:
        if self.pretrain.init_from is not None:
            raise ValueError("pretrain.init_from is for pretraining jobs; fine-tuning starts from finetune.init_from")
        return self

    @property
    def task(self) -> TaskName:
        return self.finetune.task


def job_config_class(task: TaskName) -> type[PretrainJobConfig]:
    """The config class of a task's job (workers re-validate the driver's JSON dump with it)."""
    return FinetuneJobConfig if TASK_SPECS[task].finetunes else PretrainJobConfig
