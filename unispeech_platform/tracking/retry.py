"""Bounded retries for tracking calls, and which failures are worth retrying.

MLflow's HTTP client retries 7 times with backoff factor 2 and a 120 s timeout per request
(docs/architecture.md#mlflow): an outage surfaces only after minutes, while training waits. Our calls bound it
(a few seconds for a refused connection, about a minute for a host that does not answer) and then spool
(docs/training.md#tracking-outages)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
"""MLflow 3.x reads these per request (mlflow.environment_variables); a value the user set wins."""
TRIES, PAUSE_S = 2, 1.0
"""Our own attempts per call on top of MLflow's, and the pause between them."""


@contextlib.contextmanager
def bounded_http_retries() -> Iterator[None]:
    """MLflow's HTTP retries bounded for the calls inside (the variables the user did not set are restored after,
    so other MLflow users in this process keep MLflow's defaults)."""
    ours = [k for k in HTTP_BOUNDS if k not in os.environ]
    for k in ours:
        os.environ[k] = HTTP_BOUNDS[k]
    try:
        yield
    finally:
        for k in ours:
            os.environ.pop(k, None)


def is_transient(error: BaseException) -> bool:
    """A failure that may pass (unreachable server, timeout, 5xx, 429), as opposed to the store rejecting the
    request (4xx: retrying or replaying it would fail the same way forever)."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    if isinstance(error, (ValueError, TypeError, KeyError, AttributeError)):
        return False  # a malformed record: replaying it would fail the same way
    return True  # connection errors, OSError, a locked sqlite file, ...


def with_retries(call: Callable[[], T], *, tries: int | None = None, pause_s: float | None = None) -> T:
    """``call()`` with MLflow's retries bounded, tried up to ``tries`` (default TRIES) times while it fails
    transiently."""
    tries = TRIES if tries is None else tries
    pause_s = PAUSE_S if pause_s is None else pause_s
    for attempt in range(1, tries + 1):
        try:
            with bounded_http_retries():
                return call()
        except Exception as e:
            if attempt == tries or not is_transient(e):
                raise
            time.sleep(pause_s)
    raise AssertionError("unreachable")
