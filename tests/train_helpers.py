"""Shared fixtures of the training tests: a tiny generated corpus, the CI preset, a local Ray."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CI_CONFIG = ROOT / "configs" / "ci.yaml"
os.environ.setdefault("RAY_AUTH_MODE", "token")  # ~/.ray/auth_token may exist: be explicit (docs/architecture.md#ray-token-auth-and-security)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_tiny_corpus(root: Path) -> Path:
    """~100 short Spanish utterances (25% of train unlabeled) in the Parquet layout, in a few seconds."""
    from unispeech_platform.data.synthetic import make_corpus

    make_corpus(
        root, ["es"], 100, speakers=5, unlabeled_fraction=0.25, min_words=2, max_words=3, workers=1, progress=False
    )
    return root


def ci_job(corpus: Path, tmp: Path, name: str, *overrides: str, cls=PretrainJobConfig) -> PretrainJobConfig:
    return load_config(
        cls,
        CI_CONFIG,
        [
            f"data.path={corpus}",
            f"checkpoint.storage_path={tmp / 'runs'}",
            f"checkpoint.name={name}",
            f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            *overrides,
        ],
    )


def ci_finetune_job(corpus: Path, tmp: Path, name: str, init_from: str, *overrides: str) -> FinetuneJobConfig:
    return ci_job(
        corpus, tmp, name, f"finetune.init_from={init_from}", "checkpoint.score_metric=dev_per",
        "data.labeled_only=true", "model.mask_time_prob=0.05", *overrides, cls=FinetuneJobConfig,
    )


def pretrain_command(corpus: Path, tmp: Path, name: str, *overrides: str) -> list[str]:
    """`python -m jobs.pretrain` on the CI preset as a subprocess, its runs and MLflow store under `tmp` (the
    command-line twin of `ci_job`)."""
    sets = [f"data.path={corpus}", f"checkpoint.storage_path={tmp / 'runs'}", f"checkpoint.name={name}",
            f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", *overrides]
    return [sys.executable, "-m", "jobs.pretrain", "--config", str(CI_CONFIG),
            *(arg for value in sets for arg in ("--set", value))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server or a Ray head a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_ray(num_cpus: int = 8, setup_hook: Callable[[], None] | None = None):
    """A private local Ray (address="local": a new instance even when another session runs `ray start` here), with
    more logical CPUs than cores, or train workers starve Ray Data's read tasks
    (docs/architecture.md#ray-train-ray-data-and-ray-tune). Workers' logs stay in Ray's log files, as for a job
    started from the command line (runtime/ray_session.py): forwarding them costs CPU, and the console under test
    is what a user sees. ``setup_hook`` runs in every worker process of the jobs this process runs in it (a fault
    from tests/fault_hooks.py); a job started as a subprocess is another Ray job and does not get it."""
    import ray

    runtime_env = {"worker_process_setup_hook": setup_hook} if setup_hook else None
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env=runtime_env)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


WORKER_LINE = re.compile(r"rank (\d+) pid (\d+) on node")  # a job's own "workers: rank N pid P on node X" line


def signal_a_worker_mid_run(cmd: list[str], ready: Callable[[list[str]], bool], sig: int, rank: int = 1,
                            timeout_s: float = 400) -> tuple[int, str]:
    """Run a training job (`cmd`) as a subprocess on a fresh local Ray, send `sig` to the training worker of
    `rank` as soon as `ready(console lines so far)` holds, and wait for the job. Returns (returncode, console);
    the console also names the signal the test sent."""
    lines: list[str] = []
    with local_ray() as address:
        job = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
        reader.start()
        try:
            deadline = time.time() + timeout_s
            while not ready(list(lines)):
                assert job.poll() is None, "".join(lines)[-5000:]
                assert time.time() < deadline, "the job never got ready to be signalled"
                time.sleep(0.1)
            ranks = {int(r): int(p) for line in list(lines) for r, p in WORKER_LINE.findall(line)}
            os.kill(ranks[rank], sig)  # a train worker of the job this test started
            lines.append(f"TEST: signal {sig} sent to rank {rank} (pid {ranks[rank]}) of {ranks}\n")
            job.wait(timeout=500)
            reader.join(timeout=10)
        finally:
            if job.poll() is None:
                job.kill()
    return job.returncode, "".join(lines)
