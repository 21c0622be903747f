"""`ray job submit` against a real local head started by cluster/local_cluster.sh runs jobs.pretrain to
SUCCEEDED, and the job's MLflow run lands in the absolute store given by the config."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from train_helpers import ROOT, make_tiny_corpus

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "cluster" / "local_cluster.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_pretrain_to_succeeded(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    dash = _free_port()
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",  # the job's `python` is the venv's
        "RAY_HEAD_PORT": str(_free_port()),
        "RAY_DASHBOARD_PORT": str(dash),
        "RAY_NODE_CPUS": "8",
        "RAY_LOCAL_CLUSTER_DIR": str(tmp_path / "cluster"),
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(SCRIPT), "start", "0"], env=env, check=True, timeout=240)
    try:
        address = f"http://127.0.0.1:{dash}"
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        submit = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--submission-id", "pretrain-ci",
             "--", "python", "-m", "jobs.pretrain", "--config", "configs/ci.yaml",
             "--set", f"data.path={corpus}", "--set", f"checkpoint.storage_path={tmp_path / 'runs'}",
             "--set", f"tracking.uri={uri}", "--set", "train.max_steps=3"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        from ray.job_submission import JobStatus, JobSubmissionClient

        status = JobSubmissionClient(address).get_job_status("pretrain-ci")
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, timeout=120)
    assert status == JobStatus.SUCCEEDED, (submit.stdout + submit.stderr)[-5000:]
    assert submit.returncode == 0
    run_id = submit.stdout.split("mlflow run: ")[1].split()[0]
    from unispeech_platform.tracking import metric_history

    assert [s for s, _ in metric_history(uri, run_id, "loss")] == [1, 2, 3]
    # The console a user reads: one line per logging interval with an ETA; no Ray Data progress bars, no
    # per-worker log forwarding (DeepSpeed/accelerator notices), the precision and why.
    out = submit.stdout
    assert "pretrain  update 3/3  loss " in out and " ETA " in out, out[-3000:]
    assert "pretrain  precision " in out and "thread(s) each" in out
    assert "Running Dataset" not in out and "ReadParquet" not in out and "(RayTrainWorker" not in out
    assert "Setting accelerator to CPU" not in out
