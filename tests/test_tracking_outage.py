"""A tracking outage never fails training: a real `mlflow server` is killed (SIGKILL) once the first step's metrics
are stored, while a real pretraining job runs. Restarted on the same port and store, every step ends up in MLflow
exactly once; never restarted, the job still finishes, its spool holds exactly the steps MLflow is missing, and the
next start (--resume) replays them."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fault_hooks import wait_at_update
from mlflow_helpers import kill_mlflow, serve_mlflow
from train_helpers import ci_job, local_ray, make_tiny_corpus

from unispeech_platform.config import TrackingSection
from unispeech_platform.tracking import MLflowTracker, metric_history, open_run, read_records, spool_path

pytestmark = pytest.mark.slow
STEPS = 16
GATE_AT = 8  # the job waits here until the outage is over (the server back, or for good)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("outage") / "corpus")


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """The file the jobs' workers wait for at update GATE_AT (a before-update hook from tests/fault_hooks.py that
    `ray_address` installs in every Ray worker): an Outage creates it once the server is back (or, never
    restarted, killed), so the job is still running when the restarted server can first be reached, however
    fast the machine."""
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def ray_address(gate):
    with local_ray(setup_hook=wait_at_update(GATE_AT, gate)) as address:
        yield address


class Outage(threading.Thread):
    """Kills the server as soon as the store holds a `loss` metric; with ``restart`` starts it again on the same
    port and store (the way a crashed server comes back)."""

    def __init__(self, proc, db: Path, log: Path, port: int, *, restart: bool, gate: Path):
        super().__init__(daemon=True)
        self.proc, self.db, self.log, self.port, self.restart = proc, db, log, port, restart
        self.gate = gate
        gate.unlink(missing_ok=True)
        self.killed_after: int | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def _stored_losses(self) -> int:
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1) as con:
                return con.execute("select count(*) from metrics where key = 'loss'").fetchone()[0]
        except sqlite3.Error:
            return 0

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            while (n := self._stored_losses()) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            kill_mlflow(self.proc)
            self.killed_after = n
            if self.restart:
                self.proc, _ = serve_mlflow(f"sqlite:///{self.db}", self.log, self.db.parent / "artifacts", self.port)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.gate.touch()  # the job goes on past update GATE_AT
            self.done.set()

    def stop(self) -> None:
        self.done.wait(timeout=120)
        kill_mlflow(self.proc)


def test_rank0_tracker_spools_replays_mid_run_and_a_restarted_tracker_skips_spooled_steps(tmp_path, monkeypatch):
    """The rank-0 tracker alone (no Ray): an outage mid-run, a worker restart during it, the server back."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused call fails at once
    db, lines = tmp_path / "mlflow.db", []
    proc, url = serve_mlflow(f"sqlite:///{db}", tmp_path / "server.log")
    try:
        run_id = open_run(url, TrackingSection(experiment="t"), "job", resume=False)
        spool = str(tmp_path / "run" / "mlflow_spool.jsonl")
        first = MLflowTracker(url, run_id, spool=spool, warn=lines.append)
        first.log_metrics({"loss": 1.0}, 1)
        kill_mlflow(proc)
        for step in (2, 3):
            first.log_metrics({"loss": float(step)}, step)  # spooled, never raises
        # Ray restarts the worker group from a checkpoint at step 1 while the server is still away.
        second = MLflowTracker(url, run_id, spool=spool, warn=lines.append, retry_first_s=0.2)
        assert second.watermark == 3
        for step in (2, 3, 4):
            second.log_metrics({"loss": 10.0 + step}, step)  # 2 and 3 were the first attempt's: dropped
        proc, _ = serve_mlflow(f"sqlite:///{db}", tmp_path / "server.log", port=int(url.rsplit(":", 1)[1]))
        time.sleep(0.5)
        second.log_metrics({"loss": 15.0}, 5)  # the server answers: the spool is replayed first, then step 5
        assert read_records(spool)[1] == [] and any("reachable again: replayed" in line for line in lines)
        second.log_metrics({"loss": 16.0}, 6)  # live again
        assert metric_history(url, run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0),
                                                       (6, 16.0)]
    finally:
        kill_mlflow(proc)


def _job_with_outage(corpus: Path, tmp: Path, *, restart: bool, capsys, gate: Path):
    from unispeech_platform.train import run_training

    db = tmp / "mlflow.db"
    proc, url = serve_mlflow(f"sqlite:///{db}", tmp / "server.log", tmp / "artifacts")
    outage = Outage(proc, db, tmp / "server.log", int(url.rsplit(":", 1)[1]), restart=restart, gate=gate)
    job = ci_job(corpus, tmp, "outage", f"tracking.uri={url}", f"train.max_steps={STEPS}", "train.num_workers=1",
                 "checkpoint.every_steps=8")
    outage.start()
    try:
        result = run_training(job)  # returns normally: the outage is not the job's failure
    finally:
        outage.stop()
    assert outage.error is None, outage.error
    assert outage.killed_after is not None and outage.killed_after < STEPS  # the kill landed mid-run
    console = capsys.readouterr().out
    return result, f"sqlite:///{db}", url, outage, console


def test_server_killed_and_restarted_every_step_once(corpus, ray_address, gate, tmp_path, capsys):
    result, store, _, _, console = _job_with_outage(corpus, tmp_path, restart=True, capsys=capsys, gate=gate)
    spool = spool_path(result.layout)
    assert "unreachable: spooling tracking records to " + spool in console, console[-3000:]
    assert "MLflow is reachable again: replayed" in console, console[-3000:]
    assert sorted(s for s, _ in metric_history(store, result.run_id, "loss")) == list(range(1, STEPS + 1))
    assert sorted(s for s, _ in metric_history(store, result.run_id, "lr")) == list(range(1, STEPS + 1))
    everything, pending = read_records(spool)
    assert pending == [] and any(r["kind"] == "metrics" for r in everything)  # spooled, then replayed

    from mlflow.tracking import MlflowClient

    run = MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.max_steps"] == str(STEPS)


def test_server_never_back_the_run_finishes_and_the_spool_holds_the_rest(corpus, ray_address, gate, tmp_path,
                                                                         capsys):
    from unispeech_platform.train import run_training

    result, store, url, outage, console = _job_with_outage(corpus, tmp_path, restart=False, capsys=capsys, gate=gate)
    spool = spool_path(result.layout)
    stored = [s for s, _ in metric_history(store, result.run_id, "loss")]
    _, pending = read_records(spool)
    spooled = [r["step"] for r in pending if r["kind"] == "metrics" and "loss" in r["metrics"]]
    missing = set(range(1, STEPS + 1)) - set(stored)
    assert stored and len(set(stored)) == len(stored) and missing, stored
    # In order, once, and every missing step (a request the server took just before it died may be spooled too:
    # the replay finds it stored and drops it).
    assert spooled == sorted(set(spooled)) and missing <= set(spooled), (stored, spooled)
    assert pending[-1]["kind"] == "end" and pending[-1]["status"] == "FINISHED"
    assert f"kept in {spool}" in console and "--resume" in console, console[-3000:]

    # The next start (the server is back): the spool is replayed before the run is reopened, nothing twice.
    proc, _ = serve_mlflow(store, tmp_path / "server.log", tmp_path / "artifacts", int(url.rsplit(":", 1)[1]))
    try:
        job = ci_job(corpus, tmp_path, "outage", f"tracking.uri={url}", f"train.max_steps={STEPS}",
                     "train.num_workers=1", "checkpoint.every_steps=8")
        again = run_training(job, resume=True)
    finally:
        kill_mlflow(proc)
    assert again.run_id == result.run_id
    assert sorted(s for s, _ in metric_history(store, result.run_id, "loss")) == list(range(1, STEPS + 1))
    assert read_records(spool)[1] == []
