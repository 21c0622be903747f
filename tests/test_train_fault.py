"""Fault tolerance: SIGKILL a training worker mid-run; Ray Train restores the last checkpoint and the job ends
with exactly train.max_steps updates, and MLflow's step history has no gaps and no duplicates."""

from __future__ import annotations

import signal

import pytest
from train_helpers import local_ray, make_tiny_corpus, pretrain_command, signal_a_worker_mid_run

from unispeech_platform.tracking import metric_history

pytestmark = pytest.mark.slow
STEPS, EVERY = 20, 5
# Ray Train's controller announces its worker group: "- (ip=..., pid=123) world_rank=1, local_rank=1, ...".


def _committed(run_dir, name: str) -> bool:
    """A checkpoint counts once Ray Train has registered it (all ranks' parts uploaded), not when its
    directory appears: killing a worker in between correctly restarts from the previous checkpoint."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return name in snapshot.read_text()
    except FileNotFoundError:
        return False


def test_sigkilled_worker_is_restored_from_the_last_checkpoint(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "runs" / "fault"
    cmd = pretrain_command(corpus, tmp_path, "fault", f"train.max_steps={STEPS}", f"checkpoint.every_steps={EVERY}",
                           "train.max_failures=2")
    rc, out = signal_a_worker_mid_run(cmd, lambda _lines: _committed(run_dir, f"step_{EVERY:08d}"), signal.SIGKILL)
    (tmp_path / "job.log").write_text(out)  # for post-mortems
    assert rc == 0, out[-5000:]
    assert "resumed at update" in out, out[-5000:]
    run_id = out.split("mlflow run: ")[1].split()[0]
    steps = [s for s, _ in metric_history(uri, run_id, "loss")]
    assert sorted(steps) == list(range(1, STEPS + 1)), steps  # no gaps, no duplicates
    assert (run_dir / f"step_{STEPS:08d}").is_dir()


def test_resume_continues_a_stopped_job_in_the_same_mlflow_run(tmp_path):
    from train_helpers import ci_job

    from unispeech_platform.runtime.errors import JobSetupError
    from unispeech_platform.train import run_training

    corpus = make_tiny_corpus(tmp_path / "corpus")
    with local_ray():
        one = "train.num_workers=1"  # a resume is per run, not per rank (the SIGKILL test above needs two)
        first = run_training(ci_job(corpus, tmp_path, "stopped", "train.max_steps=4", "checkpoint.every_steps=2", one))
        with pytest.raises(JobSetupError, match="--resume"):
            run_training(ci_job(corpus, tmp_path, "stopped", "train.max_steps=6", one))
        second = run_training(ci_job(corpus, tmp_path, "stopped", "train.max_steps=6", one), resume=True)
    assert second.run_id == first.run_id and second.metrics["step"] == 6
    steps = [s for s, _ in metric_history(second.tracking_uri, second.run_id, "loss")]
    assert sorted(steps) == list(range(1, 7)), steps
