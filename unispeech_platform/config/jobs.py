"""Job configs: one typed model per entrypoint, composed of the sections each component consumes."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from unispeech_platform.config.base import Section
from unispeech_platform.config.sections import (
    CheckpointSection,
    FinetuneSection,
    OptimSection,
    RaySection,
    TrackingSection,
    TrainSection,
)
from unispeech_platform.data.config import DataConfig


def _check_model_overrides(v: dict[str, Any]) -> dict[str, Any]:
    """Model overrides must be UniSpeechConfig fields (checked by building the config)."""
    from unispeech_core import UniSpeechConfig

    valid = set(UniSpeechConfig().to_dict()) | {"id2label", "label2id", "num_labels"}  # classification heads
    unknown = sorted(set(v) - valid)
    if unknown:
        raise ValueError(f"unknown UniSpeechConfig field(s) {unknown} (valid: {', '.join(sorted(valid))})")
    UniSpeechConfig(**v)
    return v


class PretrainJobConfig(Section):
    """`python -m jobs.pretrain`: UniSpeech multitask pretraining."""

    model: dict[str, Any] = Field(default_factory=dict)
    """UniSpeechConfig overrides (transformers' field names), e.g. hidden_size, num_hidden_layers, ctc_weight."""
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

    @field_validator("model")
    @classmethod
    def _model_fields_exist(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_model_overrides(v)


class FinetuneJobConfig(PretrainJobConfig):
    """`python -m jobs.finetune`: CTC (or LID) fine-tuning of a pretrained model."""

    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    """Initial weights, task, freezing."""
