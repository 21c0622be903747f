"""`ray job submit` against a real local head started by cluster/local_cluster.sh runs jobs.pretrain to
SUCCEEDED against a real `mlflow server`; the job's MLflow run lands there, and the secrets it was given (a
runtime_env's env_vars, the tracking URI's user:password) reach no MLflow param, tag or artifact and no line of
the job's log. One job for both: a submitted job on a real head is the slowest path in the suite to start."""

from __future__ import annotations

import os
import subprocess

import pytest
from mlflow_helpers import kill_mlflow, serve_mlflow
from train_helpers import ROOT, free_port, make_tiny_corpus

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "cluster" / "local_cluster.sh"
SECRETS = ("hunter2-pw", "s3cr3t-value", "tracking-pw-value")



def test_ray_job_submit_runs_pretrain_to_succeeded_and_no_secret_reaches_mlflow_or_the_log(tmp_path):
    from mlflow.tracking import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient

    corpus = make_tiny_corpus(tmp_path / "corpus")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dash = free_port()
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",  # the job's `python` is the venv's
        "RAY_HEAD_PORT": str(free_port()),
        "RAY_DASHBOARD_PORT": str(dash),
        "RAY_NODE_CPUS": "8",
        "RAY_LOCAL_CLUSTER_DIR": str(tmp_path / "cluster"),
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)
    proc, url = serve_mlflow(store, tmp_path / "server.log", artifacts=tmp_path / "artifacts")
    subprocess.run([str(SCRIPT), "start", "0"], env=env, check=True, timeout=240)
    try:
        address = f"http://127.0.0.1:{dash}"
        uri = url.replace("http://", "http://alice:hunter2-pw@")  # a server without auth ignores the login
        submit = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--submission-id", "pretrain-ci",
             "--", "python", "-m", "jobs.pretrain", "--config", "configs/ci.yaml",
             "--set", f"data.path={corpus}", "--set", f"checkpoint.storage_path={tmp_path / 'runs'}",
             "--set", f"tracking.uri={uri}", "--set", "train.max_steps=3", "--set", "train.num_workers=1",
             "--set", "ray.runtime_env={env_vars: {AWS_SECRET_ACCESS_KEY: s3cr3t-value, "
                      "MLFLOW_TRACKING_PASSWORD: tracking-pw-value}}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        client = JobSubmissionClient(address)
        status = client.get_job_status("pretrain-ci")
        # The job's own output. Ray's supervisor starts it with "Running entrypoint for job <id>: <command as typed>",
        # the --set secrets included: Ray's line, not ours (docs/cluster.md#tracking-on-clusters says to pass
        # secrets through the environment for that reason), so it is left out of the search.
        job_log = "\n".join(line for line in client.get_job_logs("pretrain-ci").splitlines()
                             if not line.startswith("Running entrypoint for job pretrain-ci:"))
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, timeout=120)
        kill_mlflow(proc)
    (tmp_path / "job.log").write_text(job_log)  # for post-mortems
    assert status == JobStatus.SUCCEEDED, (submit.stdout + submit.stderr)[-5000:]
    assert submit.returncode == 0
    run_id = submit.stdout.split("mlflow run: ")[1].split()[0]
    from unispeech_platform.tracking import metric_history

    assert [s for s, _ in metric_history(store, run_id, "loss")] == [1, 2, 3]
    # The console a user reads: one line per logging interval with an ETA; no Ray Data progress bars, no
    # per-worker log forwarding (DeepSpeed/accelerator notices), the precision and why.
    out = submit.stdout
    assert "pretrain  update 3/3  loss " in out and " ETA " in out, out[-3000:]
    assert "pretrain  precision " in out and "thread(s) each" in out
    assert "Running Dataset" not in out and "ReadParquet" not in out and "(RayTrainWorker" not in out
    assert "Setting accelerator to CPU" not in out

    # Secrets: the tracking URI is printed with its password masked, and no secret is in the job's log ...
    assert "alice:***" not in job_log and "http://***@127.0.0.1" in job_log, job_log[-3000:]
    assert not [s for s in SECRETS if s in job_log], job_log[-3000:]
    # ... nor in any MLflow param, tag or artifact (the masked values are logged instead).
    mlflow = MlflowClient(store)
    run = mlflow.get_run(run_id)
    logged = {**run.data.params, **run.data.tags}
    assert run.data.params["ray.runtime_env.env_vars.AWS_SECRET_ACCESS_KEY"] == "***"
    assert run.data.params["tracking.uri"].startswith("http://***@127.0.0.1")
    assert not [(k, v) for k, v in logged.items() if any(s in v for s in SECRETS)]
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "resolved.yaml" for p in files) and any(p.name == "model.safetensors" for p in files)
    assert not [str(p) for p in files if any(s.encode() in p.read_bytes() for s in SECRETS)]
