"""runtime: every output path from one RunLayout, and errors mapped to exit codes by the shared CLI."""

from __future__ import annotations

import os

import pytest

from unispeech_platform.config import CheckpointSection, ConfigError
from unispeech_platform.runtime.cli import run_or_exit
from unispeech_platform.runtime.errors import EXIT_CONFIG, EXIT_SETUP, JobSetupError
from unispeech_platform.runtime.layout import RunLayout, model_dir_candidates
from unispeech_platform.tracking import TrackingError


def test_run_layout_owns_every_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = RunLayout.of(CheckpointSection(name="job", storage_path="runs"))
    run = f"{tmp_path}/runs/job"
    assert layout.run_dir == run and layout.is_local
    assert (layout.export_dir, layout.best_export_dir, layout.ctc_head_export_dir) == (
        f"{run}/model", f"{run}/model_best", f"{run}/model_ctchead")
    assert layout.output_dir("lid") == f"{run}/lid"
    assert RunLayout.checkpoint_dir_name(12) == "step_00000012"
    custom = RunLayout.of(CheckpointSection(name="job", storage_path="runs", export_dir="out/m"))
    assert (custom.export_dir, custom.best_export_dir) == (f"{tmp_path}/out/m", f"{tmp_path}/out/m_best")


def test_uri_storage_needs_a_local_export_dir():
    layout = RunLayout.of(CheckpointSection(name="job", storage_path="s3://bucket/prefix/"))
    assert layout.run_dir == "s3://bucket/prefix/job" and not layout.is_local
    with pytest.raises(ValueError, match="export_dir must be set"):
        _ = layout.export_dir


def test_model_dir_candidates_prefer_the_best_export_only_for_evaluation():
    assert model_dir_candidates("r", best=True) == ["r", os.path.join("r", "model_best"), os.path.join("r", "model")]
    assert model_dir_candidates("r", best=False) == ["r", os.path.join("r", "model")]


@pytest.mark.parametrize(
    "error, code, prefix",
    [
        (ConfigError("train.max_steps: bad"), EXIT_CONFIG, "config error: train.max_steps: bad"),
        (TrackingError("server down"), EXIT_SETUP, "setup error: server down"),
        (JobSetupError("run dir exists"), EXIT_SETUP, "setup error: run dir exists"),
        (FileNotFoundError("no config.json"), EXIT_SETUP, "setup error: no config.json"),
    ],
)
def test_run_or_exit_maps_errors_to_one_line_and_an_exit_code(error, code, prefix, capsys):
    def fail():
        raise error

    with pytest.raises(SystemExit) as e:
        run_or_exit(fail)
    assert e.value.code == code
    assert capsys.readouterr().err.strip() == prefix


def test_run_or_exit_keeps_real_failures_loud():
    def crash():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_or_exit(crash)
    assert run_or_exit(lambda x: x + 1, 1) == 2


def test_resumed_epoch_is_the_latest_checkpoints_data_epoch(tmp_path):
    """What the data reader replays on a resume: the epoch in train_state.json of the newest lineage's highest
    step (a restore that fell back past a bad checkpoint saves lower steps in a new lineage), else 0."""
    import json

    from unispeech_platform.train.checkpoint import STATE_FILE, resumed_epoch

    run = tmp_path / "job"
    assert resumed_epoch(str(run)) == 0  # no run directory yet
    for step, lineage, epoch in ((4, 0, 1), (8, 0, 2), (6, 1, 5), (5, 1, 4)):
        d = run / RunLayout.checkpoint_dir_name(step, lineage)
        d.mkdir(parents=True)
        (d / STATE_FILE).write_text(json.dumps({"step": step, "epoch": epoch}))
    (run / "model").mkdir()  # not a checkpoint
    assert resumed_epoch(str(run)) == 5
    (run / RunLayout.checkpoint_dir_name(6, 1) / STATE_FILE).write_text("{not json")
    assert resumed_epoch(str(run)) == 0  # unreadable: start the order at epoch 0 (the restore checks the rest)
