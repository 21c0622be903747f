"""Config sections owned by the training platform. Each component is built from its own section only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from unispeech_platform.config.base import Section
from unispeech_platform.config.names import SafeName
from unispeech_platform.config.tasks import FinetuneTaskName

HealthState = Literal["codebook_collapse", "collinear_targets", "random_codes", "starved_contrastive",
                      "ctc_blank_plateau"]
"""The failure states train/health.py names (declared here: train.stop_on is validated before anything runs)."""


class TrainSection(Section):
    """How the job is distributed and stepped (consumed by the driver and the train loop)."""

    num_workers: int = Field(2, ge=1)
    """Ray Train workers (one process per GPU, or per CPU slot on CPU)."""
    use_gpu: bool | None = None
    """One GPU per worker (NCCL) instead of CPU (gloo). None = auto: GPUs when the Ray cluster has one per worker."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """Logical CPUs reserved per worker; fractional values let more workers share a small machine."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How workers are placed on nodes (SPREAD/STRICT_SPREAD put them on different nodes)."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage: 0 = plain data parallel, 1 = optimizer, 2 = +gradients, 3 = +parameters sharded."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute precision. auto decides from the hardware the workers run on (runtime/hardware.py): bf16 on GPUs
    with compute capability >= 8.0, fp16 with dynamic loss scaling on 7.x GPUs (V100, T4), bf16 autocast on CPUs
    with native bf16 (avx512_bf16 / amx_bf16 flags), fp32 otherwise (bf16 autocast is ~10x slower than fp32 on a
    CPU without them). An explicit value wins; fp16 needs GPUs. The choice and its reason are logged and tagged."""
    max_steps: int = Field(100, ge=1)
    """Optimizer updates to run in total (across restarts)."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer update."""
    grad_clip: float = Field(5.0, ge=0)
    """Global gradient-norm clipping threshold (0 disables)."""
    activation_checkpointing: bool = False
    """Recompute transformer layer activations in the backward pass to save memory."""
    seed: int = Field(0, ge=0, lt=2**32)
    """Seed for parameters, masks, negatives and the LayerDrop generator (identical on every rank)."""
    log_every: int = Field(10, ge=1)
    """Sync metrics across ranks and log them every N updates."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the dev split every N updates (0 = only at the end)."""
    eval_max_batches: int | None = Field(None, ge=1)
    """Cap on dev batches per rank per evaluation (None = whole dev shard)."""
    max_failures: int = Field(0, ge=-1)
    """Worker-group restarts Ray Train may do after a failure (-1 = unlimited); each restores the last checkpoint."""
    deepspeed: dict[str, Any] = Field(default_factory=dict)
    """Raw DeepSpeed config merged over the generated one (e.g. zero_optimization.offload_optimizer)."""
    collapse_perplexity: float = Field(2.0, ge=0)
    """codebook_collapse (train/health.py): the hard code perplexity per codebook group at or below this."""
    health_after_steps: int = Field(0, ge=0)
    """No failure-state verdict before this update (the statistics of the first updates are noise)."""
    blank_plateau_after_steps: int = Field(300, ge=0)
    """ctc_blank_plateau is judged from this update on: every CTC run starts on the blank plateau."""
    stop_on: list[HealthState] = Field(default_factory=list)
    """Failure states that end the run at the update they first show, e.g. [codebook_collapse, collinear_targets]
    (every rank stops together; the model is exported as at any end; docs/training.md#health)."""
    grad_share_every: int = Field(50, ge=0)
    """Pretraining: every N updates measure the gradient CTC and contrastive each send into the transformer's
    input (grad_share/*: two partial backward passes on one micro-batch; 0 = never; not under ZeRO-3)."""
    step_efficiency_steps: int | None = Field(None, ge=0)
    """CPU: after the first log interval, time this many bare forward + backward + AdamW steps of a plain copy of
    the model on the last batch (every rank at once, as the job runs), for perf/step_efficiency = the job's
    audio-s/s per worker over the bare step's (train/step_efficiency.py); 0 = never; None = 3 in runs of 50 or more
    updates (in shorter ones its seconds would be a visible share). Never under ZeRO-3."""


    @model_validator(mode="after")
    def _fp16_needs_gpus(self) -> TrainSection:
        if self.precision == "fp16" and self.use_gpu is False:
            raise ValueError("precision fp16 needs GPUs (loss-scaled fp16 is a GPU mode); use auto, bf16 or fp32")
        return self


class OptimSection(Section):
    """AdamW and the learning-rate schedule (authors' defaults)."""

    lr: float = Field(5e-4, gt=0)
    """Peak learning rate."""
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.98)
    """Adam betas, each in [0, 1) (UniSpeech/wav2vec 2.0 use 0.9, 0.98)."""
    eps: float = Field(1e-6, gt=0)
    """Adam epsilon."""
    weight_decay: float = Field(0.01, ge=0)
    """Decoupled weight decay."""
    schedule: Literal["polynomial", "tri_stage", "constant"] = "polynomial"
    """polynomial: linear warmup then (1 - progress)^power decay to end_lr; tri_stage: warmup/hold/exp decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup updates (polynomial and constant)."""
    power: float = Field(1.0, gt=0)
    """Exponent of the polynomial decay (1 = linear)."""
    end_lr: float = Field(0.0, ge=0)
    """Learning rate reached at max_steps (polynomial)."""
    phase_ratio: tuple[float, float, float] = (0.1, 0.4, 0.5)
    """tri_stage: fractions of max_steps for warmup, hold and decay."""
    init_lr_scale: float = Field(0.01, ge=0)
    """tri_stage: warmup starts at lr * init_lr_scale."""
    final_lr_scale: float = Field(0.05, ge=0)
    """tri_stage: decay ends at lr * final_lr_scale."""

    @field_validator("phase_ratio")
    @classmethod
    def _ratios_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"phase_ratio must sum to 1, got {sum(v)}")
        return v


class TrackingSection(Section):
    """MLflow tracking (rank 0 only)."""

    enabled: bool = True
    """Log to MLflow at all."""
    uri: str | None = None
    """Tracking URI; None = $MLFLOW_TRACKING_URI, else the embedded sqlite store ./mlflow.db (made absolute)."""
    experiment: str | None = None
    """MLflow experiment name; None = $MLFLOW_EXPERIMENT_NAME, else "unispeech" (a name set here wins)."""
    run_name: str | None = None
    """MLflow run name (default: checkpoint.name)."""
    log_model: bool = True
    """Record the exported model: a task that logs an MLflow Model (config/tasks.py: CTC fine-tuning) logs it at
    runs:/<run_id>/model, other jobs upload the export directory as the run's `export` artifacts."""
    registered_model: str | None = None
    """Also register a CTC fine-tuning job's MLflow Model as a new version of this Model Registry name."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """How long the driver waits for a remote tracking server before failing."""
    system_metrics: bool | None = None
    """Log the driver machine's CPU, memory, disk, network (and GPU) as system/* metrics; None =
    $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, else off."""


class CheckpointSection(Section):
    """Where the job keeps its state, and how often."""

    name: SafeName = "unispeech"
    """Stable Ray Train run name (no timestamps): rerunning with --resume and the same name restores. One safe
    directory name (config/names.py): letters, digits and . _ - + = @, no '/', '..' or leading '-'."""
    storage_path: str = "runs"
    """Ray Train storage: a local/NFS directory (made absolute) or a URI such as s3://bucket/prefix."""
    every_steps: int = Field(100, ge=1)
    """Save a checkpoint every N updates (and always at the end)."""
    keep: int = Field(2, ge=1)
    """Checkpoints kept (the latest is always kept; with score_metric the best ones are kept)."""
    score_metric: str | None = None
    """Reported metric that ranks checkpoints (e.g. dev_per); None = keep the most recent."""
    score_order: Literal["min", "max"] = "min"
    """Whether lower or higher score_metric is better."""
    export_dir: str | None = None
    """Local/NFS directory for the consolidated transformers-format model (default <storage>/<name>/model)."""


class RaySection(Section):
    """How the job reaches Ray. An existing cluster is used when RAY_ADDRESS is set (e.g. `ray job submit`)."""

    local_num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs of a locally started Ray (None = max(8, 4 x cores)); must exceed what workers take."""
    data_context: dict[str, Any] = Field(default_factory=dict)
    """Ray Data DataContext attributes set on the driver before datasets are built (e.g. target_max_block_size:
    tiny corpora need small blocks, or one worker gets every block of an exactly-once split)."""
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    """runtime_env for a locally started Ray (cluster jobs get theirs from `ray job submit`)."""


class PretrainSection(Section):
    """Where pretraining starts (pretraining jobs only; docs/training.md#continued-pretraining)."""

    init_from: str | None = None
    """Continue pretraining from a model instead of random weights: one of our exports or run directories, or a
    transformers UniSpeechForPreTraining / Wav2Vec2ForPreTraining / *ForCTC directory, or an MLflow URI of one
    (runs:/<run_id>/model, models:/<name>/<version>: downloaded into the run directory). Without a ``model:``
    section the job takes that model's architecture; ``model:`` keys override what may change (masking, loss
    weights, dropout), architecture keys that differ are refused. A head the model lacks or whose classes differ
    from the corpus vocabulary (the quantizer, the CTC head) starts fresh, named in one warning."""


class FinetuneSection(Section):
    """What to fine-tune from and how (fine-tune jobs only)."""

    task: FinetuneTaskName = "ctc"
    """A fine-tuning task of config/tasks.py. ctc: phone recognition; lid: language identification (sequence
    classification; run it with `python -m jobs.lid`, which sets model.id2label from the corpus languages)."""
    init_from: str | None = None
    """Transformers-format model dir (config.json + model.safetensors), one of our Ray/DeepSpeed checkpoints, or
    an MLflow URI (runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>; downloaded into the run
    directory before Ray starts: docs/export.md)."""
    freeze_feature_encoder: bool = True
    """Keep the convolutional feature encoder frozen throughout."""
    freeze_transformer_steps: int = Field(0, ge=0)
    """Train only the head for the first K updates, then unfreeze the transformer."""
