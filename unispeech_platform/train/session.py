"""What one training attempt works with, built once on every worker: ranks and device, the task and its DeepSpeed
engine, the restored state, the rank-0 tracker and the lockstep batch feed (docs/training.md#what-a-step-does).

Setup is collective in a fixed order on every rank (hardware facts, the checkpoint verdicts, the placement tags);
Ray appears here only at the worker boundary (get_context, get_device, get_dataset_shard).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from unispeech_core import PhoneTokenizer
from unispeech_platform.config import PretrainJobConfig
from unispeech_platform.config.sections import TrainSection
from unispeech_platform.runtime.console import emit, task_line
from unispeech_platform.runtime.hardware import (
    HardwareFacts,
    PrecisionChoice,
    detect_hardware,
    merge_facts,
    resolve_precision,
    threads_per_worker,
)
from unispeech_platform.tracking import Tracker, make_tracker
from unispeech_platform.train.batches import LockstepBatches
from unispeech_platform.train.checkpoint import TrainState, restore
from unispeech_platform.train.engine import autocast, build_engine
from unispeech_platform.train.health import HealthMonitor, health_monitor
from unispeech_platform.train.metrics import all_gather_items
from unispeech_platform.train.restarts import Place
from unispeech_platform.train.tasks import Task, task_for_job
from unispeech_platform.train.worker_args import WorkerArgs


@dataclass
class Session:
    """One attempt's training context; ``state`` and ``last_report`` change as it trains, the rest is fixed."""

    args: WorkerArgs
    place: Place
    """Where the attempt is, for the crash-loop record (train/restarts.py)."""
    rank: int
    world: int
    device: torch.device
    tokenizer: PhoneTokenizer | None
    task: Task
    engine: Any
    """The DeepSpeed engine (train/engine.py)."""
    amp: contextlib.AbstractContextManager | None
    """The forward pass' autocast for the chosen precision."""
    state: TrainState
    tracker: Tracker
    feed: LockstepBatches
    say: Callable[[str], None]
    """A console line from rank 0 to the driver (other ranks: nothing)."""
    health: HealthMonitor
    """Names failure states of the objective (train/health.py)."""
    last_report: dict[str, float] = field(default_factory=dict)
    """The latest logged metrics (and dev scores): reported with each checkpoint, written into the model card."""
    stopped_on: str | None = None
    """The failure state (train.stop_on) that ends the run after this update, if any."""

    @property
    def job(self) -> PretrainJobConfig:
        return self.args.job

    @property
    def train(self) -> TrainSection:
        return self.args.job.train

    @property
    def is_last_update(self) -> bool:
        """The run's last update: max_steps reached, or a stop_on state seen (evaluated, checkpointed, exported)."""
        return self.state.step == self.train.max_steps or self.stopped_on is not None


def start_session(args: WorkerArgs, place: Place) -> Session:
    """Build everything on this worker: the same model on every rank (one seed), restored from the newest usable
    checkpoint, then per-rank seeds, the tracker and the batch feed positioned where that checkpoint left off."""
    import ray.train
    import ray.train.torch

    job, train = args.job, args.job.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if train.use_gpu else torch.device("cpu")
    tokenizer = PhoneTokenizer(args.vocab) if args.vocab else None
    say = _rank0_console(args.console, rank)
    facts, choice, threads = _hardware_and_precision(train)
    torch.set_num_threads(threads)

    # Identical initial weights on every rank; afterwards masks/negatives differ per rank but are reproducible.
    torch.manual_seed(train.seed)
    task = task_for_job(job, tokenizer)
    engine = build_engine(task.build_model(), train, job.optim, world, choice.precision)
    amp = autocast(choice.precision, bool(train.use_gpu))
    place.where = "the restore of the latest checkpoint"
    state = restore(engine, say=say) or TrainState(run_id=args.run_id)
    engine.train()  # from_pretrained returns eval mode: dropout, SpecAugment and replace mixing are train-only
    torch.manual_seed(train.seed + 7919 * rank + state.step)
    tracker = _open_tracker(args, rank, state.run_id, say)
    say(_tag_placement(tracker, job.task))
    tracker.set_tags({**choice.as_tags(), "hardware": facts.describe(), "device": str(device),
                      "threads_per_worker": str(threads)})
    say(task_line(job.task, f"precision {choice.precision} ({choice.reason}); {world} x {device}, "
                            f"{threads} thread(s) each"))
    if state.step > 0:
        say(task_line(job.task, f"resumed at update {state.step} (epoch {state.epoch}, batch {state.position})"))
    health = health_monitor(train, task.config, pretraining=job.task == "pretrain", seen=state.health_seen)
    return Session(args, place, rank, world, device, tokenizer, task, engine, amp, state, tracker,
                   _train_feed(job, state, device), say, health)


def _open_tracker(args: WorkerArgs, rank: int, run_id: str | None, say: Callable[[str], None]) -> Tracker:
    """Rank 0 logs to MLflow, the others to nothing; best effort through an outage
    (docs/training.md#tracking-outages). The one place the loop makes its tracker."""
    return make_tracker(args.tracking_uri if rank == 0 else None, run_id, layout=args.layout, warn=say)


def _train_feed(job: PretrainJobConfig, state: TrainState, device: torch.device) -> LockstepBatches:
    """This rank's training shard, re-opened at the restored epoch with the consumed micro-batches skipped."""
    import ray.train

    from unispeech_platform.data.pipeline import iter_batches

    shard = ray.train.get_dataset_shard("train")
    return LockstepBatches(lambda epoch: iter_batches(shard, job.data, epoch=epoch, train=True),
                           epoch=state.epoch, skip=state.position, device=device)


def _rank0_console(console: Any, rank: int) -> Callable[[str], None]:
    def say(line: str) -> None:  # rank 0's lines reach the driver's console
        if rank == 0:
            emit(console, line)

    return say


def _tag_placement(tracker: Tracker, task: str) -> str:
    """Record which Ray nodes the ranks run on (collective: every rank contributes its node id and pid); returns
    the console line naming each rank's process, so that a person can find (or stop) it."""
    import os

    import ray

    placed = all_gather_items([(ray.get_runtime_context().get_node_id(), os.getpid())])
    nodes = [node for node, _ in placed]
    tracker.set_tags({"worker_nodes": ",".join(n[:12] for n in nodes), "num_nodes": str(len(set(nodes)))})
    ranks = ", ".join(f"rank {r} pid {pid} on node {node[:12]}" for r, (node, pid) in enumerate(placed))
    return task_line(task, f"workers: {ranks}")


def _hardware_and_precision(train: TrainSection) -> tuple[HardwareFacts, PrecisionChoice, int]:
    """Collective: the hardware facts every rank shares, the precision they call for (one for all ranks), and the
    torch threads of this worker (the CPUs Ray reserved for it, never more than the machine has)."""
    facts = merge_facts(all_gather_items([detect_hardware()]))
    choice = resolve_precision(train.precision, use_gpu=bool(train.use_gpu), facts=facts)
    return facts, choice, threads_per_worker(train.cpus_per_worker, facts.cpu_count)
