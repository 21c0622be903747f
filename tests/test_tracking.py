"""Tracking: URI resolution, fail-fast on an unreachable server, one run per job, each step logged once."""

from __future__ import annotations

import socket

import pytest

from unispeech_platform.config import TrackingSection
from unispeech_platform.tracking import (
    MLflowTracker,
    TrackingError,
    check_reachable,
    log_job_start,
    metric_history,
    open_run,
    resolve_tracking_uri,
)


def test_default_uri_is_an_absolute_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingSection()) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri(TrackingSection(uri="sqlite:///rel/x.db")) == f"sqlite:///{tmp_path}/rel/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri(TrackingSection()) == "http://mlflow:5000"
    assert resolve_tracking_uri(TrackingSection(uri="https://x")) == "https://x"


def test_unreachable_server_fails_fast():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError, match="unreachable"):
        check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(TrackingError, match="cannot write"):
        check_reachable("sqlite:////nonexistent-dir/mlflow.db", timeout_s=1)


def test_resume_reopens_the_run_and_steps_are_logged_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    section = TrackingSection(experiment="t")
    run_id = open_run(uri, section, "job-a", resume=False)
    log_job_start(uri, run_id, {"train.max_steps": 5}, {"zero_stage": "2"}, "train: {}\n")
    first = MLflowTracker(uri, run_id)
    for step in (1, 2, 3):
        first.log_metrics({"loss": 10.0 - step}, step)
    # A restarted worker group (restored from step 1) reopens the same run and replays steps 2-3.
    assert open_run(uri, section, "job-a", resume=True) == run_id
    second = MLflowTracker(uri, run_id)
    for step in (2, 3, 4, 5):
        second.log_metrics({"loss": 100.0 + step}, step)
    steps = [s for s, _ in metric_history(uri, run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5]
    assert open_run(uri, section, "job-a", resume=False) != run_id  # a fresh job gets a fresh run


def test_a_failure_state_is_said_once_and_tags_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from unispeech_core import UniSpeechConfig
    from unispeech_platform.config import TrainSection
    from unispeech_platform.train.health import health_monitor, report_health

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = open_run(uri, TrackingSection(experiment="t"), "job-c", resume=False)
    tracker = MLflowTracker(uri, run_id)
    train = TrainSection(health_after_steps=10, stop_on=["collinear_targets"])
    monitor = health_monitor(train, UniSpeechConfig(num_codevector_groups=2), pretraining=True)
    said: list[str] = []
    collinear = {"cos_pos_neg": 0.995, "contrastive_loss": 4.6}  # ln(K+1) = 4.62 at 100 negatives
    assert report_health(monitor, collinear, 5, tracker=tracker, say=said.append, task="pretrain") is None
    assert said == []  # too early: every run starts with collinear targets
    collapsed = {"code_perplexity": 2.4}  # 1.2 per group
    assert report_health(monitor, collapsed, 20, tracker=tracker, say=said.append, task="pretrain") is None
    assert report_health(monitor, collapsed, 30, tracker=tracker, say=said.append, task="pretrain") is None
    assert len(said) == 1 and said[0].startswith("pretrain  HEALTH codebook_collapse at update 20: code perplexity 1.20")
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags["health/codebook_collapse"].startswith("update 20: code perplexity 1.20 per group")
    assert "health/stopped_on" not in tags  # codebook_collapse is not in stop_on
