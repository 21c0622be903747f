"""Joining or starting Ray: one place, one local-CPU default for every job."""

from __future__ import annotations

import os

from unispeech_platform.config.sections import RaySection
from unispeech_platform.runtime.errors import JobSetupError


def local_num_cpus(requested: int | None = None) -> int:
    """Logical CPUs of a locally started Ray: more than cores, because train workers take whole CPUs and Ray
    Data's read tasks must still be schedulable (with exactly as many as cores, a 2-core machine deadlocks;
    docs/architecture.md#ray-deepspeed-and-mlflow-facts)."""
    return requested or max(8, 4 * (os.cpu_count() or 1))


def connect_ray(section: RaySection) -> None:
    """Join the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a private local Ray."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # address="local": always a fresh local Ray; without it ray.init() joins any cluster a `ray start` left
        # running on this machine (and then refuses num_cpus).
        ray.init(address="local", num_cpus=local_num_cpus(section.local_num_cpus),
                 runtime_env=section.runtime_env or None)


def configure_ray_data(section: RaySection) -> None:
    """Apply ``ray.data_context`` to the driver's DataContext (datasets built afterwards inherit it). Separate
    from connect_ray: each training stage of an experiment applies its own section on the shared Ray."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    for key, value in section.data_context.items():
        if not hasattr(ctx, key):
            raise JobSetupError(f"ray.data_context.{key}: not a ray.data.DataContext attribute")
        setattr(ctx, key, value)
