"""Joining or starting Ray: one place, one local-CPU default for every job."""

from __future__ import annotations

import logging
import os

from unispeech_platform.config.sections import RaySection
from unispeech_platform.runtime.console import progress_bars, quiet_libraries, verbose
from unispeech_platform.runtime.errors import JobSetupError


def local_num_cpus(requested: int | None = None) -> int:
    """Logical CPUs of a locally started Ray: more than cores, because train workers take whole CPUs and Ray
    Data's read tasks must still be schedulable (with exactly as many as cores, a 2-core machine deadlocks;
    docs/architecture.md#ray-deepspeed-and-mlflow-facts)."""
    return requested or max(8, 4 * (os.cpu_count() or 1))


def connect_ray(section: RaySection) -> None:
    """Join the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a private local Ray. Unless
    verbose, workers' output is not forwarded to this console (jobs print their own progress lines) and Ray
    Data's progress bars are off (also when verbose, with --no-progress)."""
    import ray
    import ray.data

    quiet_libraries()
    ray.data.DataContext.get_current().enable_progress_bars = verbose() and progress_bars()
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": verbose(), "logging_level": logging.INFO if verbose() else logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        num_cpus = local_num_cpus(section.local_num_cpus)
        # The raylet warns ("N PYTHON worker processes have been started ... 4x the maximum expected startup
        # concurrency (2)") once workers exceed 4 x this limit, which defaults to the physical cores: our local
        # Ray runs more logical CPUs than cores on purpose, so the expected concurrency is its CPU count. The
        # raylet reads it from its environment; a user's own setting wins.
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(num_cpus))
        if not verbose():  # "Token authentication is enabled/disabled for this Ray cluster": about clusters
            # others can reach; this one is private to the job (docs/cluster.md covers tokens for real clusters)
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # address="local": always a fresh local Ray; without it ray.init() joins any cluster a `ray start` left
        # running on this machine (and then refuses num_cpus).
        ray.init(address="local", num_cpus=num_cpus, runtime_env=section.runtime_env or None, **quiet)


def cluster_gpus() -> int:
    """GPUs the connected Ray cluster has now."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def decide_use_gpu(requested: bool | None, gpus_needed: int) -> bool:
    """train.use_gpu / evaluate.use_gpu: an explicit value wins; None (auto) uses GPUs when the cluster has one
    for every worker or actor (one GPU each)."""
    if requested is not None:
        return requested
    return cluster_gpus() >= gpus_needed


def configure_ray_data(section: RaySection) -> None:
    """Apply ``ray.data_context`` to the driver's DataContext (datasets built afterwards inherit it). Separate
    from connect_ray: each training stage of an experiment applies its own section on the shared Ray."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    for key, value in section.data_context.items():
        if not hasattr(ctx, key):
            raise JobSetupError(f"ray.data_context.{key}: not a ray.data.DataContext attribute")
        setattr(ctx, key, value)
