"""Fixtures of the quickstart / cross-lingual / MLflow UI tests: the real entrypoints on their tiny presets, with
the corpus, runs and MLflow store under the session's temporary directory (made once, shared by the tests)."""

from __future__ import annotations

from pathlib import Path

from train_helpers import local_ray

_RUNS: dict[str, tuple] = {}  # one tiny quickstart per test session, shared by test_quickstart and test_mlflow_ui


def tiny_args(config: str, base: Path) -> list[str]:
    base.mkdir(parents=True, exist_ok=True)
    return [
        "--config", config,
        "--set", f"corpus.root={base / 'corpus'}",
        "--set", f"experiment.storage_path={base / 'runs'}",
        "--set", f"tracking.uri=sqlite:///{base / 'mlflow.db'}",
    ]


def tiny_quickstart(tmp_path_factory):
    """(result, stdout of the entrypoint, base dir) of `python -m jobs.quickstart` on configs/quickstart_tiny.yaml."""
    import contextlib
    import io

    from jobs import quickstart

    if "quickstart" not in _RUNS:
        base = tmp_path_factory.getbasetemp() / "experiments"
        out = io.StringIO()
        with local_ray(), contextlib.redirect_stdout(out):
            result = quickstart.main(tiny_args("configs/quickstart_tiny.yaml", base))
        _RUNS["quickstart"] = (result, out.getvalue(), base)
    return _RUNS["quickstart"]
