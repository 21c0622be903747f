"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: a second OpenMP thread only adds barrier waits, badly so when cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group for an in-process DeepSpeed engine, destroyed afterwards with DeepSpeed's cached
    clone of it: DeepSpeed keeps `groups._WORLD_GROUP` across engines, and a later module's new group would
    otherwise meet the dead clone ("Group ... is not registered")."""
    import os
    import socket

    import torch.distributed as dist
    from deepspeed.utils import groups

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    groups._WORLD_GROUP = None
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        groups._WORLD_GROUP = None
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def dead_uri(monkeypatch):
    """An MLflow server URI nobody listens on (with a login, which no warning may show), MLflow's own retries off
    and our pause shortened, so a refused call is quick: the tracking-outage tests that need no server."""
    import socket

    from unispeech_platform.tracking import retry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(retry, "PAUSE_S", 0.05)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://u:pw@127.0.0.1:{port}"

