"""Training tasks behind one protocol (``base.Task``): pretrain, ctc, lid. The loop is task-agnostic; adding a
task means a module here and a name in ``TASKS``."""

from __future__ import annotations

from typing import Any

from unispeech_core import PhoneTokenizer
from unispeech_platform.config.jobs import FinetuneJobConfig, PretrainJobConfig, TaskName
from unispeech_platform.config.sections import FinetuneSection, TrainSection
from unispeech_platform.train.tasks.base import EvalResult, Task, improves, model_inputs
from unispeech_platform.train.tasks.ctc import CTCTask
from unispeech_platform.train.tasks.lid import LIDTask
from unispeech_platform.train.tasks.pretrain import PretrainTask

TASKS: dict[str, type] = {"pretrain": PretrainTask, "ctc": CTCTask, "lid": LIDTask}


def make_task(name: TaskName, model_overrides: dict[str, Any], train: TrainSection,
              finetune: FinetuneSection | None = None, tokenizer: PhoneTokenizer | None = None) -> Task:
    """A task from its own config sections (fine-tuning tasks also take the finetune section and vocabulary)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    if name == "pretrain":
        return PretrainTask(model_overrides, train)
    return TASKS[name](model_overrides, train, finetune or FinetuneSection(task=name), tokenizer)


def task_for_job(job: PretrainJobConfig, model_overrides: dict[str, Any], tokenizer: PhoneTokenizer | None) -> Task:
    """The task a job config is keyed on."""
    finetune = job.finetune if isinstance(job, FinetuneJobConfig) else None
    return make_task(job.task, model_overrides, job.train, finetune, tokenizer)


__all__ = ["TASKS", "CTCTask", "EvalResult", "LIDTask", "PretrainTask", "Task", "improves", "make_task",
           "model_inputs", "task_for_job"]
