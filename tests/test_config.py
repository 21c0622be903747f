"""Job configs: presets validate, overrides apply, bad keys fail before Ray with the key and the valid ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from unispeech_platform.config import (
    ConfigError,
    FinetuneJobConfig,
    PretrainJobConfig,
    flatten,
    load_config,
    to_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", ["tiny", "base", "large", "ci"])
def test_pretrain_presets_validate(preset):
    cfg = load_config(PretrainJobConfig, ROOT / "configs" / f"{preset}.yaml")
    assert cfg.train.max_steps > 0 and cfg.data.path


def test_no_preset_pins_a_precision_or_a_cpu_only_device():
    """Presets land on many machines: no preset pins bf16 (bf16 autocast is ~10x slower than fp32 on a CPU without
    native bf16), precision is auto everywhere but the demo, whose fp32 is measured (it learns on every CPU tried, its
    bf16 on an AMX Xeon did not: docs/demo.md#precision) and says so, and CPU presets leave use_gpu to auto so
    that a GPU machine uses its GPU."""
    text = {p.name: p.read_text() for p in (ROOT / "configs").glob("*.yaml")}
    assert not [n for n, t in text.items() if "precision: bf16" in t]
    pinned = {n for n, t in text.items() if "precision: fp32" in t}
    assert pinned == {"quickstart.yaml"} and "docs/demo.md#precision" in text["quickstart.yaml"], pinned
    assert not [n for n, t in text.items() if "use_gpu: false" in t]


def test_large_preset_is_the_unispeech_large_architecture():
    from unispeech_core import UniSpeechConfig

    cfg = load_config(PretrainJobConfig, ROOT / "configs" / "large.yaml")
    m = UniSpeechConfig(**cfg.model.overrides())
    assert (m.num_hidden_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads) == (24, 1024, 4096, 16)
    assert m.feat_extract_norm == "layer" and m.do_stable_layer_norm and m.conv_bias
    assert cfg.train.precision == "auto" and cfg.train.zero_stage == 2 and cfg.train.use_gpu
    from unispeech_platform.runtime.hardware import HardwareFacts, resolve_precision

    a100 = HardwareFacts("Xeon", frozenset(), 96, ((8, 0),) * 8, ("NVIDIA A100-SXM4-80GB",) * 8)
    assert resolve_precision(cfg.train.precision, use_gpu=True, facts=a100).precision == "bf16"


def test_finetune_preset_validates():
    cfg = load_config(FinetuneJobConfig, ROOT / "configs" / "finetune_tiny.yaml")
    assert cfg.finetune.task == "ctc" and cfg.checkpoint.score_metric == "dev_per"


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        PretrainJobConfig,
        ROOT / "configs" / "ci.yaml",
        ["train.num_workers=4", "train.use_gpu=true", "train.zero_stage=3", "tracking.uri=http://h:5000",
         "tracking.experiment=x", "data.path=/d", "train.max_steps=7", "model.hidden_size=64"],
    )
    assert (cfg.train.num_workers, cfg.train.use_gpu, cfg.train.zero_stage, cfg.train.max_steps) == (4, True, 3, 7)
    assert (cfg.tracking.uri, cfg.tracking.experiment, cfg.data.path) == ("http://h:5000", "x", "/d")
    assert cfg.model.hidden_size == 64


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.num_wrkers=2", "train.num_wrkers: unknown key (valid keys here: activation_checkpointing"),
        ("train.zero_stage=5", "train.zero_stage"),
        ("train.max_steps=many", "train.max_steps"),
        ("bogus.key=1", "bogus: unknown key (valid keys here: checkpoint, data, model"),
        ("model.hiden_size=3", "hiden_size"),
        ("checkpoint.name=a/b", "checkpoint.name"),
    ],
)
def test_bad_keys_name_the_key_and_the_valid_ones(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainJobConfig, ROOT / "configs" / "ci.yaml", [override])
    assert fragment in str(e.value)


def test_every_field_has_a_description():
    from unispeech_platform.config import sections

    for cls in (sections.TrainSection, sections.OptimSection, sections.TrackingSection, sections.CheckpointSection,
                sections.RaySection, sections.FinetuneSection, PretrainJobConfig, FinetuneJobConfig):
        missing = [n for n, f in cls.model_fields.items() if not f.description]
        assert not missing, f"{cls.__name__}: {missing}"


def test_resolved_yaml_round_trips_and_flattens(tmp_path):
    cfg = load_config(PretrainJobConfig, ROOT / "configs" / "tiny.yaml")
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(PretrainJobConfig, path) == cfg
    flat = flatten(cfg.model_dump(mode="json"))
    assert flat["train.zero_stage"] == 2 and flat["optim.betas"] == [0.9, 0.98] and "model.hidden_size" in flat


@pytest.mark.parametrize("job", ["pretrain", "finetune"])
def test_bad_config_exits_before_ray_is_imported(job):
    code = (
        "import sys\n"
        f"from jobs.{job} import main\n"
        "try:\n    main(['--config', 'configs/ci.yaml', '--set', 'train.zero_stag=2'])\n"
        "except SystemExit as e:\n    print('EXIT', e.code, 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "EXIT 2 False" in out.stdout, out.stdout + out.stderr
    assert "train.zero_stag: unknown key" in out.stderr and "zero_stage" in out.stderr


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.mask_time_length=ten", "model.mask_time_length: Input should be a valid integer"),
        ("model.num_hidden_layers=-1", "model.num_hidden_layers: Input should be greater than or equal to 1"),
        ("model.mask_time_prob=7", "model.mask_time_prob: Input should be less than or equal to 1"),
        ("model.hidden_size=abc", "model.hidden_size: Input should be a valid integer"),
        ("model.hidden_act=gelux", "model.hidden_act: Input should be 'gelu'"),
        ("model.conv_dim=[32,0]", "model.conv_dim.1: Input should be greater than or equal to 1"),
        ("model.num_attention_heads=3", "must be divisible by num_attention_heads (3)"),  # a cross-field rule
    ],
)
def test_model_section_is_typed_and_range_checked_before_ray(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainJobConfig, ROOT / "configs" / "ci.yaml", [override])
    assert fragment in str(e.value)


def test_model_section_mirrors_unispeech_config_and_dumps_only_set_keys():
    import dataclasses

    from unispeech_core import UniSpeechConfig
    from unispeech_platform.config import ModelSection

    fields = {f.name for f in dataclasses.fields(UniSpeechConfig)} - {"extra"}
    assert fields | {"num_labels", "label2id"} == set(ModelSection.model_fields)
    assert all(f.description and f.default is None for f in ModelSection.model_fields.values())
    cfg = load_config(PretrainJobConfig, ROOT / "configs" / "ci.yaml")
    dumped = cfg.model_dump(mode="json")["model"]
    assert dumped == yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())["model"]  # nothing added
    assert "vocab_size" not in cfg.model.overrides()  # left to the corpus vocabulary


def test_job_config_is_keyed_on_its_task():
    from unispeech_platform.config import job_config_class

    ft = load_config(FinetuneJobConfig, ROOT / "configs" / "finetune_tiny.yaml", ["finetune.task=lid"])
    pre = load_config(PretrainJobConfig, ROOT / "configs" / "tiny.yaml")
    assert (pre.task, ft.task) == ("pretrain", "lid")
    assert job_config_class("pretrain") is PretrainJobConfig and job_config_class("ctc") is FinetuneJobConfig


def test_typed_values_override_by_dotted_key_without_text_and_bad_keys_fail():
    """Sweeps and experiments set typed values (load_config(values=...), with_overrides), never '--set' text: a
    value keeps its type (a string stays a string), nested dicts set keys inside a section, a bad key is a
    ConfigError naming it."""
    import numpy as np

    from unispeech_platform.config import with_overrides

    job = load_config(PretrainJobConfig, ROOT / "configs" / "ci.yaml",
                      values={"model": {"replace_prob": 0.3}, "tracking.run_name": "true"})
    assert job.model.replace_prob == 0.3 and job.tracking.run_name == "true"
    assert job.model.hidden_size == yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())["model"]["hidden_size"]
    trial = with_overrides(job, {"model.mask_time_length": np.int64(4), "train.max_steps": 9})
    assert (trial.model.mask_time_length, trial.train.max_steps, trial.model.replace_prob) == (4, 9, 0.3)
    with pytest.raises(ConfigError, match="model.no_such_knob: unknown key"):
        with_overrides(job, {"model.no_such_knob": 1})


def test_an_unset_ctc_weight_is_the_model_default_for_the_supervised_arm_check():
    """experiments/stages.py compares the effective ctc_weight: a preset that leaves it unset trains with
    UniSpeechConfig's 0.5 (it compared None < 1.0, a TypeError); an arm at 1.0 reads labeled rows only."""
    from unispeech_platform.config import with_overrides
    from unispeech_platform.experiments.stages import labeled_only_if_supervised

    job = load_config(PretrainJobConfig, ROOT / "configs" / "ci.yaml", values={"model.ctc_weight": None})
    assert job.model.ctc_weight is None and job.model.effective("ctc_weight") == 0.5
    assert labeled_only_if_supervised(job) is job
    supervised = labeled_only_if_supervised(with_overrides(job, {"model.ctc_weight": 1.0}))
    assert supervised.data.labeled_only and supervised.model.ctc_weight == 1.0


@pytest.mark.parametrize("override, key", [
    ("optim.betas=[.nan, .nan]", "optim.betas.0"),
    ("optim.betas=[1.5, 0.9]", "optim.betas.0"),
    ("train.seed=18446744073709551616", "train.seed"),
    ("data.seed=-1", "data.seed"),
    ("optim.lr=.inf", "optim.lr"),
    ("model.layer_norm_eps=.inf", "model.layer_norm_eps"),
    ("train.cpus_per_worker=.inf", "train.cpus_per_worker"),
    ("data.max_batch_seconds=.inf", "data.max_batch_seconds"),
    ("data.augment.noise_prob=.nan", "data.augment.noise_prob"),
])
def test_numbers_torch_would_reject_later_are_refused_naming_the_key(override, key):
    """(Issue 30) nan/inf anywhere, betas outside [0, 1), seeds outside [0, 2^32): exit 2 at the config, not a
    torch error minutes later."""
    with pytest.raises(ConfigError) as e:
        load_config(PretrainJobConfig, ROOT / "configs" / "tiny.yaml", [override])
    assert f"{key}:" in str(e.value), str(e.value)


@pytest.mark.parametrize("content, message", [
    ("train:\n  max_steps: 5\n  max_steps: 6\n", "duplicate key 'max_steps'"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
    (None, "is a directory"),
    ("fifo", "not a regular file"),  # would block the job forever
    ("train: !!python/object/apply:os.system ['touch {tmp}/PWNED']\n", "not valid YAML"),  # never executed
])
def test_a_config_file_that_cannot_be_one_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "job.yaml"
    if content is None:
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)
    elif isinstance(content, str) and "{tmp}" in content:
        path.write_text(content.format(tmp=tmp_path))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(PretrainJobConfig, path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_bad_numbers_from_yaml_and_set_exit_2_in_one_line_and_write_nothing(tmp_path):
    """(Issue 30, as a user meets it) the real CLI: nan in a YAML file and 2^64 through --set both stop at the
    config with exit 2 and one stderr line naming the key; the directory the job runs in is left as it was."""
    from tree_guard import assert_unchanged, tree_digest

    config = tmp_path / "job.yaml"
    values = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    values["optim"]["lr"] = float("nan")  # written by yaml as .nan
    config.write_text(yaml.safe_dump(values))
    before = tree_digest(tmp_path)
    for argv, key in [(["--config", str(config)], "optim.lr"),
                      (["--config", str(ROOT / "configs" / "tiny.yaml"), "--set", "train.seed=18446744073709551616"],
                       "train.seed")]:
        done = subprocess.run([sys.executable, "-m", "jobs.pretrain", *argv], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and key in lines[0], done.stderr[-2000:]
    assert_unchanged(before, tree_digest(tmp_path))
