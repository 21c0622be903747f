"""The training tasks a job can be keyed on, declared once: name, the config section it reads, the module that
implements it, its exported model, its evaluator and what its job logs.

Declared at the config layer because a config is validated before anything else is imported (the choices of
``finetune.task`` and the job config class come from here), and because ``evaluate/`` may read a task's
properties but never import ``train.tasks``. Adding a task = its module under ``train/tasks/`` (the ``Task``
protocol) + one ``TaskSpec`` below; ``tests/test_train_tasks.py`` checks that every declaration matches what its
implementation builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    """The job's task (``finetune.task`` for fine-tuning tasks; ``pretrain`` is the pretraining job's)."""
    finetunes: bool
    """Reads the ``finetune:`` section (initial weights, freezing): its job config is FinetuneJobConfig."""
    implementation: str
    """``module:Class`` under ``unispeech_platform.train.tasks`` (resolved by ``train.tasks.TASKS``)."""
    architecture: str
    """The exported model's class (``architectures`` in its config.json)."""
    entrypoint: str
    """The job module that trains it (named in the model card's command)."""
    evaluator: Literal["per", "lid"] | None
    """Which evaluation scores its exported model: per = ``jobs.evaluate`` (evaluate/job.py), lid =
    ``evaluate/lid.py`` (run by ``jobs.lid``); None = none (a pretrained model is fine-tuned first)."""
    logs_mlflow_model: bool = False
    """A finished job logs its export as an MLflow Model (runs:/<run_id>/model, registrable); other tasks upload
    the export directory as the run's ``export`` artifacts (tracking.log_model decides whether at all)."""


TASK_SPECS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(name="pretrain", finetunes=False, implementation="pretrain:PretrainTask",
             architecture="UniSpeechForPreTraining", entrypoint="jobs.pretrain", evaluator=None),
    TaskSpec(name="ctc", finetunes=True, implementation="ctc:CTCTask", architecture="UniSpeechForCTC",
             entrypoint="jobs.finetune", evaluator="per", logs_mlflow_model=True),
    TaskSpec(name="lid", finetunes=True, implementation="lid:LIDTask",
             architecture="UniSpeechForSequenceClassification", entrypoint="jobs.lid", evaluator="lid"),
)}
"""Every task, by name: the one registration of a task."""

TaskName = Literal[tuple(TASK_SPECS)]  # type: ignore[valid-type]
"""Any task's name (derived from TASK_SPECS)."""
FinetuneTaskName = Literal[tuple(n for n, spec in TASK_SPECS.items() if spec.finetunes)]  # type: ignore[valid-type]
"""The choices of ``finetune.task`` (derived from TASK_SPECS)."""
