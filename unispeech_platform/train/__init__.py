"""Distributed training on Ray Train + DeepSpeed: driver (run_training), worker loop, tasks, engine, checkpoints."""

from unispeech_platform.train.driver import JobResult, preflight, run_training

__all__ = ["JobResult", "preflight", "run_training"]
