"""``python -m jobs.sweep`` config: the trial recipe (pretraining [+ fine-tuning] configs), the search space,
the scheduler and the concurrency."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from unispeech_platform.config.base import Section
from unispeech_platform.config.names import SafeName
from unispeech_platform.config.sections import RaySection, TrackingSection

DIM_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")


class SearchDim(Section):
    """One swept key: exactly one of the fields is set."""

    uniform: tuple[float, float] | None = None
    """Float drawn uniformly from [low, high]."""
    loguniform: tuple[float, float] | None = None
    """Float drawn log-uniformly from [low, high] (both > 0), e.g. learning rates."""
    randint: tuple[int, int] | None = None
    """Integer drawn from [low, high) (Tune's convention)."""
    choice: list[Any] | None = None
    """One of these values, drawn at random."""
    grid: list[Any] | None = None
    """Every one of these values (a grid axis: multiplies the trial count by its length)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchDim:
        set_ = [k for k in DIM_KINDS if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"give exactly one of {', '.join(DIM_KINDS)} (got {set_ or 'none'})")
        if self.loguniform is not None and min(self.loguniform) <= 0:
            raise ValueError("loguniform bounds must be > 0")
        return self


def default_search_space() -> dict[str, SearchDim]:
    """UniSpeech's knobs: how often the CTC head sees quantized features, and SpecAugment masking."""
    return {
        "model.replace_prob": SearchDim(uniform=(0.0, 0.9)),
        "model.mask_time_prob": SearchDim(uniform=(0.05, 0.5)),
        "model.mask_time_length": SearchDim(choice=[2, 4, 6, 10]),
    }


class SweepSection(Section):
    """What one trial runs and how trials are searched, scheduled and stopped."""

    name: SafeName = "sweep"
    """Stable sweep name, one safe directory name (config/names.py): the Tune experiment directory; rerun with
    --resume and the same name to continue."""
    storage_path: str = "runs/sweeps"
    """Tune experiment storage (local/NFS path, made absolute); trial training runs go to <name>-trials/ beside it."""
    pretrain_config: str = "configs/tiny.yaml"
    """Pretraining job config every trial starts from (python -m jobs.pretrain YAML)."""
    pretrain_overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted-key overrides applied to every trial's pretraining (e.g. a short train.max_steps)."""
    finetune_config: str | None = None
    """Optional fine-tuning job config run after each trial's pretraining (init_from is set to its export)."""
    finetune_overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted-key overrides of every trial's fine-tuning."""
    init_ctc_head: bool = False
    """Start each trial's fine-tuning head from its pretraining CTC head (as jobs.crosslingual does); needs a
    pretraining vocabulary that covers the fine-tuning one (e.g. the experiment's merged vocab.json)."""
    search_space: dict[str, SearchDim] = Field(default_factory=default_search_space)
    """Dotted keys of the pretraining job config -> distribution (uniform, loguniform, randint, choice, grid)."""
    metric: str | None = None
    """Reported metric to optimise; default dev_per with fine-tuning, else dev_loss."""
    mode: Literal["min", "max"] = "min"
    """Whether lower or higher metric is better."""
    num_samples: int = Field(8, ge=1)
    """Samples drawn from the space (each grid point is sampled num_samples times)."""
    max_concurrent: int | None = Field(None, ge=1)
    """Trials running at once; None = as many as the cluster's CPUs (or GPUs) fit."""
    scheduler: Literal["asha", "fifo"] = "asha"
    """asha: asynchronous successive halving stops poor trials at rungs of trial_step; fifo: run all to the end."""
    grace_period: int | None = Field(None, ge=1)
    """ASHA: trial steps before a trial can be stopped (None = the first report, checkpoint.every_steps)."""
    reduction_factor: float = Field(2.0, gt=1)
    """ASHA: 1/reduction_factor of trials continue at each rung."""
    seed: int | None = 0
    """Seed of the random search (None = unseeded)."""


class SweepJobConfig(Section):
    """`python -m jobs.sweep`: Ray Tune over Ray Train trials, each tracked as a nested MLflow run."""

    sweep: SweepSection = Field(default_factory=SweepSection)
    """Trial recipe, search space, scheduler, concurrency."""
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    """MLflow: the sweep's parent run; trials log nested runs into the same experiment."""
    ray: RaySection = Field(default_factory=RaySection)
    """How to reach or start Ray."""
