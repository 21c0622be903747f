"""The training loop every Ray Train worker runs, top to bottom.

Ray appears only at the worker boundary (get_context, get_dataset_shard, and get_checkpoint/report inside
checkpointing). Metrics are synced across ranks only when logging; side effects (MLflow, exported files) happen
on rank 0 behind the Tracker interface.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

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
from unispeech_platform.train.faults import first_line, is_out_of_memory
from unispeech_platform.train.metrics import Window, all_gather_items, all_reduce_sums, any_rank, is_finite
from unispeech_platform.train.model_card import job_model_card
from unispeech_platform.train.preemption import SIGTERM_FLAG, Preempted, preemption_signals
from unispeech_platform.train.restarts import RestartHistory
from unispeech_platform.train.schedules import learning_rate
from unispeech_platform.train.tasks import Task, improves, task_for_job
from unispeech_platform.train.worker_args import WorkerArgs

log = logging.getLogger("unispeech.train")
MAX_CONSECUTIVE_NONFINITE = 50
MAX_CONSECUTIVE_OOM = 10
"""Out-of-memory micro-batches skipped in a row before the job stops (the model, not a batch, does not fit)."""
FAULT_ENV = "UNISPEECH_TEST_FAIL_AT_UPDATE"
GATE_ENV = "UNISPEECH_TEST_WAIT_AT_UPDATE"


@dataclass
class Place:
    """Where an attempt is, in words, for the crash-loop record (e.g. "update 7")."""

    where: str = "setup"


def train_loop_per_worker(raw_args: dict[str, Any]) -> None:
    """Ray Train's entry on every worker: one attempt of the run. Where an attempt fails is recorded, and an
    attempt refuses to train when the same place has already failed in two attempts (a crash loop); SIGTERM is
    honoured at update boundaries (docs/training.md#fault-tolerance)."""
    import ray.train

    args = WorkerArgs.from_dict(raw_args)
    rank = ray.train.get_context().get_world_rank()
    history = RestartHistory(args.layout.run_dir, args.fit_id) if args.fit_id else None
    attempt, verdict = _begin_attempt(history, rank)
    if verdict is not None:
        return  # every rank: the driver reports the verdict (history.stopped()) as the job's error
    place = Place()
    SIGTERM_FLAG.arm()
    try:
        _train(args, place)
    except Preempted:
        raise
    except BaseException as e:
        if history is not None and attempt:
            history.record_failure(attempt, rank, place.where, e)
        raise
    finally:
        SIGTERM_FLAG.disarm()


def _begin_attempt(history: RestartHistory | None, rank: int) -> tuple[int, str | None]:
    """Collective: rank 0 records this attempt and judges the history; every rank gets (attempt, verdict). An
    unreadable history only costs the crash-loop check (attempt 0 = not recorded)."""
    import ray.train

    decision: list[tuple[int, str | None]] = []
    if rank == 0 and history is not None:
        ckpt = ray.train.get_checkpoint()
        name = os.path.basename(ckpt.path.rstrip("/")) if ckpt is not None else None
        try:
            decision = [history.begin(name)]
        except Exception as e:  # noqa: BLE001
            log.warning("restart history %s unusable (%s): crash loops are not detected", history.dir, e)
            decision = [(0, None)]
    (attempt, verdict), *_ = all_gather_items(decision) or [(0, None)]
    return attempt, verdict


def _train(args: WorkerArgs, place: Place) -> None:
    import ray.train
    import ray.train.torch

    from unispeech_core import PhoneTokenizer
    from unispeech_platform.data.pipeline import iter_batches

    job, train = args.job, args.job.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if train.use_gpu else torch.device("cpu")
    tokenizer = PhoneTokenizer(args.vocab) if args.vocab else None

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
    place.where = "the restore of the latest checkpoint"
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
    augmented_before = dict(state.augmented_rows)
    window = Window(device)
    last_report: dict[str, float] = {}
    drain_saved = False  # one checkpoint per drain notice of this attempt

    while state.step < train.max_steps:
        place.where = f"update {state.step + 1}"
        _injected_fault(rank, state.step + 1)
        _test_gate(state.step + 1)
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
            if job.data.augment.enabled:  # the same on every rank; docs/data.md#augmentation
                for effect, n in all_reduce_sums(dict(feed.augmented), device).items():
                    state.augmented_rows[effect] = augmented_before.get(effect, 0) + int(n)
                    metrics[f"augmented/{effect}"] = state.augmented_rows[effect]
            metrics["nonfinite_skipped"] = state.nonfinite_skipped
            metrics["oom_skipped"] = state.oom_skipped
            memory = all_reduce_sums(state_memory_mb(engine), device)  # mean per rank, measured
            metrics.update({k: v / world for k, v in memory.items()})
            tracker.log_metrics(metrics, state.step)
            last_report = metrics
            say(update_line(job.task, state.step, train.max_steps, metrics, eta(state.step)))
            _collapse_alarm(state, metrics, train, tracker, say)

        if (train.eval_every and state.step % train.eval_every == 0) or last:
            place.where = f"the evaluation after update {state.step}"
            dev = _evaluate(task, engine, job, device)
            if dev:
                tracker.log_metrics(dev, state.step)
                say(dev_line(job.task, state.step, dev))
                last_report = {**last_report, **dev}
                score = dev.get(task.score_key)
                if task.keeps_best and improves(task.score_mode, score, state.best_score):
                    state.best_score = score
                    export_model(engine, args.layout.best_export_dir, tokenizer, job_model_card(job, state.step, dev))

        saved = state.step % job.checkpoint.every_steps == 0 or last
        if saved:
            place.where = f"the checkpoint at update {state.step}"
            save_and_report(engine, state, last_report, task.config)

        signals = preemption_signals(device)  # collective: all ranks act at the same update
        signalled = signals.sigterm_rank
        if signals.node_draining and not drain_saved and not saved and not last:
            say(task_line(job.task, f"Ray reports a node of this run being preempted: checkpoint at update "
                                    f"{state.step}; training goes on until the node goes"))
            save_and_report(engine, state, last_report, task.config)
            saved = drain_saved = True
        drain_saved = drain_saved or (signals.node_draining and saved)
        if signalled is not None and not last:
            say(task_line(job.task, f"SIGTERM on rank {signalled}: saving a checkpoint at update {state.step}, "
                                    "then Ray Train restarts the workers from it"))
            if not saved:
                save_and_report(engine, state, last_report, task.config)
            if dist.is_initialized():  # every rank's report is queued before any rank fails: Ray registers it
                dist.barrier()
            raise Preempted(f"SIGTERM on rank {signalled}: checkpoint saved at update {state.step}; restarting")

    place.where = "the final export"
    export_model(engine, args.layout.export_dir, tokenizer, job_model_card(job, state.step, last_report))


def _injected_fault(rank: int, update: int) -> None:
    """Tests only: ``UNISPEECH_TEST_FAIL_AT_UPDATE=<update>[:<rank>]`` makes that rank (default 0) fail at the
    start of that update in every attempt, a fault no restore can fix (the crash-loop test)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    at, _, on_rank = spec.partition(":")
    if int(at) == update and int(on_rank or 0) == rank:
        raise RuntimeError(f"injected fault at update {update} on rank {rank} ({FAULT_ENV})")


def _test_gate(update: int) -> None:
    """Tests only: ``UNISPEECH_TEST_WAIT_AT_UPDATE=<update>:<path>`` holds every rank at the start of that update
    until ``path`` exists (at most 300 s), so a test can line a fault up with training, whatever the machine's
    speed (the tracking-outage test restarts a server while the job waits)."""
    spec = os.environ.get(GATE_ENV)
    if not spec:
        return
    at, _, path = spec.partition(":")
    if int(at) != update:
        return
    deadline = time.monotonic() + 300
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{GATE_ENV}: {path} did not appear within 300 s")
        time.sleep(0.1)


def accumulate_update(task: Task, engine, feed: LockstepBatches, state: TrainState, window: Window,
                      grad_accum_steps: int, device: torch.device,
                      amp: contextlib.AbstractContextManager | None = None) -> None:
    """The micro-batches of one optimizer update, each forward inside ``amp`` (the precision's autocast).

    A micro-batch that goes wrong on any rank is skipped by every rank (no backward, no step: collectives stay
    matched and the weights untouched), decided by one all-reduce per micro-batch: a non-finite loss (counted in
    ``state.nonfinite_skipped``) or a forward pass that ran out of memory (``state.oom_skipped``; ZeRO 0-2 only:
    their forward pass has no collectives, so the other ranks are not left waiting in one, while ZeRO-3 gathers
    parameters inside it and an out-of-memory error there fails the attempt). Too many in a row stop the job."""
    catch_oom = _zero_stage(engine) < 3
    done, nonfinite_run, oom_run = 0, 0, 0
    while done < grad_accum_steps:
        batch = feed.next()
        loss, stats = _forward(task, engine, batch, device, amp, catch_oom)
        oom_here = loss is _OOM
        finite_here = not oom_here and is_finite(loss)
        out_of_memory, nonfinite = any_rank([oom_here, not oom_here and not finite_here], device)
        if out_of_memory:
            del loss, stats, batch
            _release_cached_memory(device)
            state.oom_skipped += 1
            oom_run += 1
            if oom_run >= MAX_CONSECUTIVE_OOM:
                raise MemoryError(f"{oom_run} consecutive micro-batches ran out of memory at update "
                                  f"{state.step + 1}: the model, not one batch, does not fit (lower "
                                  "data.max_batch_seconds, raise train.zero_stage or give workers more memory)")
            continue
        if nonfinite:
            state.nonfinite_skipped += 1
            nonfinite_run += 1
            if nonfinite_run >= MAX_CONSECUTIVE_NONFINITE:
                raise FloatingPointError(f"{nonfinite_run} consecutive non-finite losses at update {state.step}")
            continue
        nonfinite_run = oom_run = 0
        engine.backward(loss)
        engine.step()  # DeepSpeed updates only at the accumulation boundary
        window.add_micro(loss.detach().float(), stats)
        done += 1


_OOM = object()
"""What `_forward` returns instead of a loss when the forward pass ran out of memory."""


def _forward(task: Task, engine, batch, device: torch.device, amp, catch_oom: bool):
    """The task's forward pass; an out-of-memory error becomes ``(_OOM, {})`` when it can be skipped (the error
    and its frames, which hold the batch's activations, are released on return)."""
    try:
        with amp or contextlib.nullcontext():
            return task.forward(engine, batch, device)
    except Exception as e:
        if not (catch_oom and is_out_of_memory(e)):
            raise
        log.warning("out of memory in a forward pass: every rank skips this batch (%s)", first_line(e))
    return _OOM, {}


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _zero_stage(engine) -> int:
    stage = getattr(engine, "zero_optimization_stage", None)
    return int(stage()) if callable(stage) else 0


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
