"""A real `mlflow server` subprocess for the tests that need a server (the UI, tracking over HTTP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from train_helpers import free_port


def serve_mlflow(uri: str, log: Path, artifacts: Path | None = None, port: int | None = None):
    """`mlflow server` on 127.0.0.1 (``port``, default a free one); returns (process, base url) once /health
    answers. Artifacts go to ``artifacts`` (default: the server's ./mlartifacts)."""
    port = port or free_port()
    extra = ["--artifacts-destination", str(artifacts)] if artifacts else []
    # MLflow 3's job execution (GenAI jobs) starts a runner and eight huey consumers with every server: ~35 s of
    # CPU per start on a 2-core machine, for a feature nothing here uses (docs/cluster.md#tracking-on-clusters).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", *extra], stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True)  # its own process group: `mlflow server` runs uvicorn in a child (kill_mlflow)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"mlflow server did not answer on {url}")


def kill_mlflow(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its uvicorn child (killing only the `mlflow server` process leaves the child serving)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
