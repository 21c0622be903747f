"""Search space YAML -> Tune domains (a sampled trial config is a dict of typed values by dotted key, applied with
``config.with_overrides``), and the fail-fast check that every trial config will validate (run on the driver
before Ray starts)."""

from __future__ import annotations

from typing import Any

from unispeech_platform.config import (
    ConfigError,
    FinetuneJobConfig,
    PretrainJobConfig,
    load_config,
)
from unispeech_platform.tune.config import SearchDim, SweepSection


def to_tune(space: dict[str, SearchDim]) -> dict[str, Any]:
    """Tune param_space with the dotted keys kept flat (one Tune config entry per swept key)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, d in space.items():
        if d.uniform is not None:
            out[key] = tune.uniform(*d.uniform)
        elif d.loguniform is not None:
            out[key] = tune.loguniform(*d.loguniform)
        elif d.randint is not None:
            out[key] = tune.randint(*d.randint)
        elif d.choice is not None:
            out[key] = tune.choice(d.choice)
        else:
            out[key] = tune.grid_search(d.grid)
    return out


def representative(d: SearchDim) -> Any:
    """A value of the dimension for validation: its lower bound or first option."""
    for kind in ("uniform", "loguniform", "randint", "choice", "grid"):
        v = getattr(d, kind)
        if v is not None:
            return v[0]
    raise AssertionError("unreachable")


def default_metric(sweep: SweepSection) -> str:
    return sweep.metric or ("dev_per" if sweep.finetune_config else "dev_loss")


def validate_sweep(sweep: SweepSection) -> tuple[PretrainJobConfig, FinetuneJobConfig | None]:
    """Load both stage configs with the fixed overrides and a value of every swept key; raise ConfigError naming
    the problem. Also checks that every Tune report carries the metric (eval cadence divides checkpoint cadence)."""
    sample = {k: representative(d) for k, d in sweep.search_space.items()}  # a value of every swept key
    pre = load_config(PretrainJobConfig, sweep.pretrain_config, values={**sweep.pretrain_overrides, **sample})
    ft = None
    if sweep.finetune_config:
        ft = load_config(FinetuneJobConfig, sweep.finetune_config, values=sweep.finetune_overrides)
    for stage, job in (("pretrain", pre), ("finetune", ft)):
        if job is None:
            continue
        ev, ck = job.train.eval_every, job.checkpoint.every_steps
        if ev == 0 or ck % ev:
            raise ConfigError(
                f"{stage}: trials report to Tune at every checkpoint (checkpoint.every_steps={ck}); set "
                f"train.eval_every (now {ev}) to a divisor of it so that every report carries fresh dev metrics"
            )
    total, grace = trial_steps(pre, ft), grace_period(sweep, pre)
    if sweep.scheduler == "asha" and grace > total:
        raise ConfigError(
            f"sweep.grace_period ({grace}) exceeds the {total} steps of a trial: ASHA could never stop one "
            "(lower it, or use sweep.scheduler=fifo)"
        )
    return pre, ft


def trial_steps(pre: PretrainJobConfig, ft: FinetuneJobConfig | None) -> int:
    """ASHA's time axis: updates across the pretraining and fine-tuning stages of one trial."""
    return pre.train.max_steps + (ft.train.max_steps if ft else 0)


def grace_period(sweep: SweepSection, pre: PretrainJobConfig) -> int:
    """sweep.grace_period, else the first report (one pretraining checkpoint)."""
    return sweep.grace_period or pre.checkpoint.every_steps
