"""One CLI convention (issue 32): every config job's --help names how it was started, lists every nested key with
type, default and range, and its --set example is a key that job takes. No Ray; in-process."""

from __future__ import annotations

import importlib

import pytest

from unispeech_platform.config import ConfigError, FinetuneJobConfig, PretrainJobConfig, load_config
from unispeech_platform.config.describe import example_override, leaf_keys

CONFIG_JOBS = ("pretrain", "finetune", "evaluate", "lid", "sweep", "crosslingual", "quickstart")


def help_text(job: str, capsys, monkeypatch) -> str:
    monkeypatch.setattr("sys.argv", [f"/repo/jobs/{job}.py"])  # as `python -m jobs.<job>` leaves it
    with pytest.raises(SystemExit) as done:
        importlib.import_module(f"jobs.{job}").main(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("job", CONFIG_JOBS)
def test_help_lists_every_nested_key_with_type_default_and_range(job, capsys, monkeypatch):
    text = help_text(job, capsys, monkeypatch)
    assert text.startswith(f"usage: python -m jobs.{job} ")
    assert "--print-config" in text
    listed = {line.split()[0] for line in text.split("config keys (")[1].splitlines()[1:] if line.startswith("  ")}
    cls = config_class(job)
    assert listed == {key for key, _ in leaf_keys(cls)}
    if job == "pretrain":  # nested sections too, with what they take
        assert "  data.augment.noise_snr_db  (tuple[float, float]; default (5.0, 20.0))" in text
        assert "  train.max_steps  (int; default 100; >= 1)" in text
    example = example_override(cls)
    assert f"--set {example}" in " ".join(text.split())


def config_class(job: str):
    from unispeech_platform.evaluate.config import EvaluateJobConfig
    from unispeech_platform.experiments.config import ExperimentConfig
    from unispeech_platform.tune.config import SweepJobConfig

    return {"pretrain": PretrainJobConfig, "finetune": FinetuneJobConfig, "lid": FinetuneJobConfig,
            "evaluate": EvaluateJobConfig, "sweep": SweepJobConfig, "crosslingual": ExperimentConfig,
            "quickstart": ExperimentConfig}[job]


def test_an_example_override_is_a_real_key():
    with pytest.raises(ConfigError, match="data: Field required"):  # parsed: only the missing section is wrong
        load_config(PretrainJobConfig, None, [example_override(PretrainJobConfig)])
