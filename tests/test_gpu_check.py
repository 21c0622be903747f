"""bench/gpu_check.py --dry-run on CPU: the GPU check runs the BASE preset with 1 GPU worker, ZeRO-2 and bf16,
and the configs it builds validate (so a config mistake is caught here, not on a scarce GPU machine)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _sets(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]


def test_dry_run_plans_base_pretraining_on_one_gpu_with_zero2_bf16(tmp_path):
    tmp_path = tmp_path.resolve()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--workdir", str(tmp_path),
         "--optimizer", "fused"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    commands = {line.split(": ", 1)[0]: shlex.split(line.split(": ", 1)[1]) for line in lines[1:5]}
    assert list(commands) == ["corpus", "pretrain", "finetune", "evaluate"]

    pretrain = commands["pretrain"]
    assert pretrain[1:5] == ["-m", "jobs.pretrain", "--config", "configs/base.yaml"]
    sets = _sets(pretrain)
    for expected in ("train.use_gpu=true", "train.num_workers=1", "train.zero_stage=2", "train.precision=bf16",
                     "train.max_steps=60", f"data.path={tmp_path / 'corpus'}",
                     f"checkpoint.storage_path={tmp_path / 'runs'}",
                     f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"):
        assert expected in sets, expected
    assert not any(s.startswith("train.deepspeed=") for s in sets)  # --optimizer fused: DeepSpeed's FusedAdam

    finetune = commands["finetune"]
    assert finetune[1:3] == ["-m", "jobs.finetune"]
    assert f"finetune.init_from={tmp_path / 'models' / 'base'}" in _sets(finetune)
    assert {"train.use_gpu=true", "train.num_workers=1", "train.zero_stage=2", "train.precision=bf16"} <= set(
        _sets(finetune)
    )
    evaluate = commands["evaluate"]
    assert evaluate[1:3] == ["-m", "jobs.evaluate"]
    assert "evaluate.use_gpu=true" in _sets(evaluate)
    assert commands["corpus"][1:5] == ["-m", "jobs.make_corpus", "--out", str(tmp_path / "corpus")]

    rows = lines[5].removeprefix("# table rows: ").split(", ")
    assert {"throughput", "mfu", "mfu (job)", "time_share"} <= set(rows), rows  # MFU and the step-time breakdown
    assert lines[6].startswith("# pretraining config (configs/base.yaml")
    config = yaml.safe_load("\n".join(lines[7:]))
    base = yaml.safe_load((REPO / "configs" / "base.yaml").read_text())
    assert config["model"] == base["model"]
    assert {k: config["train"][k] for k in ("use_gpu", "num_workers", "zero_stage", "precision", "max_steps")} == {
        "use_gpu": True, "num_workers": 1, "zero_stage": 2, "precision": "bf16", "max_steps": 60,
    }
    assert config["train"]["deepspeed"] == {}
    assert config["data"]["path"] == str(tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()  # a dry run runs nothing


def test_dry_run_with_torch_optimizer_uses_torch_adamw(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--workdir", str(tmp_path),
         "--optimizer", "torch"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load("\n".join(proc.stdout.splitlines()[6:]))
    assert config["train"]["deepspeed"] == {"optimizer": {"params": {"torch_adam": True}}}
