"""Fault tolerance: SIGKILL a training worker mid-run; Ray Train restores the last checkpoint and the job ends
with exactly train.max_steps updates, and MLflow's step history has no gaps and no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from train_helpers import CI_CONFIG, ROOT, local_ray, make_tiny_corpus

from unispeech_platform.tracking import metric_history

pytestmark = pytest.mark.slow
STEPS, EVERY = 12, 4


def _train_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::RayTrainWorker"):
            out.append(p)
    return out


def test_sigkilled_worker_is_restored_from_the_last_checkpoint(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "runs" / "fault"
    cmd = [
        sys.executable, "-m", "jobs.pretrain", "--config", str(CI_CONFIG),
        "--set", f"data.path={corpus}", "--set", f"checkpoint.storage_path={tmp_path / 'runs'}",
        "--set", "checkpoint.name=fault", "--set", f"tracking.uri={uri}", "--set", f"train.max_steps={STEPS}",
        "--set", f"checkpoint.every_steps={EVERY}", "--set", "train.max_failures=2",
    ]
    with local_ray() as address:
        env = {**os.environ, "RAY_ADDRESS": address}
        job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 400
            while not (run_dir / f"step_{EVERY:08d}").is_dir():  # first checkpoint committed
                assert job.poll() is None, job.stdout.read()
                assert time.time() < deadline, "no checkpoint appeared"
                time.sleep(0.5)
            victims = _train_workers()
            assert victims, "no RayTrainWorker process found"
            victims[-1].send_signal(signal.SIGKILL)
            out, _ = job.communicate(timeout=500)
        finally:
            if job.poll() is None:
                job.kill()
    assert job.returncode == 0, out[-5000:]
    assert "resumed at update" in out, "the worker group did not restore from a checkpoint"
    run_id = out.split("mlflow run: ")[1].split()[0]
    steps = [s for s, _ in metric_history(uri, run_id, "loss")]
    assert sorted(steps) == list(range(1, STEPS + 1)), steps  # no gaps, no duplicates
    assert (run_dir / f"step_{STEPS:08d}").is_dir()
