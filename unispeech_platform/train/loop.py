"""The training loop every Ray Train worker runs, top to bottom.

Ray appears only at the worker boundary (get_context, get_dataset_shard, and get_checkpoint/report inside
checkpointing). Metrics are synced across ranks only when logging; side effects (MLflow, exported files) happen
on rank 0 behind the Tracker interface.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any

import torch

from unispeech_platform.runtime.console import Eta, dev_line, emit, task_line, update_line
from unispeech_platform.runtime.hardware import (
    HardwareFacts,
    PrecisionChoice,
    detect_hardware,
    merge_facts,
    resolve_precision,
    threads_per_worker,
)
from unispeech_platform.tracking import make_tracker, spool_path
from unispeech_platform.train.batches import LockstepBatches, lockstep
from unispeech_platform.train.checkpoint import TrainState, export_model, restore, save_and_report
from unispeech_platform.train.engine import autocast, build_engine, grad_norm, set_lr, state_memory_mb
from unispeech_platform.train.metrics import Window, all_finite, all_gather_items, all_reduce_sums
from unispeech_platform.train.schedules import learning_rate
from unispeech_platform.train.tasks import Task, improves, task_for_job
from unispeech_platform.train.worker_args import WorkerArgs

log = logging.getLogger("unispeech.train")
MAX_CONSECUTIVE_NONFINITE = 50


def train_loop_per_worker(raw_args: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from unispeech_core import PhoneTokenizer
    from unispeech_platform.data.pipeline import iter_batches

    args = WorkerArgs.from_dict(raw_args)
    job, train = args.job, args.job.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if train.use_gpu else torch.device("cpu")
    tokenizer = PhoneTokenizer.from_file(args.vocab) if args.vocab else None

    def say(line: str) -> None:  # rank 0's lines reach the driver's console
        if rank == 0:
            emit(args.console, line)

    facts, choice, threads = _hardware_and_precision(train)
    torch.set_num_threads(threads)

    # Identical initial weights on every rank; afterwards masks/negatives differ per rank but are reproducible.
    torch.manual_seed(train.seed)
    task = task_for_job(job, args.model, tokenizer)
    engine = build_engine(task.build_model(), train, job.optim, world, choice.precision)
    amp = autocast(choice.precision, bool(train.use_gpu))
    state = restore(engine, say=say) or TrainState(run_id=args.run_id)
    engine.train()  # from_pretrained returns eval mode: dropout, SpecAugment and replace mixing are train-only
    torch.manual_seed(train.seed + 7919 * rank + state.step)
    tracker = make_tracker(args.tracking_uri if rank == 0 else None, state.run_id,
                           spool=spool_path(args.layout), warn=say)  # best effort: docs/training.md#tracking-outages
    say(_tag_placement(tracker, job.task))
    tracker.set_tags({**choice.as_tags(), "hardware": facts.describe(), "device": str(device),
                      "threads_per_worker": str(threads)})
    say(task_line(job.task, f"precision {choice.precision} ({choice.reason}); {world} x {device}, "
                            f"{threads} thread(s) each"))
    if state.step > 0:
        say(task_line(job.task, f"resumed at update {state.step} (epoch {state.epoch}, batch {state.position})"))
    eta = Eta(state.step, train.max_steps)

    train_shard = ray.train.get_dataset_shard("train")
    feed = LockstepBatches(
        lambda epoch: iter_batches(train_shard, job.data, epoch=epoch, train=True),
        epoch=state.epoch,
        skip=state.position,
        device=device,
    )
    dropped_before = dict(state.dropped_rows)  # counts up to the restored checkpoint (all ranks)
    window = Window(device)
    last_report: dict[str, float] = {}

    while state.step < train.max_steps:
        lr = learning_rate(job.optim, state.step, train.max_steps)
        set_lr(engine, lr)
        scheduled = task.before_update(engine.module, state.step)
        started, wait_before, audio_before = time.perf_counter(), feed.wait_s, feed.audio_s

        accumulate_update(task, engine, feed, state, window, train.grad_accum_steps, device, amp)
        state.step += 1
        state.epoch, state.position = feed.epoch, feed.position
        window.add_update(
            lr=lr,
            grad_norm=grad_norm(engine),
            seconds=time.perf_counter() - started,
            wait_s=feed.wait_s - wait_before,
            audio_s=feed.audio_s - audio_before,
            **scheduled,
        )
        last = state.step == train.max_steps

        if state.step % train.log_every == 0 or last:
            metrics = window.reduce(world)
            for reason, n in all_reduce_sums(dict(feed.dropped), device).items():
                state.dropped_rows[reason] = dropped_before.get(reason, 0) + int(n)
                metrics[f"bad_rows/{reason}"] = state.dropped_rows[reason]
            metrics["nonfinite_skipped"] = state.nonfinite_skipped
            memory = all_reduce_sums(state_memory_mb(engine), device)  # mean per rank, measured
            metrics.update({k: v / world for k, v in memory.items()})
            tracker.log_metrics(metrics, state.step)
            last_report = metrics
            say(update_line(job.task, state.step, train.max_steps, metrics, eta(state.step)))
            _collapse_alarm(state, metrics, train, tracker, say)

        if (train.eval_every and state.step % train.eval_every == 0) or last:
            dev = _evaluate(task, engine, job, device)
            if dev:
                tracker.log_metrics(dev, state.step)
                say(dev_line(job.task, state.step, dev))
                last_report = {**last_report, **dev}
                score = dev.get(task.score_key)
                if task.keeps_best and improves(task.score_mode, score, state.best_score):
                    state.best_score = score
                    export_model(engine, args.layout.best_export_dir, tokenizer)

        if state.step % job.checkpoint.every_steps == 0 or last:
            save_and_report(engine, state, last_report, task.config)

    export_model(engine, args.layout.export_dir, tokenizer)


def accumulate_update(task: Task, engine, feed: LockstepBatches, state: TrainState, window: Window,
                      grad_accum_steps: int, device: torch.device,
                      amp: contextlib.AbstractContextManager | None = None) -> None:
    """The micro-batches of one optimizer update, each forward inside ``amp`` (the precision's autocast). A
    micro-batch whose loss is non-finite on any rank is skipped by every rank (no backward, no step: collectives
    stay matched and the weights untouched) and counted in ``state.nonfinite_skipped``; too many in a row stop
    the job."""
    done, consecutive_bad = 0, 0
    while done < grad_accum_steps:
        batch = feed.next()
        with amp or contextlib.nullcontext():
            loss, stats = task.forward(engine, batch, device)
        if not all_finite(loss, device):
            state.nonfinite_skipped += 1
            consecutive_bad += 1
            if consecutive_bad >= MAX_CONSECUTIVE_NONFINITE:
                raise FloatingPointError(f"{consecutive_bad} consecutive non-finite losses at update {state.step}")
            continue
        engine.backward(loss)
        engine.step()  # DeepSpeed updates only at the accumulation boundary
        window.add_micro(loss.detach().float(), stats)
        done += 1


def _evaluate(task: Task, engine, job, device) -> dict[str, float]:
    """Dev-split evaluation on every rank; sums are all-reduced (and transcripts gathered) before scoring."""
    import ray.train
    import ray.train.torch

    from unispeech_platform.data.pipeline import iter_batches

    shard = ray.train.get_dataset_shard("dev")
    if shard is None:
        return {}
    engine.eval()
    limit = job.train.eval_max_batches

    def batches():
        for i, batch in enumerate(lockstep(iter_batches(shard, job.data, epoch=0, train=False), device)):
            if limit is not None and i >= limit:
                break
            yield batch

    try:
        local = task.evaluate(engine, batches(), device)
    finally:
        engine.train()
    return task.summarize(all_reduce_sums(local.sums, device), all_gather_items(local.items))


def _tag_placement(tracker, task: str) -> str:
    """Record which Ray nodes the ranks run on (collective: every rank contributes its node id and pid); returns
    the console line naming each rank's process, so that a person can find (or stop) it."""
    import os

    import ray

    placed = all_gather_items([(ray.get_runtime_context().get_node_id(), os.getpid())])
    nodes = [node for node, _ in placed]
    tracker.set_tags({"worker_nodes": ",".join(n[:12] for n in nodes), "num_nodes": str(len(set(nodes)))})
    ranks = ", ".join(f"rank {r} pid {pid} on node {node[:12]}" for r, (node, pid) in enumerate(placed))
    return task_line(task, f"workers: {ranks}")


def _hardware_and_precision(train) -> tuple[HardwareFacts, PrecisionChoice, int]:
    """Collective: the hardware facts every rank shares, the precision they call for (one for all ranks), and the
    torch threads of this worker (the CPUs Ray reserved for it, never more than the machine has)."""
    facts = merge_facts(all_gather_items([detect_hardware()]))
    choice = resolve_precision(train.precision, use_gpu=bool(train.use_gpu), facts=facts)
    return facts, choice, threads_per_worker(train.cpus_per_worker, facts.cpu_count)


def _collapse_alarm(state: TrainState, metrics: dict[str, float], train, tracker, say=None) -> None:
    """Codebook collapse (few codes used) silently ruins the contrastive targets: make it loud, once."""
    ppl = metrics.get("perplexity")
    if ppl is None or state.collapse_alarm or state.step < train.collapse_after_steps:
        return
    if ppl < train.collapse_perplexity:
        state.collapse_alarm = True
        msg = f"codebook collapse: perplexity {ppl:.2f} < {train.collapse_perplexity} at update {state.step}"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
        tracker.set_tags({"codebook_collapse": msg})
        if say is not None:
            say(f"WARNING: {msg}")
