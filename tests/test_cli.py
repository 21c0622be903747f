"""One CLI convention (issue 32): every job's --help names how it was started and shows the shared flags and an
examples section whose every command line parses and validates; every config job's --help lists every nested key
with type, default and range, and its --set example is a key that job takes; a plain-flag job's --print-config is
its whole argument set. No Ray; in-process."""

from __future__ import annotations

import argparse
import importlib
import shlex

import pytest
import yaml

from unispeech_platform.config import ConfigError, FinetuneJobConfig, PretrainJobConfig, load_config
from unispeech_platform.config.describe import example_override, leaf_keys
from unispeech_platform.data.audio_file import MAX_AUDIO_BYTES

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


# --- the twelve jobs: one convention (shared flags, examples that parse, --print-config) -----------------------

FLAG_JOBS = ("make_corpus", "import_commonvoice", "import_dataset", "validate_data", "transcribe", "export")
ALL_JOBS = CONFIG_JOBS + FLAG_JOBS


def test_the_jobs_here_are_every_job():
    from jobs.scripts import JOBS

    assert sorted(ALL_JOBS) == sorted(JOBS)


def examples_in(text: str, job: str) -> list[list[str]]:
    """The command lines of the ``examples:`` section of a job's --help, as argv after the job's name."""
    assert "\nexamples:\n" in text, f"{job}: no examples section in --help"
    prog = f"  python -m jobs.{job}"
    lines = []
    for line in text.split("\nexamples:\n", 1)[1].splitlines():
        if not line.startswith("  "):
            break
        assert line == prog or line.startswith(prog + " "), f"{job}: example of another command: {line}"
        lines.append(shlex.split(line[len(prog):], comments=True))
    assert lines, f"{job}: the examples section is empty"
    return lines


def exit_code(job: str, argv: list[str], capsys) -> int:
    """Parse and validate ``argv`` as the job would, run nothing: with --print-config every job stops after its
    flags (and config) are checked: 0 valid, 2 a flag or key it does not take or a bad value. No Ray starts."""
    with pytest.raises(SystemExit) as done:
        importlib.import_module(f"jobs.{job}").main([*argv, "--print-config"])
    capsys.readouterr()
    return done.value.code


@pytest.mark.parametrize("job", ALL_JOBS)
def test_every_example_in_help_parses_and_validates(job, capsys, monkeypatch, tmp_path):
    text = help_text(job, capsys, monkeypatch)
    for flag in ("--verbose", "--no-progress", "--print-config"):
        assert flag in text, f"{job}: {flag} missing"
    examples = examples_in(text, job)
    monkeypatch.chdir(tmp_path)  # an example's relative paths are never created: nothing runs
    for argv in examples:
        assert exit_code(job, argv, capsys) == 0, f"{job} example does not parse: {shlex.join(argv)}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("job", FLAG_JOBS)
def test_help_of_a_flag_job_gives_every_value_flag_its_type_default_and_range(job, capsys, monkeypatch):
    text = " ".join(help_text(job, capsys, monkeypatch).split())
    for action in importlib.import_module(f"jobs.{job}").parser()._actions:
        if action.option_strings and action.nargs != 0 and action.help != argparse.SUPPRESS:
            assert action.help, f"{job} {action.option_strings[0]}: no help, so --help shows no type or default"
    if job == "make_corpus":
        assert "held out for dev (int; default 1; >= 0)" in text and "(int; required; >= 1)" in text
    if job == "transcribe":
        assert "runs to the end of the file (float; default 30.0; > 0)" in text
        assert "the whole file is decoded at once (float; >= 0)" in text  # its default is in the text


@pytest.mark.parametrize("job, argv", [
    ("make_corpus", ["--out", "x", "--per-lang", "30", "--speakrs", "2"]),  # a misspelt flag
    ("transcribe", ["--model", "m", "--out", "o.jsonl", "--executor", "never", "a.wav"]),  # --ray's value
    ("validate_data", ["--input", "a", "b"]),  # two roots
    ("import_dataset", ["--format", "hf", "--input", "i", "--out", "o", "--lang", "a/b"]),  # not a partition
    ("pretrain", ["--config", "tiny", "--set", "train.max_stepz=3"]),  # a misspelt key
])
def test_a_wrong_example_would_fail_the_check(job, argv, capsys):
    assert exit_code(job, argv, capsys) == 2


def printed(job: str, argv: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        importlib.import_module(f"jobs.{job}").main([*argv, "--print-config"])
    assert done.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def flags_of(job: str) -> set[str]:
    """The long names of the flags a plain-flag job takes (a positional by its name): one per destination, so an
    old spelling (a second option string, or a second flag setting the same value) is not a second flag."""
    names, dests = set(), {"help", "print_config"}
    for action in importlib.import_module(f"jobs.{job}").parser()._actions:
        if action.dest in dests or action.help == argparse.SUPPRESS:
            continue
        dests.add(action.dest)
        longs = [s for s in action.option_strings if s.startswith("--")]
        names.add(longs[0][2:] if longs else action.dest)
    return names


def argv_of(args: dict) -> list[str]:
    """The printed argument set as a command line again: what the printed YAML means."""
    argv: list[str] = []
    for key, value in args.items():
        if key == "inputs":  # transcribe's positional INPUTs
            argv += value
        elif value is True:
            argv.append(f"--{key}")
        elif value is not None and value is not False and value != [] and value != {}:  # empty: the default
            text = (",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else
                    ",".join(value) if isinstance(value, list) else str(value))
            argv += [f"--{key}", text]
    return argv


FLAG_ARGV = {
    "make_corpus": ["--out", "{tmp}/out", "--per-lang", "30", "--langs", "es,fr", "--workers", "2"],
    "import_commonvoice": ["--cv-dir", "{tmp}/cv", "--langs", "es", "--out", "{tmp}/out", "--voices", "es=es"],
    "import_dataset": ["--format", "hf", "--input", "s3://user:pw@bucket/x", "--out", "{tmp}/out", "--voice",
                       "en=en-gb", "--no-progress"],
    "validate_data": ["{tmp}/corpus", "--executor", "local", "--verbose"],
    "transcribe": ["--model", "{tmp}/model", "--out", "{tmp}/out/t.jsonl", "--ray", "never", "a.wav", "b.wav"],
    "export": ["--model", "models:/phones/1", "--format", "onnx", "--out", "{tmp}/out", "--tracking-uri",
               "http://user:pw@mlflow:5000"],
}


@pytest.mark.parametrize("job", FLAG_JOBS)
def test_print_config_of_a_flag_job_is_its_argument_set_and_runs_nothing(job, tmp_path, capsys):
    """(Issue 32) A plain-flag job's --print-config prints every flag with its resolved value (defaults included,
    old spellings under the current name, secrets redacted) and creates nothing; given back as flags, the printed
    set prints the same again (the round trip of these jobs)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in FLAG_ARGV[job]]
    first = printed(job, argv, capsys)
    assert set(first) == flags_of(job)
    assert first["no-progress"] is ("--no-progress" in argv) and first["verbose"] is ("--verbose" in argv)
    assert printed(job, argv_of(first), capsys) == first
    assert list(tmp_path.iterdir()) == []  # no --out, no report, no corpus directory
    expected = {
        "make_corpus": {"langs": ["es", "fr"], "per-lang": 30, "speakers": 6, "workers": 2, "overwrite": False},
        "import_commonvoice": {"input": f"{tmp_path}/cv", "langs": ["es"], "voices": {"es": "es"},
                               "executor": "auto"},
        "import_dataset": {"input": "s3://***@bucket/x", "voices": {"en": "en-gb"}, "lang": None,
                           "max-audio-mb": MAX_AUDIO_BYTES / 2**20},
        "validate_data": {"input": f"{tmp_path}/corpus", "executor": "local", "vocab": None},
        "transcribe": {"executor": "local", "inputs": ["a.wav", "b.wav"], "beam-size": 16},
        "export": {"model": "models:/phones/1", "format": "onnx", "tracking-uri": "http://***@mlflow:5000",
                   "audio": []},
    }[job]
    assert {k: first[k] for k in expected} == expected


def test_verbose_and_no_progress_mean_the_same_in_every_job(monkeypatch):
    """--verbose: our loggers at DEBUG and the libraries' INFO logs (console.verbose); --no-progress: no bars, in
    this process and the ones it starts (an environment variable). Both are added to every parser by one function
    (the help test above checks each job lists them)."""
    import logging

    from unispeech_platform.runtime.console import VERBOSE_ENV, progress_bars, verbose
    from unispeech_platform.runtime.job_flags import NO_PROGRESS_ENV, OWN_LOGGERS, apply_common_flags

    monkeypatch.delenv(NO_PROGRESS_ENV, raising=False)
    monkeypatch.setenv(VERBOSE_ENV, "0")
    levels = {name: logging.getLogger(name).level for name in (*OWN_LOGGERS, "ray", "mlflow")}
    try:
        apply_common_flags(argparse.Namespace(verbose=False, no_progress=False))
        assert progress_bars() and not verbose()
        assert logging.getLogger("unispeech.train").getEffectiveLevel() != logging.DEBUG
        apply_common_flags(argparse.Namespace(verbose=True, no_progress=True))
        assert not progress_bars() and verbose()
        assert logging.getLogger("unispeech.train").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("ray").getEffectiveLevel() == logging.INFO  # libraries: INFO, not DEBUG
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
