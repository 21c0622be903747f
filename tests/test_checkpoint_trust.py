"""Checkpoints you can trust (docs/training.md#checkpoints): strict from_pretrained, manifests verified on
restore, DeepSpeed shards loaded without unpickling arbitrary objects, fallback to the previous checkpoint."""

from __future__ import annotations

import pytest
import torch
from parity_utils import TINY
from train_helpers import (  # first: sets Ray's auth mode before ray is imported
    ci_job,
    local_ray,
    make_tiny_corpus,
)

import unispeech_core as uc

# ---- from_pretrained is strict (pure, no Ray) ----------------------------------------------------------------

def test_strict_from_pretrained_names_missing_and_unused_keys(tmp_path):
    two = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, "num_hidden_layers": 2}))
    two.save_pretrained(tmp_path / "two")
    # 2-layer weights into a 1-layer config: the extra layer is an error naming its keys, even for fine-tuning
    for allow in (False, True):
        with pytest.raises(uc.WeightsMismatchError, match=r"two: .*do not match UniSpeechForCTC.*unused "
                                                          r"unispeech\.encoder\.layers\.1\."):
            uc.UniSpeechForCTC.from_pretrained(tmp_path / "two", num_hidden_layers=1, allow_new_head=allow)
    one = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, "num_hidden_layers": 1}))
    one.save_pretrained(tmp_path / "one")
    with pytest.raises(uc.WeightsMismatchError, match=r"missing unispeech\.encoder\.layers\.1\."):
        uc.UniSpeechForCTC.from_pretrained(tmp_path / "one", num_hidden_layers=2, allow_new_head=True)


def test_a_new_head_needs_the_explicit_opt_out_and_tolerates_head_keys_only(tmp_path):
    pre = uc.UniSpeechForPreTraining(uc.UniSpeechConfig(**TINY))
    pre.save_pretrained(tmp_path / "pre")
    with pytest.raises(uc.WeightsMismatchError, match=r"missing lm_head\.(weight|bias).*unused .*(quantizer|ctc_proj)"
                                                      r".*only fine-tuning loads an encoder into a new head"):
        uc.UniSpeechForCTC.from_pretrained(tmp_path / "pre")
    ctc, info = uc.UniSpeechForCTC.from_pretrained(tmp_path / "pre", allow_new_head=True, output_loading_info=True)
    assert sorted(info.missing_keys) == ["lm_head.bias", "lm_head.weight"]
    assert torch.equal(ctc.unispeech.encoder.layers[0].attention.q_proj.weight,
                       pre.unispeech.encoder.layers[0].attention.q_proj.weight)
    # the same head round-trips strictly; masked_spec_embed (training-only) may come and go with the config
    ctc.save_pretrained(tmp_path / "ctc")
    uc.UniSpeechForCTC.from_pretrained(tmp_path / "ctc")
    uc.UniSpeechForCTC.from_pretrained(tmp_path / "ctc", mask_time_prob=0.0, mask_feature_prob=0.0)
    # an encoder key missing from the directory is an error even with the opt-out
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "ctc" / "model.safetensors"))
    del state["unispeech.feature_projection.projection.weight"]
    save_file(state, str(tmp_path / "ctc" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(uc.WeightsMismatchError, match=r"missing unispeech\.feature_projection\.projection\.weight"):
        uc.UniSpeechForSequenceClassification.from_pretrained(tmp_path / "ctc", allow_new_head=True, num_labels=2)


def test_check_pretrained_finds_the_same_mismatches_without_reading_tensors(tmp_path):
    two = uc.UniSpeechForCTC(uc.UniSpeechConfig(**{**TINY, "num_hidden_layers": 2}))
    two.save_pretrained(tmp_path)
    uc.UniSpeechForCTC.check_pretrained(tmp_path)
    with pytest.raises(uc.WeightsMismatchError, match=r"unused unispeech\.encoder\.layers\.1\."):
        uc.UniSpeechForCTC.check_pretrained(tmp_path, num_hidden_layers=1)
    with pytest.raises(uc.WeightsMismatchError, match=r"missing .*classifier"):
        uc.UniSpeechForSequenceClassification.check_pretrained(tmp_path, num_labels=2)
    uc.UniSpeechForSequenceClassification.check_pretrained(tmp_path, num_labels=2, allow_new_head=True)
    with pytest.raises(ValueError, match=r"'lm_head\.(weight|bias)' has shape"):
        uc.UniSpeechForCTC.check_pretrained(tmp_path, vocab_size=TINY.get("vocab_size", 32) + 1)


def test_evaluation_of_weights_that_do_not_fit_their_config_exits_3_naming_the_keys(tmp_path, capsys):
    """2-layer weights with a 1-layer config.json: a one-line setup error before Ray, not a PER of 320%."""
    import json

    import ray
    from evaluate_helpers import tiny_ctc_model
    from train_helpers import ROOT

    import jobs.evaluate
    from unispeech_core import PhoneTokenizer

    model = tiny_ctc_model(PhoneTokenizer.from_phones(["a b c"]).save(tmp_path / "vocab.json"), tmp_path / "model")
    cfg = json.loads((model / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as exc:
        jobs.evaluate.main([
            "--config", str(ROOT / "configs" / "evaluate_tiny.yaml"), "--set", f"evaluate.model_path={model}", "--set", f"data.path={tmp_path}",
            "--set", f"evaluate.output_dir={tmp_path / 'eval'}", "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db",
        ])
    err = capsys.readouterr().err
    assert exc.value.code == 3, err
    assert f"{model}: weights do not match UniSpeechForCTC built from its config.json: unused " \
           "unispeech.encoder.layers.1." in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not ray.is_initialized()


def test_finetuning_from_weights_that_do_not_fit_their_config_stops_before_ray(tmp_path):
    import json

    from unispeech_platform.runtime.errors import JobSetupError
    from unispeech_platform.train.preflight import check_init_model

    uc.UniSpeechForPreTraining(uc.UniSpeechConfig(**{**TINY, "num_hidden_layers": 2})).save_pretrained(tmp_path)
    assert check_init_model(str(tmp_path)) == str(tmp_path)  # a pretraining export: the new head is expected
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(JobSetupError, match=r"finetune.init_from: .*encoder weights do not match UniSpeechModel.*"
                                            r"unused encoder\.layers\.1\."):
        check_init_model(str(tmp_path))


# ---- DeepSpeed shards: weights_only loading and manifests (in-process DeepSpeed, world size 1, no Ray) --------

class Payload:
    """Unpickling this creates ``path``: proof that a pickle ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _engine(stage: int, precision: str = "fp32"):
    import deepspeed
    from torch import nn

    from unispeech_platform.config.sections import OptimSection, TrainSection
    from unispeech_platform.train.engine import deepspeed_config, param_groups
    from unispeech_platform.train.safe_load import install_weights_only_loads

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 2))
    train = TrainSection(zero_stage=stage, use_gpu=False, grad_accum_steps=1)
    cfg = deepspeed_config(train, OptimSection(), world_size=1)
    if precision == "bf16":  # DeepSpeed's bf16 mode (the GPU path's); runs on CPU too. fp16 needs a GPU.
        cfg["bf16"] = {"enabled": True}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.01), config=cfg,
                                      dist_init_required=False)
    install_weights_only_loads(engine)
    return engine


def _step(engine):
    dtype = next(engine.module.parameters()).dtype
    loss = engine(torch.linspace(-1, 1, 32).reshape(4, 8).to(dtype)).float().pow(2).mean()
    engine.backward(loss)
    engine.step()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_checkpoints_of_every_zero_stage_verify_and_load_weights_only(tmp_path, process_group, stage,
                                                                                  precision):
    from unispeech_platform.train.checkpoint import TAG
    from unispeech_platform.train.manifest import verify_checkpoint, write_manifest

    engine = _engine(stage, precision)
    _step(engine)
    engine.save_checkpoint(str(tmp_path), tag=TAG)
    write_manifest(tmp_path, rank=0, world_size=1, step=1)
    assert verify_checkpoint(tmp_path) is None
    fresh = _engine(stage, precision)
    path, _ = fresh.load_checkpoint(str(tmp_path), tag=TAG, load_lr_scheduler_states=False)
    assert path is not None
    _step(engine), _step(fresh)  # same state => same update (optimizer moments were restored too)
    for a, b in zip(engine.module.parameters(), fresh.module.parameters()):
        if stage == 3:
            a, b = a.ds_tensor, b.ds_tensor
        assert torch.allclose(a, b), stage


@pytest.mark.parametrize(("stage", "precision"), [(0, "fp32"), (1, "fp32"), (2, "fp32"), (3, "fp32"), (2, "bf16"),
                                                (3, "bf16")])
def test_every_zero_stage_consolidates_to_the_modules_weights(tmp_path, process_group, stage, precision):
    """train/zero_consolidate.py on DeepSpeed's own files (world size 1: the 2-rank interleaving of ZeRO-3 is
    tests/test_train_distributed.py's): the module's weights, fp32, every key; ZeRO-3 gives its fp32 master
    partitions, which a bf16 run rounds to its weights."""
    import deepspeed

    from unispeech_platform.train.checkpoint import TAG
    from unispeech_platform.train.zero_consolidate import consolidated_state_dict

    engine = _engine(stage, precision)
    _step(engine)
    engine.save_checkpoint(str(tmp_path), tag=TAG)
    state = consolidated_state_dict(tmp_path / TAG)
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=stage == 3):
        expected = {k: v.detach().float().clone() for k, v in engine.module.state_dict().items()}
    assert list(state) == list(expected) and all(v.dtype == torch.float32 for v in state.values())
    for key, value in expected.items():
        assert state[key].shape == value.shape, key
        if precision == "bf16" and stage == 3:  # the master weights, rounded to bf16: the module's
            assert torch.equal(state[key].bfloat16().float(), value), key
        else:
            assert torch.equal(state[key], value), key


def test_verification_names_the_corrupt_the_missing_and_the_malicious_file(tmp_path, process_group):
    from unispeech_platform.train.checkpoint import TAG
    from unispeech_platform.train.manifest import verify_checkpoint, write_manifest
    from unispeech_platform.train.safe_load import UnsafeCheckpointError, safe_torch_load

    engine = _engine(2)
    _step(engine)
    engine.save_checkpoint(str(tmp_path), tag=TAG)
    write_manifest(tmp_path, rank=0, world_size=2, step=1)
    assert verify_checkpoint(tmp_path) == "manifest.rank1.json is missing (an incomplete upload, or written before manifests existed)"
    write_manifest(tmp_path, rank=0, world_size=1, step=1)
    shard = tmp_path / TAG / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert verify_checkpoint(tmp_path) == (f"{TAG}/zero_pp_rank_0_mp_rank_00_optim_states.pt: sha256 differs from "
                                           "manifest.rank0.json (corrupt or modified)")
    # A payload with a matching manifest (whoever can write the file can rewrite the manifest): refused, not run
    marker = tmp_path / "payload-ran"
    states = tmp_path / TAG / "mp_rank_00_model_states.pt"
    torch.save({"module": {}, "evil": Payload(marker)}, states)
    write_manifest(tmp_path, rank=0, world_size=1, step=1)
    shard.unlink()
    write_manifest(tmp_path, rank=0, world_size=1, step=1)
    problem = verify_checkpoint(tmp_path)
    assert problem is not None and problem.startswith(f"{TAG}/mp_rank_00_model_states.pt: refused to unpickle "
                                                      "(Unsupported global: GLOBAL io.open)"), problem
    with pytest.raises(UnsafeCheckpointError, match="mp_rank_00_model_states.pt: refused to unpickle"):
        _engine(2).load_checkpoint(str(tmp_path), tag=TAG)
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(states)
    assert not marker.exists()
    torch.load(states, weights_only=False)  # the test's payload is real: DeepSpeed's own loading would run it
    assert marker.exists()


def test_restore_candidates_newest_first_never_past_rays_latest(tmp_path):
    from types import SimpleNamespace

    from pyarrow.fs import LocalFileSystem

    from unispeech_platform.train.checkpoint import _restore_candidates

    for name in ["step_00000002", "step_00000004", "step_00000004-r1", "step_00000006", "step_00000008", "model"]:
        (tmp_path / name).mkdir()
    latest = SimpleNamespace(path=str(tmp_path / "step_00000006"), filesystem=LocalFileSystem())
    paths, next_lineage = _restore_candidates(latest)
    # step 8 was never registered by Ray (its latest is step 6): an interrupted upload is not a candidate
    assert [p.rsplit("/", 1)[1] for p in paths] == ["step_00000006", "step_00000004-r1", "step_00000004",
                                                    "step_00000002"]
    assert next_lineage == 2


# ---- a real job: corrupt and malicious checkpoints are skipped, the previous one is used ----------------------

@pytest.mark.slow
def test_restore_skips_a_corrupt_and_a_malicious_checkpoint_and_says_so(tmp_path, capfd):
    import json

    from unispeech_platform.train import run_training
    from unispeech_platform.train.manifest import write_manifest

    corpus = make_tiny_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "runs" / "trust"
    marker = tmp_path / "payload-ran"
    with local_ray():
        run_training(ci_job(corpus, tmp_path, "trust", "train.max_steps=6", "checkpoint.every_steps=2",
                            "checkpoint.keep=3"))
        assert sorted(p.name for p in run_dir.glob("step_*")) == ["step_00000002", "step_00000004", "step_00000006"]
        # the newest: one flipped byte in rank 1's optimizer shard
        shard = run_dir / "step_00000006" / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        # the one before: a pickle payload, and a manifest rewritten to match (an attacker can do both)
        previous = run_dir / "step_00000004"
        states = previous / "ds" / "mp_rank_00_model_states.pt"
        good = torch.load(states, map_location="cpu", weights_only=True)
        torch.save({**good, "client_note": Payload(marker)}, states)
        world = json.loads((previous / "manifest.rank0.json").read_text())["world_size"]
        (previous / "manifest.rank0.json").unlink()
        kept = {r: json.loads((previous / f"manifest.rank{r}.json").read_text())["files"] for r in range(1, world)}
        rank0_files = [p for p in previous.rglob("*") if p.is_file() and not p.name.startswith("manifest.")
                       and p.relative_to(previous).as_posix() not in {f for fs in kept.values() for f in fs}]
        tmp0 = tmp_path / "rank0"
        for p in rank0_files:  # rebuild rank 0's manifest over rank 0's files only
            dest = tmp0 / p.relative_to(previous)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
        write_manifest(tmp0, 0, world, 4)
        (previous / "manifest.rank0.json").write_text((tmp0 / "manifest.rank0.json").read_text())
        capfd.readouterr()

        result = run_training(ci_job(corpus, tmp_path, "trust", "train.max_steps=8", "checkpoint.every_steps=2",
                                     "checkpoint.keep=3"), resume=True)
    out = capfd.readouterr().out
    assert not marker.exists(), "the pickle payload ran"
    assert ("checkpoint step_00000006 skipped: ds/zero_pp_rank_1_mp_rank_00_optim_states.pt: sha256 differs from "
            "manifest.rank1.json (corrupt or modified)") in out, out[-4000:]
    assert ("checkpoint step_00000004 skipped: ds/mp_rank_00_model_states.pt: refused to unpickle "
            "(Unsupported global: GLOBAL io.open)") in out, out[-4000:]
    assert "restored from the previous checkpoint step_00000002 (update 2), 2 newer one(s) skipped" in out, out[-4000:]
    assert "resumed at update 2" in out, out[-4000:]
    assert result.metrics["step"] == 8
    assert (run_dir / "step_00000008-r1").is_dir() and not (run_dir / "step_00000008").exists()
