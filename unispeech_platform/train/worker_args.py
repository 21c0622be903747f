"""What the driver hands each worker: the validated job config plus values resolved on the driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig
from unispeech_platform.tracking import MLflowTracker, NullTracker


@dataclass
class WorkerArgs:
    kind: str
    """Task: pretrain | ctc."""
    job: PretrainJobConfig
    """The job config (re-validated on the worker from its JSON dump)."""
    model: dict[str, Any]
    """UniSpeechConfig overrides after resolving vocabulary-dependent fields."""
    vocab: str | None
    """Absolute path of vocab.json."""
    export_dir: str
    """Where rank 0 writes the consolidated model."""
    tracking_uri: str | None
    """Absolute MLflow tracking URI (None = tracking disabled)."""
    run_id: str | None
    """MLflow run created by the driver (a checkpoint's run id takes precedence)."""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["job"] = self.job.model_dump(mode="json")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerArgs:
        job_cls = PretrainJobConfig if d["kind"] == "pretrain" else FinetuneJobConfig
        return cls(**{**d, "job": job_cls.model_validate(d["job"])})

    def tracker(self, run_id: str | None):
        if self.tracking_uri and run_id:
            return MLflowTracker(self.tracking_uri, run_id)
        return NullTracker()

    @staticmethod
    def null_tracker():
        return NullTracker()
