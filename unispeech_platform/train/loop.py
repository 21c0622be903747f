"""The training loop every Ray Train worker runs, top to bottom: one attempt of the run, its crash-loop
bookkeeping around `_train`, and `_train` itself, the algorithm over one named piece per concept:

- `train/session.py`: setup (ranks, device, task and engine, restore, tracker, batch feed);
- `train/step.py`: one optimizer update (micro-batches, skipped OOM / non-finite batches);
- `train/interval_log.py`: the metrics and alarms of a log interval;
- `train/evaluation.py`: dev evaluation and the best model;
- `train/checkpoint_cadence.py`: scheduled checkpoints and preemption stops;
- `train/hooks.py`: the tests' seam at the start of each update.

Ray appears only at the worker boundary (get_context, get_dataset_shard, and get_checkpoint/report inside
checkpointing). Metrics are synced across ranks only when logging; side effects (MLflow, exported files) happen
on rank 0 behind the Tracker interface.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from unispeech_platform.train.checkpoint import export_model
from unispeech_platform.train.checkpoint_cadence import CheckpointCadence
from unispeech_platform.train.evaluation import evaluate_and_keep_best, evaluation_due
from unispeech_platform.train.hooks import run_before_update_hooks
from unispeech_platform.train.interval_log import IntervalLog
from unispeech_platform.train.metrics import all_gather_items
from unispeech_platform.train.model_card import job_model_card
from unispeech_platform.train.preemption import SIGTERM_FLAG, Preempted
from unispeech_platform.train.restarts import Place, RestartHistory
from unispeech_platform.train.session import start_session
from unispeech_platform.train.step import run_update
from unispeech_platform.train.worker_args import WorkerArgs

log = logging.getLogger("unispeech.train")


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
    """The algorithm: set up, then for each update its batches and step, and at its end maybe log, maybe
    evaluate, maybe checkpoint, maybe stop for a preemption or a failure state named in train.stop_on; after the
    last update, export the model."""
    s = start_session(args, place)
    interval = IntervalLog(s)
    checkpoints, phase = CheckpointCadence(), interval.window.clock.phase  # phases: train/phase_clock.py
    while s.state.step < s.train.max_steps and s.stopped_on is None:
        place.where = f"update {s.state.step + 1}"
        run_before_update_hooks(s.rank, s.state.step + 1)  # none in production; tests inject faults here
        run_update(s, interval.window)
        if interval.due(s):
            with phase("logging"):
                interval.log(s)
        if evaluation_due(s):
            place.where = f"the evaluation after update {s.state.step}"
            with phase("evaluation"):
                evaluate_and_keep_best(s)
        with phase("checkpoint"):
            checkpoints.after_update(s)  # raises Preempted after a SIGTERM's checkpoint
    place.where = "the final export"
    export_model(s.engine, args.layout.export_dir, s.tokenizer, job_model_card(s.job, s.state.step, s.last_report),
                 run_id=s.state.run_id)
