"""Typed job configs loaded from YAML and validated before Ray starts."""

from unispeech_platform.config.base import (
    ConfigError,
    as_overrides,
    flatten,
    load_config,
    to_yaml,
    yaml_value,
)
from unispeech_platform.config.jobs import FinetuneJobConfig, PretrainJobConfig
from unispeech_platform.config.sections import (
    CheckpointSection,
    FinetuneSection,
    OptimSection,
    RaySection,
    TrackingSection,
    TrainSection,
)

__all__ = [
    "CheckpointSection",
    "ConfigError",
    "FinetuneJobConfig",
    "FinetuneSection",
    "OptimSection",
    "PretrainJobConfig",
    "RaySection",
    "TrackingSection",
    "TrainSection",
    "as_overrides",
    "flatten",
    "load_config",
    "to_yaml",
    "yaml_value",
]
