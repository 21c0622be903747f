"""Dev evaluation inside training (every `train.eval_every` updates and after the last): the task scores the dev
split on every rank, rank 0 logs the scores, and a task that keeps its best model exports it when the score
improves (`<export_dir>_best`; docs/training.md#what-a-step-does)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unispeech_platform.runtime.console import dev_line
from unispeech_platform.train.batches import lockstep
from unispeech_platform.train.checkpoint import export_model
from unispeech_platform.train.interval_log import watch_health
from unispeech_platform.train.metrics import all_gather_items, all_reduce_sums
from unispeech_platform.train.model_card import job_model_card
from unispeech_platform.train.tasks import Task, improves

if TYPE_CHECKING:
    from unispeech_platform.config import PretrainJobConfig
    from unispeech_platform.train.session import Session


def evaluation_due(s: Session) -> bool:
    return bool(s.train.eval_every and s.state.step % s.train.eval_every == 0) or s.is_last_update


def evaluate_and_keep_best(s: Session) -> None:
    """Collective: score the dev split; log and say the scores; export the model when its score is the best yet."""
    dev = evaluate_dev(s.task, s.engine, s.job, s.device)
    if not dev:
        return
    state, task = s.state, s.task
    s.tracker.log_metrics(dev, state.step)
    s.say(dev_line(s.job.task, state.step, dev))
    s.last_report = {**s.last_report, **dev}
    watch_health(s, dev)  # e.g. the CTC blank plateau shows in dev predictions
    score = dev.get(task.score_key)
    if task.keeps_best and improves(task.score_mode, score, state.best_score):
        state.best_score = score
        export_model(s.engine, s.args.layout.best_export_dir, s.tokenizer, job_model_card(s.job, state.step, dev),
                     run_id=state.run_id)


def evaluate_dev(task: Task, engine, job: PretrainJobConfig, device: torch.device) -> dict[str, float]:
    """Dev-split evaluation on every rank; sums are all-reduced (and transcripts gathered) before scoring."""
    import ray.train

    from unispeech_platform.data.pipeline import iter_batches

    try:
        shard = ray.train.get_dataset_shard("dev")
    except KeyError:  # Ray Train V2 raises where V1 returned None: the driver found no dev split (every rank)
        shard = None
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
