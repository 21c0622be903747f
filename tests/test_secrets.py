"""Secrets given to a job (a runtime_env's env_vars, the tracking URI's user:password) reach no MLflow param, tag or
artifact and no console line, with a real `mlflow server` and the real `python -m jobs.pretrain`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow_helpers import serve_mlflow
from train_helpers import CI_CONFIG, ROOT, make_tiny_corpus

pytestmark = pytest.mark.slow
SECRETS = ("hunter2-pw", "s3cr3t-value", "tracking-pw-value")


def test_secrets_reach_no_mlflow_param_tag_artifact_or_console(tmp_path):
    from mlflow.tracking import MlflowClient

    corpus = make_tiny_corpus(tmp_path / "corpus")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, url = serve_mlflow(store, tmp_path / "server.log", artifacts=tmp_path / "artifacts")
    try:
        uri = url.replace("http://", "http://alice:hunter2-pw@")  # a server without auth ignores the login
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        out = subprocess.run(
            [sys.executable, "-m", "jobs.pretrain", "--config", str(CI_CONFIG),
             "--set", f"data.path={corpus}", "--set", f"checkpoint.storage_path={tmp_path / 'runs'}",
             "--set", f"tracking.uri={uri}", "--set", "train.max_steps=2", "--set", "train.num_workers=1",
             "--set", "ray.runtime_env={env_vars: {AWS_SECRET_ACCESS_KEY: s3cr3t-value, "
                      "MLFLOW_TRACKING_PASSWORD: tracking-pw-value}}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-5000:]
    assert "mlflow run: " in out.stdout and "alice:***" not in console and "http://***@127.0.0.1" in out.stdout
    assert not [s for s in SECRETS if s in console], console[-3000:]

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("unispeech-ci").experiment_id])
    logged = {**run.data.params, **run.data.tags}
    assert run.data.params["ray.runtime_env.env_vars.AWS_SECRET_ACCESS_KEY"] == "***"
    assert run.data.params["tracking.uri"].startswith("http://***@127.0.0.1")
    assert not [(k, v) for k, v in logged.items() if any(s in v for s in SECRETS)]
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "resolved.yaml" for p in files) and any(p.name == "model.safetensors" for p in files)
    assert not [str(p) for p in files if any(s.encode() in p.read_bytes() for s in SECRETS)]
