"""What the driver hands each worker: the typed job config plus values resolved on the driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unispeech_platform.config import PretrainJobConfig, job_config_class
from unispeech_platform.runtime.layout import RunLayout


@dataclass
class WorkerArgs:
    job: PretrainJobConfig
    """The typed job config (re-validated on the worker from its JSON dump; its task decides the config class).
    Its model section is the only model setting a worker gets: the task builds UniSpeechConfig from it and the
    vocabulary (ModelSection.unispeech_config)."""
    vocab: dict[str, int] | None
    """The corpus vocabulary itself (phone -> id), read once on the driver, not a path: the driver's copy of a
    remote vocab.json lives in its own temp dir, which workers on other nodes cannot open
    (docs/data.md#object-storage)."""
    layout: RunLayout
    """Every output path of the run (absolute)."""
    tracking_uri: str | None
    """Absolute MLflow tracking URI (None = tracking disabled)."""
    run_id: str | None
    """MLflow run created by the driver (a checkpoint's run id takes precedence)."""
    console: Any = None
    """The driver's console queue (runtime.console.ConsoleLines): rank 0's progress lines go there."""
    fit_id: str | None = None
    """This driver invocation's id: names its restart history in the run directory (train/restarts.py)."""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["job"] = self.job.model_dump(mode="json")
        d["task"] = self.job.task
        d["layout"] = self.layout.__dict__
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerArgs:
        d = dict(d)
        job = job_config_class(d.pop("task")).model_validate(d.pop("job"))
        return cls(job=job, layout=RunLayout(**d.pop("layout")), **d)
