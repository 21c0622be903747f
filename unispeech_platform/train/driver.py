"""Driver side of a training job: validate and resolve everything, connect to Ray, fit a TorchTrainer.

The only place that knows about TorchTrainer, RunConfig and Ray datasets. Order matters: tracking is checked
and storage conflicts are detected before Ray starts, so configuration mistakes fail fast and cheaply.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unispeech_platform.config import PretrainJobConfig, RaySection, flatten, to_yaml
from unispeech_platform.tracking import (
    check_reachable,
    log_job_end,
    log_job_start,
    open_run,
    resolve_tracking_uri,
)
from unispeech_platform.train.loop import train_loop_per_worker
from unispeech_platform.train.worker_args import WorkerArgs

log = logging.getLogger("unispeech.driver")


class JobSetupError(RuntimeError):
    """Something the driver can tell is wrong before any Ray work starts."""


@dataclass
class JobResult:
    run_dir: str
    """<storage_path>/<name>: Ray Train's run directory (checkpoints)."""
    export_dir: str
    """Consolidated transformers-format model."""
    run_id: str | None
    """MLflow run id."""
    tracking_uri: str | None
    metrics: dict[str, Any]
    """Metrics of the last report (rank 0)."""
    checkpoint: str | None
    """Path/URI of the latest checkpoint."""


def connect_ray(section: RaySection) -> None:
    """Join the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a local Ray with more logical
    CPUs than cores: train workers take whole CPUs and Ray Data's read tasks must still be schedulable."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        num_cpus = section.local_num_cpus or max(8, 4 * (os.cpu_count() or 1))
        # address="local": always a fresh local Ray; without it ray.init() joins any cluster a `ray start` left
        # running on this machine (and then refuses num_cpus).
        ray.init(address="local", num_cpus=num_cpus, runtime_env=section.runtime_env or None)


def _configure_ray_data(section: RaySection) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    for key, value in section.data_context.items():
        if not hasattr(ctx, key):
            raise JobSetupError(f"ray.data_context.{key}: not a ray.data.DataContext attribute")
        setattr(ctx, key, value)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _version_tags(job: PretrainJobConfig, kind: str) -> dict[str, str]:
    import deepspeed
    import ray
    import torch

    return {
        "task": kind,
        "git_commit": os.environ.get("UNISPEECH_GIT_COMMIT") or _git_commit(),
        "ray_version": ray.__version__,
        "deepspeed_version": deepspeed.__version__,
        "torch_version": torch.__version__,
        "num_workers": str(job.train.num_workers),
        "zero_stage": str(job.train.zero_stage),
        "use_gpu": str(job.train.use_gpu),
    }


def vocab_path(job: PretrainJobConfig) -> str | None:
    """The corpus' phone vocabulary (written next to the partitions by the corpus builders)."""
    path = job.data.resolved_vocab_path()
    return str(path.resolve()) if path.is_file() else None


def model_overrides(job: PretrainJobConfig, vocab: str | None) -> dict[str, Any]:
    """The model section plus vocabulary-derived sizes (CTC classes = phones incl. blank/pad at id 0)."""
    overrides = dict(job.model)
    if vocab is not None:
        from unispeech_core import PhoneTokenizer

        tok = PhoneTokenizer.from_file(vocab)
        overrides.setdefault("vocab_size", len(tok))
        overrides.setdefault("num_ctc_classes", len(tok))
        overrides.setdefault("pad_token_id", tok.pad_token_id)
    return overrides


def preflight(job: PretrainJobConfig, *, resume: bool) -> tuple[str | None, str]:
    """Checks that need no Ray: tracking reachable, run directory state matches --resume. Returns
    (tracking_uri or None, run_dir)."""
    uri = None
    if job.tracking.enabled:
        uri = resolve_tracking_uri(job.tracking)
        check_reachable(uri, job.tracking.connect_timeout_s)
    finetune = getattr(job, "finetune", None)
    if finetune is not None and finetune.init_from:
        from unispeech_platform.train.tasks import load_dir

        load_dir(finetune.init_from)  # FileNotFoundError now, not on the workers after Ray started
    storage = job.checkpoint.resolved_storage()
    run_dir = f"{storage.rstrip('/')}/{job.checkpoint.name}"
    if "://" not in storage:
        exists = Path(run_dir).exists()
        if exists and not resume:
            raise JobSetupError(f"{run_dir} exists: pass --resume to continue it, or set checkpoint.name")
        if resume and not exists:
            raise JobSetupError(f"--resume: nothing to resume at {run_dir}")
    return uri, run_dir


def run_training(
    job: PretrainJobConfig,
    *,
    kind: str = "pretrain",
    resume: bool = False,
    run_id: str | None = None,
    callbacks: list[Any] | None = None,
) -> JobResult:
    """Run a pretraining (kind="pretrain") or fine-tuning (kind="ctc") job to completion.

    ``run_id``: log into this existing MLflow run instead of opening one (e.g. a sweep's nested trial run);
    ``callbacks``: extra Ray Train callbacks (e.g. Tune's TuneReportCallback when run as a Tune trial)."""
    uri, run_dir = preflight(job, resume=resume)
    vocab = vocab_path(job)
    overrides = model_overrides(job, vocab)
    export_dir = job.checkpoint.resolved_export_dir()

    connect_ray(job.ray)
    _configure_ray_data(job.ray)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from unispeech_platform.data.pipeline import build_dataset, exactly_once_data_config
    from unispeech_platform.data.schema import CorpusError

    datasets = {"train": build_dataset(job.data, job.data.train_splits)}
    try:
        datasets["dev"] = build_dataset(job.data, job.data.eval_splits)
    except CorpusError as e:
        log.warning("no dev split (%s): evaluation is skipped", e)

    if uri is not None:
        run_id = run_id or open_run(uri, job.tracking, job.checkpoint.name, resume=resume)
        log_job_start(uri, run_id, flatten(job.model_dump(mode="json")), _version_tags(job, kind), to_yaml(job))

    args = WorkerArgs(kind, job, overrides, vocab, export_dir, uri, run_id)
    ck = job.checkpoint
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=args.to_dict(),
        scaling_config=ScalingConfig(
            num_workers=job.train.num_workers,
            use_gpu=job.train.use_gpu,
            resources_per_worker={"CPU": job.train.cpus_per_worker, **({"GPU": 1} if job.train.use_gpu else {})},
            placement_strategy=job.train.placement_strategy,
        ),
        run_config=RunConfig(
            name=ck.name,
            storage_path=job.checkpoint.resolved_storage(),
            failure_config=FailureConfig(max_failures=job.train.max_failures),
            callbacks=list(callbacks or []),
            checkpoint_config=CheckpointConfig(
                num_to_keep=ck.keep,
                checkpoint_score_attribute=ck.score_metric,
                checkpoint_score_order=ck.score_order if ck.score_metric else "max",
            ),
        ),
        datasets=datasets,
        dataset_config=exactly_once_data_config(),
    )
    status = "FAILED"
    try:
        result = trainer.fit()
        status = "FINISHED"
    finally:
        if uri is not None and run_id is not None:
            artifacts = {"model": export_dir if job.tracking.log_model else None}
            log_job_end(uri, run_id, status=status, artifact_dirs=artifacts, vocab=vocab)
    ckpt = result.checkpoint.path if result.checkpoint else None
    return JobResult(run_dir, export_dir, run_id, uri, dict(result.metrics or {}), ckpt)

