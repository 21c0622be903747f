"""Preemption and crash loops (docs/training.md#fault-tolerance).

- gloo, two ranks from a forkserver, no Ray (the harness of test_train_collectives.py): an out-of-memory forward
  pass on one rank is skipped by every rank and counted; too many in a row stop every rank; SIGTERM on one rank (the real
  handler, a real signal) stops every rank at the same update boundary; a second SIGTERM exits as before.
- the restart history's verdicts on hand-written event files (no Ray).
- real jobs (slow): SIGTERM to a training worker mid-run -> checkpoint at that update, restart from it, exactly
  max_steps updates, every MLflow step once; a fault at the same update in every attempt -> the job stops after
  the second failure with one line naming the update, without burning the remaining restarts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_hooks import fail_at_update
from train_helpers import (
    ci_job,
    local_ray,
    make_tiny_corpus,
    pretrain_command,
    signal_a_worker_mid_run,
)

# train_helpers first: it sets RAY_AUTH_MODE before anything imports Ray
# isort: split
from test_train_collectives import CPU, _run_two_ranks, _sgd_reference, _SGDEngine, _XYStream

from unispeech_platform.runtime.cli import run_or_exit
from unispeech_platform.runtime.errors import EXIT_FAILED, TrainingStoppedError
from unispeech_platform.train.batches import LockstepBatches
from unispeech_platform.train.checkpoint import TrainState
from unispeech_platform.train.faults import is_out_of_memory, likely_cause
from unispeech_platform.train.metrics import Window
from unispeech_platform.train.preemption import SIGTERM_FLAG, PreemptionSignals, preemption_signals
from unispeech_platform.train.restarts import RestartHistory
from unispeech_platform.train.step import MAX_CONSECUTIVE_OOM, accumulate_update

# ----------------------------------------------------------------------------------- out of memory (gloo)


class _OOMTask:
    """loss = (w·x − y)²; the forward pass raises `error` on the listed (rank, micro-batch position)s."""

    def __init__(self, rank: int, at: set[tuple[int, int]], error: BaseException):
        self.rank, self.at, self.error = rank, at, error

    def forward(self, engine, batch: dict[str, Any], device: torch.device):
        if (self.rank, batch["id"][2] + 1) in self.at:
            _activations = torch.ones(1000)  # held by the frame, freed with the error  # noqa: F841
            raise self.error
        x, y = batch["xy"]
        return (engine.module.w * x - y) ** 2, {}


def _accumulate(rank: int, task, updates: int = 1) -> dict[str, Any]:
    engine, state = _SGDEngine(), TrainState()
    feed = LockstepBatches(lambda epoch: _XYStream(rank, epoch, 30), device=CPU)
    window = Window(CPU)
    try:
        for _ in range(updates):
            accumulate_update(task, engine, feed, state, window, 2, CPU)
    except MemoryError as e:
        return {"error": str(e), "position": feed.position, "oom": state.oom_skipped, "steps": engine.steps}
    return {"w": float(engine.module.w), "steps": engine.steps, "oom": state.oom_skipped,
            "nonfinite": state.nonfinite_skipped, "position": feed.position, "micro": window.micro_n}


def _worker_cuda_oom(rank: int) -> dict[str, Any]:
    return _accumulate(rank, _OOMTask(rank, {(1, 2)}, torch.OutOfMemoryError("CUDA out of memory. Tried to "
                                                                              "allocate 2.00 GiB")))


def _worker_cpu_oom(rank: int) -> dict[str, Any]:
    cpu_error = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                             "you tried to allocate 123456789 bytes. out of memory")
    return _accumulate(rank, _OOMTask(rank, {(0, 1)}, cpu_error))


def _worker_oom_forever(rank: int) -> dict[str, Any]:
    return _accumulate(rank, _OOMTask(rank, {(0, i) for i in range(1, 31)}, MemoryError()), updates=1)


def test_an_out_of_memory_forward_on_one_rank_is_skipped_by_every_rank(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_cuda_oom, tmp_path)
    for rank, r in enumerate((r0, r1)):
        # 3 micro-batches read, rank 1's 2nd ran out of memory: every rank skipped it, counted once, no NaN count
        assert (r["position"], r["steps"], r["oom"], r["nonfinite"], r["micro"]) == (3, 2, 1, 0, 2), rank
        assert r["w"] == pytest.approx(_sgd_reference(rank, [0, 2]), rel=1e-6), rank  # the skipped batch left no trace


def test_a_cpu_allocation_failure_is_skipped_too(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_cpu_oom, tmp_path)
    for rank, r in enumerate((r0, r1)):
        assert (r["position"], r["steps"], r["oom"]) == (3, 2, 1), rank
        assert r["w"] == pytest.approx(_sgd_reference(rank, [1, 2]), rel=1e-6), rank


def test_too_many_out_of_memory_batches_in_a_row_stop_every_rank(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_oom_forever, tmp_path)
    assert r0 == r1  # same batches read, same count, same message on both ranks: nobody hangs in a collective
    assert (r0["position"], r0["oom"], r0["steps"]) == (MAX_CONSECUTIVE_OOM, MAX_CONSECUTIVE_OOM, 0)
    assert f"{MAX_CONSECUTIVE_OOM} consecutive micro-batches ran out of memory at update 1" in r0["error"]


class _Zero3Engine(_SGDEngine):
    def zero_optimization_stage(self) -> int:
        return 3


def test_under_zero3_an_out_of_memory_forward_fails_the_attempt() -> None:
    # ZeRO-3 gathers parameters inside the forward pass: the other ranks may wait in that collective, so the error
    # is not skipped but raised (Ray Train restarts; the crash-loop stop catches a repeat)
    feed = LockstepBatches(lambda epoch: _XYStream(0, epoch, 3), device=CPU)
    task = _OOMTask(0, {(0, 1)}, torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        accumulate_update(task, _Zero3Engine(), feed, TrainState(), Window(CPU), 1, CPU)


def test_other_errors_are_not_mistaken_for_out_of_memory() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    wrapped = RuntimeError("worker failed")
    wrapped.__cause__ = torch.OutOfMemoryError("CUDA out of memory")
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("memory layout"))
    assert likely_cause(MemoryError()).startswith("out of memory on a batch")
    assert likely_cause(OSError("Couldn't deserialize thrift: corrupt parquet page")).startswith("unreadable data")
    assert likely_cause(KeyError("labels")).startswith("the same error each time: KeyError")
    assert likely_cause(RuntimeError("[pair.cc:545] Read error: Connection reset by peer")).startswith(
        "a peer rank went away")


# ----------------------------------------------------------------------------------------- SIGTERM (gloo)

SIGNAL_AT = 2  # rank 1 receives SIGTERM during update 2


def _worker_sigterm(rank: int) -> dict[str, Any]:
    chained: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: chained.append(signum))  # stands in for Ray's exit
    SIGTERM_FLAG.arm()  # training on the main thread: installs the handler (Ray Train: SigtermFlagCallback)
    seen = []
    for update in range(1, 5):
        if rank == 1 and update == SIGNAL_AT:
            os.kill(os.getpid(), signal.SIGTERM)
        draining = rank == 0 and update == 1  # Ray's drain notice reaches one rank first
        seen.append(preemption_signals(CPU, draining=draining))
        if seen[-1].sigterm_rank is not None:
            break
    first_chained = list(chained)
    os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM: the previous handler (Ray's: exit) runs
    SIGTERM_FLAG.disarm()
    os.kill(os.getpid(), signal.SIGTERM)  # no training running: the previous handler too
    return {"seen": seen, "chained_after_first": first_chained, "chained": chained}


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_update(tmp_path: Path) -> None:
    r0, r1 = _run_two_ranks(_worker_sigterm, tmp_path)
    # both ranks see the drain notice at update 1 and stop after update 2, both naming rank 1
    assert r0["seen"] == r1["seen"] == [PreemptionSignals(None, True), PreemptionSignals(1, False)]
    assert r1["chained_after_first"] == []  # the first SIGTERM only set the flag: the process lives on
    assert r1["chained"] == [signal.SIGTERM, signal.SIGTERM]  # the second, and the one after disarm
    assert r0["chained"] == [signal.SIGTERM]  # rank 0's first SIGTERM set its flag; after disarm it chains


# ------------------------------------------------------------------------------- the restart history


def _event(history: RestartHistory, name: str, **payload: Any) -> None:
    os.makedirs(history.dir, exist_ok=True)
    Path(history.dir, name).write_text(json.dumps(payload))


def test_crash_loop_verdict_needs_the_same_place_in_two_attempts(tmp_path: Path) -> None:
    history = RestartHistory(str(tmp_path / "run"), "fit-1")
    assert history.begin(None) == (1, None)
    _event(history, "001-failed-rank1.json", attempt=1, rank=1, where="update 7", error="RuntimeError: x",
           cause="the same error each time: RuntimeError: x")
    assert history.begin("step_00000004") == (2, None)  # one failure at update 7: a restart is worth it
    _event(history, "002-failed-rank0.json", attempt=2, rank=0, where="update 7", error="RuntimeError: peer",
           cause="a peer rank went away (its own error or a lost node): RuntimeError: Connection closed by peer")
    _event(history, "002-failed-rank1.json", attempt=2, rank=1, where="update 7", error="OutOfMemoryError",
           cause="out of memory on a batch (...): OutOfMemoryError: CUDA out of memory")
    attempt, verdict = history.begin("step_00000004")
    assert attempt == 3
    assert verdict == ("update 7 failed in 2 attempts (attempts 1, 2; the last restored step_00000004): likely "
                       "cause: out of memory on a batch (...): OutOfMemoryError: CUDA out of memory. Fix it and "
                       "rerun with --resume")  # the specific cause wins over the peer's collateral error
    assert history.stopped() == verdict
    assert RestartHistory(str(tmp_path / "run"), "fit-2").crash_loop() is None  # a new invocation starts clean


def test_a_peer_error_never_hides_the_failing_rank_s_own_error(tmp_path: Path) -> None:
    history = RestartHistory(str(tmp_path / "run"), "fit-1")
    for attempt in (1, 2):
        history.begin(None)
        history.record_failure(attempt, 0, "update 3", RuntimeError("Read error: Connection reset by peer"))
        history.record_failure(attempt, 1, "update 3", KeyError("labels"))
    assert "likely cause: the same error each time: KeyError: 'labels'" in history.crash_loop()


def test_failures_at_different_places_are_not_a_loop(tmp_path: Path) -> None:
    history = RestartHistory(str(tmp_path / "run"), "fit-1")
    for attempt, where in ((1, "update 7"), (2, "update 9"), (3, "update 13")):
        history.begin(None)
        history.record_failure(attempt, 0, where, RuntimeError("flaky network"))
    assert history.crash_loop() is None and history.stopped() is None
    assert [a.index for a in history.attempts()] == [1, 2, 3]


def test_a_stopped_run_exits_1_with_one_line(capsys) -> None:
    def stopped() -> None:
        raise TrainingStoppedError("update 7 failed in 2 attempts")

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(stopped)
    assert exit_info.value.code == EXIT_FAILED
    assert capsys.readouterr().err == "training stopped: update 7 failed in 2 attempts\n"


# ------------------------------------------------------------------------------------------ real jobs

PREEMPT_LINE = re.compile(r"SIGTERM on rank (\d+): saving a checkpoint at update (\d+)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_tiny_corpus(tmp_path_factory.mktemp("preemption") / "corpus")


@pytest.mark.slow
def test_sigterm_to_a_worker_saves_a_checkpoint_and_the_job_resumes_from_it(tmp_path: Path, corpus: Path) -> None:
    steps, every = 14, 5
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "runs" / "preempted"
    cmd = pretrain_command(corpus, tmp_path, "preempted", f"train.max_steps={steps}", f"checkpoint.every_steps={every}",
                           "checkpoint.keep=10", "train.max_failures=1")
    # mid-run, before the first checkpoint
    rc, out = signal_a_worker_mid_run(cmd, lambda lines: any("update 2/" in line for line in lines), signal.SIGTERM)
    (tmp_path / "job.log").write_text(out)  # for post-mortems
    assert rc == 0, out[-5000:]
    signalled, at = (int(v) for v in PREEMPT_LINE.search(out).groups())
    assert signalled == 1 and 2 <= at < steps, out[-5000:]
    assert f"resumed at update {at} " in out, out[-5000:]  # from the preemption checkpoint, not an older one
    snapshot = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    assert f"step_{at:08d}" in snapshot and (run_dir / f"step_{at:08d}").is_dir()  # registered, kept
    assert (run_dir / f"step_{steps:08d}").is_dir()
    run_id = out.split("mlflow run: ")[1].split()[0]
    from unispeech_platform.tracking import metric_history

    logged = [s for s, _ in metric_history(uri, run_id, "loss")]
    assert sorted(logged) == list(range(1, steps + 1)), logged  # every update once: no gap, no duplicate


@pytest.mark.slow
def test_the_same_failure_after_a_restore_stops_the_job(tmp_path: Path, corpus: Path) -> None:
    from unispeech_platform.train import run_training

    fault = fail_at_update(6, rank=1)  # rank 1 fails at the start of update 6, in every attempt
    job = ci_job(corpus, tmp_path, "looping", "train.max_steps=10", "checkpoint.every_steps=4",
                 "train.max_failures=5")
    started = time.time()
    with local_ray(setup_hook=fault), pytest.raises(TrainingStoppedError) as stopped:
        run_training(job)
    elapsed = time.time() - started
    message = str(stopped.value)
    assert message.startswith("update 6 failed in 2 attempts (attempts 1, 2; the last restored step_00000004)")
    assert "likely cause: the same error each time: RuntimeError: injected fault at update 6 on rank 1" in message
    assert "\n" not in message
    history_dirs = list((tmp_path / "runs" / "looping" / "restarts").iterdir())
    starts = sorted(p.name for p in history_dirs[0].glob("*-start.json"))
    assert starts == ["001-start.json", "002-start.json", "003-start.json"], elapsed  # not 6 attempts
