"""Distributed training on Ray Train + DeepSpeed: driver (run_training), worker loop, tasks, checkpoints."""

from unispeech_platform.train.driver import JobResult, JobSetupError, connect_ray, preflight, run_training

__all__ = ["JobResult", "JobSetupError", "connect_ray", "preflight", "run_training"]
