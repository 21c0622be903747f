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

from unispeech_core import PhoneTokenizer
from unispeech_platform.config import (
    TASK_SPECS,
    FinetuneJobConfig,
    PretrainJobConfig,
    loggable_params,
    to_yaml,
)
from unispeech_platform.config.redact import redact_uri
from unispeech_platform.runtime.console import ConsoleLines
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.runtime.ray_session import (
    cluster_gpus,
    configure_ray_data,
    connect_ray,
    decide_use_gpu,
)
from unispeech_platform.tracking import RunTracking, checked_tracking_uri, resolve_tracking_uri, run_line
from unispeech_platform.train.init_from import continue_from
from unispeech_platform.train.loop import train_loop_per_worker
from unispeech_platform.train.preemption import SigtermFlagCallback
from unispeech_platform.train.restarts import RestartHistory, fit_or_stop, new_fit_id
from unispeech_platform.train.worker_args import WorkerArgs

log = logging.getLogger("unispeech.driver")


@dataclass
class JobResult:
    layout: RunLayout
    """Every output path of the run (run dir, checkpoints, export, best export)."""
    run_id: str | None
    """MLflow run id."""
    tracking_uri: str | None
    metrics: dict[str, Any]
    """Metrics of the last report (rank 0)."""
    checkpoint: str | None
    """Path/URI of the latest checkpoint."""

    @property
    def run_dir(self) -> str:
        return self.layout.run_dir

    @property
    def export_dir(self) -> str:
        return self.layout.export_dir

    def summary(self) -> list[str]:
        """What a user needs next: the model, the best model (fine-tuning), the checkpoint, the MLflow run."""
        lines = [f"model: {self.layout.export_dir}"]
        if os.path.isdir(self.layout.best_export_dir):
            lines.append(f"best model (by dev score): {self.layout.best_export_dir}")
        return [*lines, f"checkpoint: {self.checkpoint}", run_line(self.run_id, self.tracking_uri)]


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _version_tags(job: PretrainJobConfig) -> dict[str, str]:
    import deepspeed
    import ray
    import torch

    return {
        "task": job.task,
        "git_commit": os.environ.get("UNISPEECH_GIT_COMMIT") or _git_commit(),
        "ray_version": ray.__version__,
        "deepspeed_version": deepspeed.__version__,
        "torch_version": torch.__version__,
        "num_workers": str(job.train.num_workers),
        "zero_stage": str(job.train.zero_stage),
        "use_gpu": str(job.train.use_gpu),
    }


def record_start(tracking: RunTracking, job: PretrainJobConfig, run_id: str, *, reopen: bool) -> None:
    """The run's start: the resolved config and environment tags, the corpus as dataset inputs (the training
    splits, and the dev splits when there are any), and the system-metrics sampler when asked for
    (docs/training.md#mlflow)."""
    from unispeech_platform.data.dataset_record import describe_corpus
    from unispeech_platform.data.schema import CorpusError

    tracking.log_job_start(run_id, loggable_params(job), _version_tags(job), to_yaml(job), reopen=reopen)
    for context, splits in (("training", job.data.train_splits), ("validation", job.data.eval_splits)):
        try:
            tracking.log_dataset(run_id, describe_corpus(job.data, list(splits)).as_dict(), context)
        except (CorpusError, OSError) as e:  # no dev split; a store gone since the preflight read it
            if context == "training":
                log.warning("the corpus is not recorded as the run's dataset input: %s", redact_uri(str(e)))
    tracking.watch_system(run_id, job.tracking)


def vocab_path(job: PretrainJobConfig) -> str | None:
    """The corpus' phone vocabulary (written next to the partitions by the corpus builders)."""
    from unispeech_platform.data.storage import local_copy, locate

    path = job.data.resolved_vocab_path()  # a local path or a URI (object storage: copied, docs/data.md)
    return local_copy(path) if locate(path).is_file() else None


def preflight(job: PretrainJobConfig, *, resume: bool, run_given: bool = False) -> tuple[str | None, RunLayout]:
    """Checks that need no Ray, each failing with one line (exit 3): the corpus (paths, splits, schema, a sample
    of data pages, vocabulary), the augmentation's noise and impulse-response folders, the initial weights and their config.json (typed like the model section), the
    export directory, tracking reachable, run directory state matches --resume. Returns (tracking_uri or None,
    the run's layout).

    ``run_given``: the caller already holds the job's MLflow run (an experiment's stage, a sweep's trial), so the
    server is not checked: from here on tracking is best effort, and an outage between two stages of a long
    experiment keeps records for a later replay instead of failing the stage (docs/training.md#tracking-outages)."""
    from unispeech_platform.data.audio_bank import check_augment_folders
    from unispeech_platform.data.batch_order import blocked_order_warning
    from unispeech_platform.data.validate import check_corpus
    from unispeech_platform.tracking.model_uri import is_model_uri
    from unispeech_platform.train.preflight import check_export_dirs, check_init_model

    parts = check_corpus(job.data, job.data.train_splits)
    check_augment_folders(job.data.augment)
    blocked = blocked_order_warning(parts, job.data, job.train.num_workers)
    if blocked:
        log.warning(blocked)
    if isinstance(job, FinetuneJobConfig) and job.finetune.init_from and not is_model_uri(job.finetune.init_from):
        check_init_model(job.finetune.init_from)  # a URI is checked once downloaded (run_training)
    if run_given:
        uri = resolve_tracking_uri(job.tracking) if job.tracking.enabled else None
    else:
        uri = checked_tracking_uri(job.tracking)  # None when tracking is off
    layout = RunLayout.of(job.checkpoint)
    check_export_dirs(layout)
    if layout.is_local:
        exists = Path(layout.run_dir).exists()
        if exists and not resume:
            raise JobSetupError(f"{layout.run_dir} exists: pass --resume to continue it, or set checkpoint.name")
        if resume and not exists:
            raise JobSetupError(f"--resume: nothing to resume at {layout.run_dir}")
    return uri, layout


def with_local_init(job: PretrainJobConfig, layout: RunLayout) -> PretrainJobConfig:
    """The job with a model URI as init_from downloaded (train/init_from.py) and, for fine-tuning, checked as a
    local init_from is in preflight (continued pretraining checks it in continue_from)."""
    from unispeech_platform.train.init_from import fetch_init_from
    from unispeech_platform.train.preflight import check_init_model

    fetched = fetch_init_from(job, layout)
    if fetched is not job and isinstance(fetched, FinetuneJobConfig):
        check_init_model(fetched.finetune.init_from)
    return fetched


def with_devices(job: PretrainJobConfig) -> PretrainJobConfig:
    """The job with train.use_gpu decided (auto: a GPU per worker when the cluster has them)."""
    use_gpu = decide_use_gpu(job.train.use_gpu, job.train.num_workers)
    if job.train.precision == "fp16" and not use_gpu:
        raise JobSetupError(f"train.precision=fp16 needs GPUs, and the Ray cluster has {cluster_gpus()} for "
                            f"{job.train.num_workers} workers (use auto, bf16 or fp32)")
    return job.model_copy(update={"train": job.train.model_copy(update={"use_gpu": use_gpu})})


def banner(job: PretrainJobConfig) -> str:
    """The stage line a job starts with (precision is decided on the workers and printed by rank 0)."""
    t = job.train
    where = f"{t.num_workers} GPU worker(s)" if t.use_gpu else f"{t.num_workers} CPU worker(s) x {t.cpus_per_worker:g} CPU"
    return (f"== {job.task}: {job.checkpoint.name}, {t.max_steps} updates on {job.data.path} "
            f"({','.join(job.data.train_splits)}), {where}, ZeRO-{t.zero_stage}, precision {t.precision}")


def _datasets(job: PretrainJobConfig) -> dict[str, Any]:
    """The Ray datasets of the train and dev splits (no dev split: evaluation is skipped)."""
    from unispeech_platform.data.pipeline import build_dataset
    from unispeech_platform.data.schema import CorpusError

    datasets = {"train": build_dataset(job.data, job.data.train_splits, shuffle=True)}
    try:
        datasets["dev"] = build_dataset(job.data, job.data.eval_splits)
    except CorpusError as e:
        log.warning("no dev split (%s): evaluation is skipped", e)
    return datasets


def _trainer(args: WorkerArgs, datasets: dict[str, Any], callbacks: list[Any]) -> Any:
    """The TorchTrainer of the job: its workers, stable run name and storage, restarts, checkpoint retention."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from unispeech_platform.data.pipeline import exactly_once_data_config
    from unispeech_platform.train.checkpoint import resumed_epoch

    job, layout, ck = args.job, args.layout, args.job.checkpoint
    return TorchTrainer(
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
            storage_path=layout.storage,
            failure_config=FailureConfig(max_failures=job.train.max_failures),
            callbacks=[SigtermFlagCallback(), *callbacks],  # SIGTERM saves a checkpoint first
            checkpoint_config=CheckpointConfig(
                num_to_keep=ck.keep,
                checkpoint_score_attribute=ck.score_metric,
                checkpoint_score_order=ck.score_order if ck.score_metric else "max",
            ),
        ),
        datasets=datasets,
        dataset_config=exactly_once_data_config(start_epoch=lambda: resumed_epoch(layout.run_dir)),
    )


def run_training(
    job: PretrainJobConfig,
    *,
    resume: bool = False,
    run_id: str | None = None,
    callbacks: list[Any] | None = None,
) -> JobResult:
    """Run a training job (its task: pretrain, ctc or lid) to completion.

    ``run_id``: log into this existing MLflow run instead of opening one (e.g. a sweep's nested trial run);
    ``callbacks``: extra Ray Train callbacks (e.g. Tune's TuneReportCallback when run as a Tune trial)."""
    uri, layout = preflight(job, resume=resume, run_given=run_id is not None)
    job = with_local_init(job, layout)  # a runs:/ or models:/ init_from: downloaded into the run dir, checked
    vocab = vocab_path(job)
    vocab_map = PhoneTokenizer.from_file(vocab).vocab if vocab else None  # read once; workers get the dict
    job = continue_from(job, vocab_map)  # pretrain.init_from: checked and merged before Ray (train/init_from.py)
    export_dir = layout.export_dir

    connect_ray(job.ray)
    configure_ray_data(job.ray)
    job = with_devices(job)
    print(banner(job), flush=True)
    datasets = _datasets(job)

    tracking = RunTracking(uri, layout) if uri is not None else None  # docs/training.md#tracking-outages
    if tracking is not None:
        given = run_id is not None  # created ahead by the caller (possibly SCHEDULED): marked RUNNING now
        run_id = run_id or tracking.open_job_run(job.tracking, job.checkpoint.name, resume=resume)
        record_start(tracking, job, run_id, reopen=given)

    console = ConsoleLines()
    fit_id = new_fit_id()
    args = WorkerArgs(job=job, vocab=vocab_map, layout=layout, tracking_uri=uri, run_id=run_id,
                      console=console.queue, fit_id=fit_id)
    trainer = _trainer(args, datasets, callbacks or [])
    status = "FAILED"
    try:
        with console.printing():
            result = fit_or_stop(trainer, RestartHistory(layout.run_dir, fit_id))  # crash loop: one line
        status = "FINISHED"
    finally:
        if tracking is not None and run_id is not None:
            t = job.tracking  # a finished CTC job's export becomes the MLflow Model at runs:/<id>/model
            logs_model = t.log_model and TASK_SPECS[job.task].logs_mlflow_model  # config/tasks.py
            model = export_dir if logs_model and status == "FINISHED" else None
            artifacts = {"export": export_dir if t.log_model and model is None else None}
            try:  # best effort: a tracking failure here must not turn a finished run into a failed one
                tracking.log_job_end(run_id, status=status, artifact_dirs=artifacts, vocab=vocab, phone_model=model,
                                     registered_model=t.registered_model)
            except Exception as e:
                print(f"WARNING: recording the end of MLflow run {run_id} failed: {type(e).__name__}: "
                      f"{redact_uri(str(e))[:300]}", flush=True)
    ckpt = result.checkpoint.path if result.checkpoint else None
    return JobResult(layout, run_id, uri, dict(result.metrics or {}), ckpt)

