"""RunLayout: every output path of one training run, in one place.

    <storage>/<name>/                 Ray Train's run directory
        step_00000012/                a checkpoint (DeepSpeed shards of every rank + train_state.json + manifests)
        step_00000012-r1/             the same step saved again after a restore skipped a bad checkpoint
        model/                        the consolidated transformers-format export (or checkpoint.export_dir)
        model_best/                   fine-tuning: the export with the best dev score
        model_ctchead/                the export with the pretraining CTC head copied into lm_head
        <output>/                     job outputs, e.g. lid/ (the LID report)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from unispeech_platform.config.sections import CheckpointSection

MODEL_DIR = "model"
"""Name of the export inside a run directory."""
BEST_SUFFIX = "_best"
CTC_HEAD_SUFFIX = "_ctchead"
CHECKPOINT_PREFIX = "step_"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)(?:-r(\d+))?$")


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class RunLayout:
    storage: str
    """Ray Train storage: an absolute local/NFS directory or a URI such as s3://bucket/prefix."""
    name: str
    """The run's stable name (checkpoint.name)."""
    export_override: str | None = None
    """checkpoint.export_dir when set (absolute)."""

    @classmethod
    def of(cls, section: CheckpointSection) -> RunLayout:
        storage = section.storage_path if is_uri(section.storage_path) else os.path.abspath(section.storage_path)
        export = os.path.abspath(section.export_dir) if section.export_dir else None
        return cls(storage.rstrip("/"), section.name, export)

    @property
    def run_dir(self) -> str:
        return f"{self.storage}/{self.name}"

    @property
    def is_local(self) -> bool:
        return not is_uri(self.storage)

    @property
    def export_dir(self) -> str:
        """The consolidated model; a local/NFS path (rank 0 writes it with plain file I/O)."""
        if self.export_override:
            return self.export_override
        if not self.is_local:
            raise ValueError("checkpoint.export_dir must be set (a local/NFS path) when storage_path is a URI")
        return os.path.join(self.run_dir, MODEL_DIR)

    @property
    def best_export_dir(self) -> str:
        return self.export_dir + BEST_SUFFIX

    @property
    def ctc_head_export_dir(self) -> str:
        return self.export_dir + CTC_HEAD_SUFFIX

    def output_dir(self, name: str) -> str:
        """A job output directory inside the run directory (e.g. the LID report)."""
        return os.path.join(self.run_dir, name)

    @staticmethod
    def checkpoint_dir_name(step: int, lineage: int = 0) -> str:
        """``step_00000012``; after a restore fell back past a bad checkpoint the run continues in a new lineage
        (``step_00000012-r1``), so a re-saved step never shares a directory with the bad one Ray still tracks
        (Ray deletes an evicted checkpoint by path)."""
        return f"{CHECKPOINT_PREFIX}{step:08d}" + (f"-r{lineage}" if lineage else "")

    @staticmethod
    def parse_checkpoint_dir_name(name: str) -> tuple[int, int] | None:
        """(step, lineage) of a checkpoint directory name, or None for anything else in the run directory."""
        match = _CHECKPOINT_NAME.match(name)
        return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def model_dir_candidates(path: str, *, best: bool) -> list[str]:
    """Where a model may sit below a user-given path: the path itself, then (for a run directory) its best
    export when ``best`` (evaluation), then its export."""
    best_dir = [os.path.join(path, MODEL_DIR + BEST_SUFFIX)] if best else []
    return [path, *best_dir, os.path.join(path, MODEL_DIR)]
