"""What the check runs: the job commands and their --set overrides, all derived from one work directory so
that --dry-run can print and validate them without running anything."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BASE_CONFIG = "configs/base.yaml"
FINETUNE_CONFIG = "configs/finetune_tiny.yaml"
EVALUATE_CONFIG = "configs/evaluate_tiny.yaml"
EXPERIMENT = "gpu-check"
PRETRAIN_NAME, FINETUNE_NAME = "gpu-check-base", "gpu-check-finetune"


@dataclass
class Plan:
    """Everything the check runs, derived from a work directory, so --dry-run can show it."""

    workdir: Path
    steps: int = 60
    finetune_steps: int = 20
    python: str = sys.executable
    torch_adam: bool = False
    """DeepSpeed's FusedAdam is JIT-compiled with nvcc; without a CUDA toolkit use torch's AdamW instead."""

    @property
    def corpus(self) -> Path:
        return self.workdir / "corpus"

    @property
    def runs(self) -> Path:
        return self.workdir / "runs"

    @property
    def base_export(self) -> Path:
        return self.workdir / "models" / "base"

    @property
    def eval_dir(self) -> Path:
        return self.workdir / "eval"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    def common_sets(self) -> list[str]:
        return [
            f"data.path={self.corpus}",
            f"tracking.uri={self.tracking_uri}",
            f"tracking.experiment={EXPERIMENT}",
        ]

    def train_sets(self) -> list[str]:
        """1 GPU worker, ZeRO-2, bf16: the single-GPU slice of the BASE preset's 8-GPU recipe."""
        sets = [
            "train.use_gpu=true",
            "train.num_workers=1",
            "train.precision=bf16",
            "train.zero_stage=2",
            "train.max_failures=0",
            "train.eval_every=0",
            "train.eval_max_batches=4",
            f"checkpoint.storage_path={self.runs}",
            "checkpoint.every_steps=100000",
            "tracking.log_model=false",
        ]
        if self.torch_adam:
            sets.append("train.deepspeed={optimizer: {params: {torch_adam: true}}}")
        return sets

    def pretrain_sets(self) -> list[str]:
        return [
            *self.train_sets(),
            f"train.max_steps={self.steps}",
            "train.log_every=10",
            "optim.warmup_steps=10",
            f"checkpoint.name={PRETRAIN_NAME}",
            f"checkpoint.export_dir={self.base_export}",
            *self.common_sets(),
        ]

    def finetune_sets(self) -> list[str]:
        return [
            *self.train_sets(),
            f"train.max_steps={self.finetune_steps}",
            "train.log_every=5",
            "finetune.freeze_transformer_steps=5",
            f"finetune.init_from={self.base_export}",
            f"checkpoint.name={FINETUNE_NAME}",
            *self.common_sets(),
        ]

    def evaluate_sets(self) -> list[str]:
        return [
            f"evaluate.model_path={self.runs / FINETUNE_NAME}",
            "evaluate.use_gpu=true",
            f"evaluate.output_dir={self.eval_dir}",
            *self.common_sets(),
        ]

    def commands(self) -> dict[str, list[str]]:
        def job(module: str, config: str, sets: list[str]) -> list[str]:
            return [self.python, "-m", module, "--config", config, *(a for s in sets for a in ("--set", s))]

        return {
            "corpus": [
                self.python, "-m", "jobs.make_corpus", "--out", str(self.corpus), "--langs", "en-us,es",
                "--per-lang", "600", "--speakers", "6", "--seed", "0",
            ],
            "pretrain": job("jobs.pretrain", BASE_CONFIG, self.pretrain_sets()),
            "finetune": job("jobs.finetune", FINETUNE_CONFIG, self.finetune_sets()),
            "evaluate": job("jobs.evaluate", EVALUATE_CONFIG, self.evaluate_sets()),
        }

    def configs(self) -> dict[str, Any]:
        """The job configs the commands build, validated as the jobs will validate them (no Ray, no GPU)."""
        from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, load_config
        from unispeech_platform.evaluate.config import EvaluateJobConfig

        os.chdir(REPO)
        return {
            "pretrain": load_config(PretrainJobConfig, BASE_CONFIG, self.pretrain_sets()),
            "finetune": load_config(FinetuneJobConfig, FINETUNE_CONFIG, self.finetune_sets()),
            "evaluate": load_config(EvaluateJobConfig, EVALUATE_CONFIG, self.evaluate_sets()),
        }


def nvcc_available() -> bool:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return shutil.which("nvcc") is not None or os.path.isfile(os.path.join(home, "bin", "nvcc"))
