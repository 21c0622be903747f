"""Training tasks behind one protocol (``base.Task``): pretrain, ctc, lid. The loop is task-agnostic.

A task is declared once, in ``config/tasks.py`` (``TaskSpec``: name, whether it reads the ``finetune:`` section,
its implementation, exported architecture, evaluator, whether its job logs an MLflow Model); the job configs'
task choices, the job config class, the evaluator choice and the MLflow model logging derive from it. Adding a
task = a module here implementing ``Task`` (constructed as ``Cls(model, train, finetune, tokenizer)`` from its
job's sections) + one ``TaskSpec`` naming it; ``TASKS`` below resolves every declaration and
``tests/test_train_tasks.py`` checks that each builds the architecture it declares.
"""

from __future__ import annotations

import importlib

from unispeech_core import PhoneTokenizer
from unispeech_platform.config.jobs import FinetuneJobConfig, PretrainJobConfig
from unispeech_platform.config.model import ModelSection
from unispeech_platform.config.sections import FinetuneSection, TrainSection
from unispeech_platform.config.tasks import TASK_SPECS, TaskName, TaskSpec
from unispeech_platform.train.tasks.base import EvalResult, Task, improves, model_inputs
from unispeech_platform.train.tasks.ctc import CTCTask
from unispeech_platform.train.tasks.lid import LIDTask
from unispeech_platform.train.tasks.pretrain import PretrainTask


def _implementation(spec: TaskSpec) -> type:
    module, _, cls = spec.implementation.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


TASKS: dict[str, type] = {name: _implementation(spec) for name, spec in TASK_SPECS.items()}
"""Task name -> implementing class, resolved from config/tasks.py's declarations."""


def make_task(name: TaskName, model: ModelSection, train: TrainSection, finetune: FinetuneSection | None = None,
              tokenizer: PhoneTokenizer | None = None, init_from: str | None = None) -> Task:
    """A task from its own config sections (the finetune section only matters to fine-tuning tasks, which start
    from its init_from; ``init_from`` is where a pretraining starts) and the corpus vocabulary, which also decides
    the model's vocabulary sizes (ModelSection.settings)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    if TASK_SPECS[name].finetunes:
        return TASKS[name](model, train, finetune or FinetuneSection(task=name), tokenizer)
    return TASKS[name](model, train, finetune, tokenizer, init_from=init_from)


def task_for_job(job: PretrainJobConfig, tokenizer: PhoneTokenizer | None) -> Task:
    """The task a job config is keyed on, built from the job's typed sections."""
    if isinstance(job, FinetuneJobConfig):
        return make_task(job.task, job.model, job.train, job.finetune, tokenizer)
    return make_task(job.task, job.model, job.train, None, tokenizer, init_from=job.pretrain.init_from)


__all__ = ["TASKS", "CTCTask", "EvalResult", "LIDTask", "PretrainTask", "Task", "improves", "make_task",
           "model_inputs", "task_for_job"]
