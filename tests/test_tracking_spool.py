"""The tracking spool and best-effort store without Ray or a server: records spooled while MLflow is unreachable
(an http URI nobody listens on) are kept on disk, survive a torn line, and replay into a real store in order,
once, even when the replay itself is repeated."""

from __future__ import annotations

import json

import pytest

from unispeech_platform.config import TrackingSection
from unispeech_platform.runtime.layout import RunLayout
from unispeech_platform.tracking import (
    BestEffortStore,
    MLflowTracker,
    Spool,
    metric_history,
    open_run,
    read_records,
    retry,
    spool_path,
)


def test_spool_is_append_only_and_remembers_what_was_replayed(tmp_path):
    path = str(tmp_path / "run" / "mlflow_spool.jsonl")
    spool = Spool(path)
    for step in (1, 2, 3):
        spool.append({"run_id": "r", "kind": "metrics", "step": step, "metrics": {"loss": float(step)}})
    spool.mark_replayed(1)
    with open(path, "a") as f:
        f.write('{"seq": 4, "run_id": "r", "ki')  # a crash mid-write
    again = Spool(path)
    assert [r["step"] for r in again.pending] == [2, 3]
    assert again.max_step("r", "loss") == 3 and again.max_step("r", "other") == -1
    again.append({"run_id": "r", "kind": "tags", "tags": {"a": "b"}})
    everything, pending = read_records(path)
    assert [r["seq"] for r in everything] == [1, 2, 3, 4] and [r["seq"] for r in pending] == [2, 3, 4]
    assert all(json.loads(line) for line in open(path) if not line.startswith('{"seq": 4, "run_id": "r", "ki'))


def test_spool_path_is_in_the_run_dir_or_on_local_disk_for_remote_storage(tmp_path, monkeypatch):
    assert spool_path(RunLayout(str(tmp_path), "job")) == f"{tmp_path}/job/mlflow_spool.jsonl"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    remote = spool_path(RunLayout("s3://bucket/runs", "job"))
    assert remote.startswith(f"{tmp_path}/cache/unispeech/tracking-spool/job-") and remote.endswith(".jsonl")


def test_unreachable_store_spools_and_replays_once_in_order(tmp_path, dead_uri):
    sqlite = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = open_run(sqlite, TrackingSection(experiment="t"), "job", resume=False)
    path = str(tmp_path / "spool.jsonl")
    lines: list[str] = []
    down = BestEffortStore(dead_uri, Spool(path), warn=lines.append)
    for step in (1, 2, 3):
        down.log_metrics(run_id, {"loss": 10.0 - step, "nan": float("nan")}, step)  # never raises
    down.log_params(run_id, {"train.max_steps": 3})
    down.set_tags(run_id, {"zero_stage": "2"})
    down.end(run_id, "FINISHED")
    assert [r["kind"] for r in down.spool.pending] == ["metrics"] * 3 + ["params", "tags", "end"]
    assert any("spooling tracking records to " + path in line for line in lines)
    assert "6 record(s)" in down.pending_line() and path in down.pending_line()
    assert not [line for line in lines if "pw" in line]  # the login never reaches a warning

    up = BestEffortStore(sqlite, Spool(path), warn=lines.append)  # the next start: the store answers
    assert up.flush(force=True) and not up.spool.pending
    assert metric_history(sqlite, run_id, "loss") == [(1, 9.0), (2, 8.0), (3, 7.0)]
    run = up.store.run(run_id)
    assert run.data.params["train.max_steps"] == "3" and run.data.tags["zero_stage"] == "2"
    assert run.info.status == "FINISHED"
    assert BestEffortStore(sqlite, Spool(path)).spool.pending == []  # the replay position is on disk

    (tmp_path / "spool.jsonl.replayed").unlink()  # a crash after the store took the records, before the marker
    assert BestEffortStore(sqlite, Spool(path), warn=lines.append).flush(force=True)
    assert [s for s, _ in metric_history(sqlite, run_id, "loss")] == [1, 2, 3]  # no duplicates


def test_tracker_watermark_comes_from_the_spool_while_the_store_is_away(tmp_path, dead_uri):
    path = str(tmp_path / "spool.jsonl")
    first = MLflowTracker(dead_uri, "run-x", spool=path, warn=lambda line: None)
    for step in (1, 2, 3, 4):
        first.log_metrics({"loss": 1.0}, step)
    restarted = MLflowTracker(dead_uri, "run-x", spool=path, warn=lambda line: None)  # restored from step 2
    assert restarted.watermark == 4
    for step in (3, 4, 5):
        restarted.log_metrics({"loss": 2.0}, step)
    assert [r["step"] for r in Spool(path).pending] == [1, 2, 3, 4, 5]


def test_a_spooled_end_replayed_at_the_next_start_leaves_the_run_running(tmp_path, dead_uri):
    """A run the driver continues with a given run id (a resumed sweep trial) is RUNNING again after the previous
    start's spooled end is replayed."""
    from unispeech_platform.tracking import log_job_start

    sqlite = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = open_run(sqlite, TrackingSection(experiment="t"), "job", resume=False)
    path = str(tmp_path / "spool.jsonl")
    BestEffortStore(dead_uri, Spool(path), warn=lambda line: None).end(run_id, "FAILED")
    log_job_start(sqlite, run_id, {"a": 1}, {"b": "2"}, "a: 1\n", spool=path, warn=lambda line: None)
    run = BestEffortStore(sqlite, Spool(None)).store.run(run_id)
    assert run.info.status == "RUNNING" and run.data.params["a"] == "1" and Spool(path).pending == []


def test_spools_of_finished_stages_replay_in_one_pass_and_a_scheduled_run_starts(tmp_path, dead_uri):
    """An experiment's stage runs are created SCHEDULED; the job given one marks it RUNNING (log_job_start with
    reopen). What its stages spooled is replayed by replay_spools; while the server is away, one warning, and every
    file still holding records is named."""
    from unispeech_platform.tracking import RunStore, log_job_start, replay_spools

    sqlite = f"sqlite:///{tmp_path}/mlflow.db"
    store = RunStore(sqlite)
    exp = store.experiment_id("t")
    runs = [store.schedule(store.create_run(exp, name)) for name in ("a/pretrain", "a/finetune")]
    assert store.run(runs[0]).info.status == "SCHEDULED"
    log_job_start(sqlite, runs[0], {"a": 1}, {}, "a: 1\n", spool=str(tmp_path / "none.jsonl"), reopen=True)
    assert store.run(runs[0]).info.status == "RUNNING"
    paths = [str(tmp_path / stage / "mlflow_spool.jsonl") for stage in ("pre", "ft")]
    for run_id, path in zip(runs, paths):
        down = BestEffortStore(dead_uri, Spool(path), warn=lambda line: None)
        down.log_metrics(run_id, {"loss": 1.0}, 1)
        down.end(run_id, "FINISHED")
    lines: list[str] = []
    missing = str(tmp_path / "never" / "mlflow_spool.jsonl")
    assert replay_spools(dead_uri, [*paths, missing], warn=lines.append) == paths
    assert len([line for line in lines if "unreachable" in line]) == 1
    assert replay_spools(sqlite, [*paths, missing], warn=lines.append) == []
    assert all(store.run(r).info.status == "FINISHED" and metric_history(sqlite, r, "loss") == [(1, 1.0)]
               for r in runs)
    assert all(read_records(p)[1] == [] for p in paths)


def test_a_spool_file_in_the_current_format_replays_through_run_tracking(tmp_path):
    """The JSON-lines format is the contract between versions: a spool written by an earlier start (each record
    kind as `{"seq", "time", "run_id", "kind", ...}`) replays, in order, through the object jobs use; a kind this
    version does not know is dropped with a warning, the rest still lands."""
    from unispeech_platform.tracking import RunStore, RunTracking

    sqlite = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = open_run(sqlite, TrackingSection(experiment="t"), "job", resume=False)
    vocab = tmp_path / "vocab.json"
    vocab.write_text('{"a": 1}')
    records = [
        {"kind": "metrics", "step": 1, "metrics": {"loss": 3.0}},
        {"kind": "metrics", "step": 2, "metrics": {"loss": 2.0, "lr": 0.1}},
        {"kind": "params", "params": {"train.max_steps": "3"}},
        {"kind": "tags", "tags": {"zero_stage": "2"}},
        {"kind": "text", "text": "a: 1\n", "artifact_file": "config/resolved.yaml"},
        {"kind": "artifacts", "local": str(vocab), "artifact_path": "vocab"},
        {"kind": "model", "local": str(tmp_path / "gone"), "registered_model": None},
        {"kind": "end", "status": "FAILED"},
        {"kind": "from-a-later-version"},
        {"kind": "reopen"},
        {"kind": "metrics", "step": 3, "metrics": {"loss": 1.0}},
        {"kind": "end", "status": "FINISHED"},
    ]
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    with open(job_dir / "mlflow_spool.jsonl", "w") as f:
        for seq, record in enumerate(records, 1):
            f.write(json.dumps({"seq": seq, "time": 1700000000.0 + seq, "run_id": run_id, **record}) + "\n")
    lines: list[str] = []
    assert RunTracking(sqlite, job_dir, warn=lines.append).replay() == []
    assert metric_history(sqlite, run_id, "loss") == [(1, 3.0), (2, 2.0), (3, 1.0)]
    store = RunStore(sqlite)
    run = store.run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.max_steps"] == "3"
    assert run.data.tags["zero_stage"] == "2" and run.data.metrics["lr"] == 0.1
    assert {a.path for a in store.client.list_artifacts(run_id, "vocab")} == {"vocab/vocab.json"}
    assert [a.path for a in store.client.list_artifacts(run_id, "config")] == ["config/resolved.yaml"]
    assert any("is gone: no MLflow Model logged" in line for line in lines)
    assert any("rejected 1 record(s) (from-a-later-version)" in line for line in lines)
    assert read_records(str(job_dir / "mlflow_spool.jsonl"))[1] == []


def test_only_transient_failures_are_retried():
    from mlflow.exceptions import MlflowException

    calls = []

    def refused():
        calls.append(1)
        raise MlflowException("API request failed: connection refused")  # INTERNAL_ERROR -> 500

    with pytest.raises(MlflowException):
        retry.with_retries(refused, tries=3, pause_s=0)
    assert len(calls) == 3
    assert not retry.is_transient(MlflowException.invalid_parameter_value("param changed"))
    assert not retry.is_transient(KeyError("metrics")) and retry.is_transient(ConnectionError())


def test_http_retries_are_bounded_only_inside_our_calls_and_a_user_value_wins(monkeypatch):
    import os

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with retry.bounded_http_retries():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == retry.HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
