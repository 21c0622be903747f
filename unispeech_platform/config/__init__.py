"""Typed job configs loaded from YAML and validated before Ray starts."""

from unispeech_platform.config.base import (
    ConfigError,
    as_overrides,
    flatten,
    load_config,
    loggable_params,
    to_yaml,
    with_overrides,
    yaml_value,
)
from unispeech_platform.config.data import DataConfig
from unispeech_platform.config.jobs import FinetuneJobConfig, PretrainJobConfig, job_config_class
from unispeech_platform.config.model import ModelSection
from unispeech_platform.config.sections import (
    CheckpointSection,
    FinetuneSection,
    OptimSection,
    RaySection,
    TrackingSection,
    TrainSection,
)
from unispeech_platform.config.tasks import TASK_SPECS, TaskName, TaskSpec

__all__ = [
    "CheckpointSection",
    "ConfigError",
    "DataConfig",
    "FinetuneJobConfig",
    "FinetuneSection",
    "ModelSection",
    "OptimSection",
    "PretrainJobConfig",
    "RaySection",
    "TASK_SPECS",
    "TaskName",
    "TaskSpec",
    "TrackingSection",
    "TrainSection",
    "as_overrides",
    "flatten",
    "job_config_class",
    "load_config",
    "loggable_params",
    "to_yaml",
    "with_overrides",
    "yaml_value",
]
