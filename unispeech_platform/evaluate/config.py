"""``python -m jobs.evaluate`` config: which model, which data, how inference is spread over Ray."""

from __future__ import annotations

from pydantic import Field

from unispeech_platform.config.base import Section
from unispeech_platform.config.data import DataConfig
from unispeech_platform.config.sections import RaySection, TrackingSection
from unispeech_platform.config.tasks import TASK_SPECS


def scored_architectures(evaluator: str) -> tuple[str, ...]:
    """The exported model classes an evaluator scores: those of the tasks that name it (config/tasks.py), e.g.
    ``per`` (this job) -> UniSpeechForCTC. A new task with ``evaluator="per"`` is accepted here without a change."""
    return tuple(spec.architecture for spec in TASK_SPECS.values() if spec.evaluator == evaluator)


class EvaluateSection(Section):
    """Batch inference and scoring (consumed by unispeech_platform.evaluate only)."""

    model_path: str
    """Transformers-format dir (config.json + model.safetensors + vocab.json), a training job dir
    (<storage>/<name>: its model/best or model/), a Ray Train checkpoint dir (<storage>/<name>/step_N), or an
    MLflow URI (runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>) from tracking.uri's store,
    downloaded into output_dir/model."""
    splits: list[str] = Field(default_factory=lambda: ["test"])
    """split= partitions to score, each reported separately (languages come from data.langs; None = all)."""
    num_actors: int = Field(1, ge=1)
    """Inference actors in the Ray Data pool; each loads the model once."""
    cpus_per_actor: float = Field(1.0, gt=0)
    """Logical CPUs reserved per actor."""
    use_gpu: bool | None = None
    """One GPU per actor (the model runs in fp32 on it). None = auto: GPUs when the cluster has one per actor."""
    batch_rows: int = Field(32, ge=1)
    """Decoded rows handed to an actor per call; they are cut into length-bucketed batches (data.max_batch_*)."""
    output_dir: str = "eval"
    """Where the table (Markdown, CSV, JSON), the bar chart and the per-utterance predictions are written."""
    run_id: str | None = None
    """MLflow run to log into; default: the training run recorded next to the model, else a new run."""


class EvaluateJobConfig(Section):
    """`python -m jobs.evaluate`: per-language PER of a fine-tuned CTC model."""

    evaluate: EvaluateSection
    """Model, splits, inference resources, outputs."""
    data: DataConfig
    """Corpus location and languages (rows without phones are skipped)."""
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    """MLflow."""
    ray: RaySection = Field(default_factory=RaySection)
    """How to reach or start Ray."""
