"""Names become directories and directories get replaced: every name is one safe path component (exit 2 naming the
key), nothing is removed outside its storage root, and a re-run keeps a previous experiment unless --overwrite.
None of these tests starts Ray: the refusals happen before it (and before any stage)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from experiment_helpers import tiny_args
from train_helpers import CI_CONFIG, ROOT

from unispeech_platform.config import ConfigError, PretrainJobConfig, load_config
from unispeech_platform.config.names import check_name

BAD_NAMES = ["..", "/", "a/b", "", ".", "-rf", "a\\b", "a b", "x\0y", "n" * 129]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_names_are_rejected(name):
    with pytest.raises(ValueError, match="single directory name"):
        check_name(name)


@pytest.mark.parametrize("name", ["quickstart", "crosslingual-cpu", "tiny-pretrain", "a1b2c_00000-finetune",
                                  "run.v2", "x" * 128])
def test_ordinary_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("key", ["checkpoint.name"])
@pytest.mark.parametrize("name", ["..", "/", "a/b", ""])
def test_run_name_is_one_path_component(key, name):
    with pytest.raises(ConfigError, match=rf"{key}: Value error, must be a single directory name"):
        load_config(PretrainJobConfig, CI_CONFIG, [f"{key}='{name}'"])


def _tree(tmp_path):
    """A storage root with a previous experiment and a sibling run beside the root: what a bad name would hit."""
    base = tmp_path / "base"
    storage = base / "runs"
    keep = [storage / "other-experiment" / "x-pretrain" / "step_00000004" / "train_state.json",
            base / "sibling-run" / "step_00000008" / "train_state.json"]
    for path in keep:
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    return base, keep


@pytest.mark.parametrize("name", ["..", "/", "a/b", ""])
def test_bad_experiment_name_exits_2_and_deletes_nothing(tmp_path, capsys, name):
    """The issue's case: experiment.name=.. used to remove <storage>/.. (a sibling run) before anything ran.
    Even with --overwrite, a bad name is a config error naming the key, and every directory stays."""
    import ray

    from jobs import quickstart

    base, keep = _tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        quickstart.main([*tiny_args("configs/quickstart_tiny.yaml", base), "--set", f"experiment.name='{name}'",
                         "--overwrite"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "experiment.name: Value error, must be a single directory name" in err, err
    assert all(p.is_file() for p in keep)
    assert not ray.is_initialized()


@pytest.mark.parametrize("argv, key", [
    (["jobs.sweep", "--config", "configs/sweep_tiny.yaml", "--set", "sweep.name=.."], "sweep.name"),
    (["jobs.crosslingual", "--config", "configs/crosslingual_tiny.yaml", "--set", "experiment.arms={../x: {}}"],
     "experiment.arms"),
    (["jobs.pretrain", "--config", "configs/ci.yaml", "--set", "checkpoint.name=a/b"], "checkpoint.name"),
])
def test_entrypoints_exit_2_with_one_line_naming_the_key(argv, key):
    """The real command line (a subprocess): exit 2, the key named, no traceback."""
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def _previous_run(base, name: str, *, marker: bool = True):
    """What a finished run of experiment ``name`` leaves: the marker and an arm's checkpoint."""
    from unispeech_platform.experiments.storage import MARKER

    root = base / "runs" / name
    ckpt = root / "unispeech-pretrain" / "step_00000004" / "ds" / "mp_rank_00_model_states.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"GPU-days")
    if marker:
        (root / MARKER).write_text("{}")
    return root, ckpt


def test_rerun_without_overwrite_keeps_the_old_checkpoints(tmp_path, capsys):
    import ray

    from jobs import quickstart

    base = tmp_path / "base"
    root, ckpt = _previous_run(base, "quickstart-tiny")
    with pytest.raises(SystemExit) as exc:
        quickstart.main(tiny_args("configs/quickstart_tiny.yaml", base))
    assert exc.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(root) in err[0] and "--overwrite" in err[0], err
    assert ckpt.read_bytes() == b"GPU-days"
    assert not (base / "corpus").exists()  # refused before the first stage (the corpus) started
    assert not ray.is_initialized()


def test_overwrite_replaces_only_a_directory_the_experiment_made(tmp_path, capsys):
    """--overwrite on a directory without the experiment's marker (someone else's run of the same name) is
    refused and kept; with the marker the previous run is removed and the directory claimed afresh."""
    from jobs import quickstart
    from unispeech_platform.experiments.config import ExperimentConfig
    from unispeech_platform.experiments.storage import MARKER, claim_storage

    base = tmp_path / "base"
    root, ckpt = _previous_run(base, "quickstart-tiny", marker=False)
    with pytest.raises(SystemExit) as exc:
        quickstart.main([*tiny_args("configs/quickstart_tiny.yaml", base), "--overwrite"])
    assert exc.value.code == 3 and f"has no {MARKER}" in capsys.readouterr().err
    assert ckpt.is_file()

    (root / MARKER).write_text("{}")
    cfg = load_config(ExperimentConfig, ROOT / "configs" / "quickstart_tiny.yaml",
                      [f"experiment.storage_path={base / 'runs'}"])
    with pytest.raises(Exception, match="--overwrite"):
        claim_storage(cfg, overwrite=False)
    assert ckpt.is_file()
    assert claim_storage(cfg, overwrite=True) == root
    assert not ckpt.exists() and sorted(p.name for p in root.iterdir()) == [MARKER]


def test_remove_tree_within_never_leaves_its_root(tmp_path):
    from unispeech_platform.runtime.removal import UnsafeRemovalError, remove_tree_within

    root, outside = tmp_path / "storage", tmp_path / "outside"
    (root / "run" / "step_1").mkdir(parents=True)
    (outside / "keep").mkdir(parents=True)
    (root / "link").symlink_to(outside, target_is_directory=True)
    for path in (root, root / "..", root / "run" / ".." / "..", "/", root / "link", outside):
        with pytest.raises(UnsafeRemovalError):
            remove_tree_within(root, path)
    assert (outside / "keep").is_dir() and (root / "run" / "step_1").is_dir()
    with pytest.raises(UnsafeRemovalError, match="no experiment.json"):
        remove_tree_within(root, root / "run", marker="experiment.json")
    remove_tree_within(root, root / "run")
    assert not (root / "run").exists() and (outside / "keep").is_dir()
    remove_tree_within(root, root / "never-made")  # nothing there: nothing to do


def test_new_sweep_refuses_leftover_trial_runs(tmp_path, capsys):
    """A sweep's trial runs (<name>-trials) outlive its Tune directory; a new sweep of the same name would
    resume stale trials in them: it stops instead (exit 3) and keeps them."""
    import ray

    import jobs.sweep

    storage = tmp_path / "sweeps"
    stale = storage / "s-trials" / "abc_00000-pretrain" / "step_00000004"
    stale.mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        jobs.sweep.main(["--config", "configs/sweep_tiny.yaml", "--set", f"sweep.storage_path={storage}",
                         "--set", "sweep.name=s", "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db"])
    assert exc.value.code == 3 and "s-trials exists (kept)" in capsys.readouterr().err
    assert stale.is_dir() and not ray.is_initialized()
