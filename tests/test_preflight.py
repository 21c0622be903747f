"""Everything a job can check without Ray is checked before Ray starts: a wrong data.path, a missing split or
vocabulary, a garbage Parquet part or unreadable data pages, a wrongly typed config.json, an export directory that
is not a model. Each ends the job with exit 3 and one line naming the file (and key), and Ray never starts.
The corpus is a few hand-made rows (milliseconds), the model a random CI-sized one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from data_helpers import PHONES, good_rows, write_part
from train_helpers import CI_CONFIG, ROOT

from unispeech_core.tokenizer import PhoneTokenizer

TRAIN_PART = Path("lang=es") / "split=train" / "part-00000.parquet"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preflight") / "corpus"
    for split in ("train", "dev", "test"):
        write_part(root, "es", split, good_rows(f"es-{split}", 4))
    PhoneTokenizer.from_phones(PHONES.split()).save(root)
    return root


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory) -> Path:
    from evaluate_helpers import tiny_ctc_model

    return tiny_ctc_model(corpus / "vocab.json", tmp_path_factory.mktemp("preflight") / "model")


def _broken(corpus: Path, tmp: Path, case: str) -> tuple[Path, list[str], str]:
    """(corpus root, extra overrides, what the one line must name) of one corpus fault."""
    root = tmp / "corpus"
    shutil.copytree(corpus, root)
    part = root / TRAIN_PART
    if case == "wrong_path":
        return tmp / "no-such-corpus", [], str(tmp / "no-such-corpus")
    if case == "garbage_part":
        garbage = part.with_name("part-00001.parquet")
        garbage.write_bytes(b"\x00garbage\xff" * 100)
        return root, [], str(garbage)
    if case == "corrupt_pages":  # the footer still reads: only decoding a data page finds it
        data = bytearray(part.read_bytes())
        data[4:68] = b"\xff" * 64
        part.write_bytes(bytes(data))
        return root, [], str(part)
    if case == "missing_split":
        return root, ["data.train_splits=[trian]"], "trian"
    if case == "no_vocab":
        (root / "vocab.json").unlink()
        return root, [], str(root / "vocab.json")
    raise AssertionError(case)


CORPUS_FAULTS = ["wrong_path", "garbage_part", "corrupt_pages", "missing_split", "no_vocab"]


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.mark.parametrize("case", CORPUS_FAULTS)
def test_pretrain_corpus_faults_stop_before_ray(corpus, tmp_path, capsys, case):
    import ray

    import jobs.pretrain

    root, extra, named = _broken(corpus, tmp_path, case)
    with pytest.raises(SystemExit) as exc:
        jobs.pretrain.main(["--config", str(CI_CONFIG), *_sets(
            f"data.path={root}", f"checkpoint.storage_path={tmp_path / 'runs'}", "tracking.enabled=false", *extra)])
    assert exc.value.code == 3
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("setup error: ") and named in line, line
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_garbage_part_from_the_command_line_never_starts_ray(corpus, tmp_path):
    """The real entry point as a subprocess: exit 3, one line naming the part, and no Ray started: a local Ray
    makes its session directory under RAY_TMPDIR as it starts, and that stays empty."""
    root, _, named = _broken(corpus, tmp_path, "garbage_part")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.finetune", "--config", "configs/finetune_tiny.yaml", *_sets(
                f"data.path={root}", f"checkpoint.storage_path={tmp_path / 'runs'}", "tracking.enabled=false",
                "finetune.init_from=null")],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        )
        assert proc.returncode == 3, proc.stderr
        assert named in _one_line(proc.stderr)
        assert not any(ray_tmp.iterdir())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("case", ["garbage_part", "wrong_path"])
def test_evaluate_and_sweep_check_the_corpus_before_ray(corpus, model, tmp_path, capsys, case):
    import ray

    import jobs.evaluate
    import jobs.sweep

    root, _, named = _broken(corpus, tmp_path, case)
    if case == "garbage_part":  # evaluation reads the test split
        shutil.move(root / TRAIN_PART.parent / "part-00001.parquet", root / "lang=es" / "split=test" / "part-00001.parquet")
        named = str(root / "lang=es" / "split=test" / "part-00001.parquet")
    with pytest.raises(SystemExit) as exc:
        jobs.evaluate.main(["--config", "configs/evaluate_tiny.yaml", *_sets(
            f"evaluate.model_path={model}", f"data.path={root}", f"evaluate.output_dir={tmp_path / 'eval'}",
            "tracking.enabled=false")])
    assert exc.value.code == 3 and named in _one_line(capsys.readouterr().err)
    if case == "garbage_part":
        return
    with pytest.raises(SystemExit) as exc:
        jobs.sweep.main(["--config", "configs/sweep_tiny.yaml", *_sets(
            f"sweep.storage_path={tmp_path / 'sweeps'}", f"sweep.pretrain_overrides={{data.path: {root}}}",
            "tracking.enabled=false")])
    assert exc.value.code == 3 and named in _one_line(capsys.readouterr().err)
    assert not ray.is_initialized()


def test_experiment_checks_every_stage_corpus(corpus, tmp_path):
    """The experiment builds its corpora itself, then checks every stage's data before it starts Ray."""
    from unispeech_platform.config import load_config
    from unispeech_platform.data.schema import CorpusError
    from unispeech_platform.experiments.config import ExperimentConfig
    from unispeech_platform.experiments.runner import check_stage_data, validate

    base = tmp_path / "xl"
    for part in ("high", "low"):
        shutil.copytree(corpus, base / part)
    shutil.copy(corpus / "vocab.json", base / "vocab.json")
    cfg = load_config(ExperimentConfig, ROOT / "configs" / "crosslingual_tiny.yaml",
                      [f"corpus.root={base}", f"experiment.storage_path={tmp_path / 'runs'}"])
    check_stage_data(validate(cfg))  # a good corpus passes
    garbage = base / "low" / "lang=es" / "split=test" / "part-00001.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(CorpusError, match=str(garbage)):
        check_stage_data(validate(cfg))


def _with_config(model: Path, tmp: Path, **changes) -> Path:
    bad = tmp / "bad-model"
    shutil.copytree(model, bad)
    raw = json.loads((bad / "config.json").read_text())
    raw.update(changes)
    (bad / "config.json").write_text(json.dumps(raw))
    return bad


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", "abc", "valid integer"),
    ("num_hidden_layers", -1, "greater than or equal to 1"),
    ("mask_time_prob", 7, "less than or equal to 1"),
    ("do_stable_layer_norm", 1, "valid boolean"),
    ("hidden_size", None, "must not be null"),
])
def test_wrongly_typed_config_json_is_refused_by_evaluation(model, tmp_path, capsys, key, value, message):
    """The issue's case: such a file used to pass the evaluation preflight and fail in a Ray actor."""
    import ray

    import jobs.evaluate

    bad = _with_config(model, tmp_path, **{key: value})
    with pytest.raises(SystemExit) as exc:
        jobs.evaluate.main(["--config", "configs/evaluate_tiny.yaml", *_sets(
            f"evaluate.model_path={bad}", f"data.path={tmp_path}", f"evaluate.output_dir={tmp_path / 'eval'}",
            "tracking.enabled=false")])
    assert exc.value.code == 3
    line = _one_line(capsys.readouterr().err)
    assert str(bad / "config.json") in line and f"{key}: " in line and message in line, line
    assert not ray.is_initialized()


def test_wrongly_typed_init_from_is_refused_by_finetuning(corpus, model, tmp_path, capsys):
    import ray

    import jobs.finetune

    bad = _with_config(model, tmp_path, num_attention_heads="2")
    with pytest.raises(SystemExit) as exc:
        jobs.finetune.main(["--config", "configs/finetune_tiny.yaml", *_sets(
            f"finetune.init_from={bad}", f"data.path={corpus}", f"checkpoint.storage_path={tmp_path / 'runs'}",
            "tracking.enabled=false")])
    assert exc.value.code == 3
    line = _one_line(capsys.readouterr().err)
    assert "finetune.init_from" in line and str(bad / "config.json") in line and "num_attention_heads" in line
    assert not ray.is_initialized()


def test_configs_we_write_pass_the_check(model):
    """What our models save (CTC, classification with labels, pretraining) passes the same rules."""
    from unispeech_core import UniSpeechConfig
    from unispeech_platform.config.model import check_model_json

    check_model_json(json.loads((model / "config.json").read_text()))
    check_model_json(UniSpeechConfig(id2label={0: "es", 1: "pt"}).to_dict())
    check_model_json({**UniSpeechConfig().to_dict(), "architectures": ["UniSpeechForPreTraining"],
                      "transformers_version": "4.57.0", "torch_dtype": "float32"})


def test_export_dir_that_is_not_a_model_is_refused(corpus, tmp_path, capsys):
    """checkpoint.export_dir is replaced by every export: a directory holding something else (here a user's
    files) stops the job before Ray, and its files stay."""
    import jobs.pretrain

    precious = tmp_path / "home" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        jobs.pretrain.main(["--config", str(CI_CONFIG), *_sets(
            f"data.path={corpus}", f"checkpoint.storage_path={tmp_path / 'runs'}", "tracking.enabled=false",
            f"checkpoint.export_dir={precious.parent}")])
    assert exc.value.code == 3 and "checkpoint.export_dir" in _one_line(capsys.readouterr().err)
    assert precious.read_text() == "keep me"


def test_lid_with_a_wrong_data_path_exits_3(tmp_path, capsys):
    """jobs.lid reads the corpus languages before anything else: a wrong path is one line, not a traceback."""
    import ray

    import jobs.lid

    with pytest.raises(SystemExit) as exc:
        jobs.lid.main(["--config", "configs/lid_tiny.yaml", *_sets(
            f"data.path={tmp_path / 'nowhere'}", f"checkpoint.storage_path={tmp_path / 'runs'}",
            "tracking.enabled=false")])
    assert exc.value.code == 3 and str(tmp_path / "nowhere") in _one_line(capsys.readouterr().err)
    assert not ray.is_initialized()
