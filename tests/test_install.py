"""The install says what it needs (issue 32): the Python floor is the interpreter CI runs, torch and torchaudio
are pinned as a pair in the metadata and the lock, the presets travel with the package and resolve by name, and
every job has a console script. No Ray; one wheel build (~15 s)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from jobs.scripts import JOBS, script_name
from unispeech_platform.config import PretrainJobConfig, load_config
from unispeech_platform.config.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_python_floor_is_the_interpreter_ci_runs():
    floor = re.fullmatch(r">=(\d+)\.(\d+)", PROJECT["requires-python"].split("#")[0].strip())
    assert floor, PROJECT["requires-python"]
    assert sys.version_info[:2] == (int(floor[1]), int(floor[2])), "CI must run the stated floor"


def test_torch_and_torchaudio_are_pinned_as_a_pair_in_the_metadata_and_the_lock():
    pins = {d.split("==")[0]: d.split("==")[1] for d in PROJECT["dependencies"] if d.startswith("torch")}
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert set(pins) == {"torch", "torchaudio"} and all(lock[k] == v for k, v in pins.items()), (pins, lock)
    for req in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]:
        name = re.split(r"[<>=\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")
        if name != "unispeech-platform":
            assert name in {k.lower().replace("_", "-") for k in lock}, f"{name} is not in requirements.lock"
    assert "transformers" in " ".join(PROJECT["optional-dependencies"]["hf"])


def test_every_job_has_a_console_script():
    modules = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if p.stem not in ("__init__", "scripts"))
    assert sorted(JOBS) == modules
    assert PROJECT["scripts"] == {script_name(j): f"jobs.scripts:{j}" for j in JOBS}
    script = Path(sys.executable).parent / script_name("validate_data")
    if not script.exists():
        pytest.skip(f"{script} is not installed (make setup installs it)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: unispeech-validate-data"), done.stdout[:300]


def test_a_preset_resolves_by_name_from_anywhere_and_a_path_still_wins(tmp_path, monkeypatch):
    by_path = load_config(PretrainJobConfig, ROOT / "configs" / "tiny.yaml")
    monkeypatch.chdir(tmp_path)  # not the checkout: configs/tiny.yaml does not exist here
    assert load_config(PretrainJobConfig, "tiny") == by_path == load_config(PretrainJobConfig, "configs/tiny.yaml")
    (tmp_path / "tiny").write_text((ROOT / "configs" / "tiny.yaml").read_text().replace("max_steps:", "max_steps: 7 #"))
    # a file of the user's own wins over the preset
    assert load_config(PretrainJobConfig, "tiny").train.max_steps == 7
    with pytest.raises(ConfigError, match=r"config file not found: tiniest \(shipped presets: .*\btiny\b"):
        load_config(PretrainJobConfig, "tiniest")


def test_the_wheel_carries_the_presets_and_the_scripts(tmp_path):
    import shutil

    source = tmp_path / "src"  # setuptools builds in the source tree: a copy keeps the checkout clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "configs", "jobs", "unispeech_core", "unispeech_platform"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("unispeech_platform-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    presets = {Path(n).name for n in names if "/data/share/unispeech-platform/configs/" in n}
    assert presets == {p.name for p in (ROOT / "configs").glob("*.yaml")}
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "unispeech-pretrain = jobs.scripts:pretrain" in entry_points


@pytest.mark.parametrize("job, config", [
    ("pretrain", "tiny"), ("finetune", "finetune_tiny"), ("evaluate", "evaluate_tiny"), ("lid", "lid_tiny"),
    ("sweep", "sweep_tiny"), ("crosslingual", "crosslingual_tiny"), ("quickstart", "quickstart_tiny"),
])
def test_print_config_round_trips_for_every_config_job(job, config, tmp_path, capsys):
    """(Issue 32) --print-config prints the resolved config and runs nothing; fed back as --config it resolves to
    the same config."""
    import importlib

    main = importlib.import_module(f"jobs.{job}").main
    printed = []
    for source in (config, str(tmp_path / "printed.yaml")):
        with pytest.raises(SystemExit) as done:
            main(["--config", source, "--set", "tracking.enabled=false", "--print-config"])
        assert done.value.code == 0
        printed.append(capsys.readouterr().out)
        (tmp_path / "printed.yaml").write_text(printed[-1])
    assert printed[0] == printed[1] and "tracking:" in printed[0]
