"""Parity with transformers' UniSpeech classes in both directions (transformers is the oracle)."""

from __future__ import annotations

import pytest
import torch
import transformers
from parity_utils import TINY, VARIANTS, padded_batch, rel_close
from safetensors.torch import load_file

import unispeech_core as uc

HEADS = {
    "base": (transformers.UniSpeechModel, uc.UniSpeechModel),
    "pretraining": (transformers.UniSpeechForPreTraining, uc.UniSpeechForPreTraining),
    "ctc": (transformers.UniSpeechForCTC, uc.UniSpeechForCTC),
    "classification": (transformers.UniSpeechForSequenceClassification, uc.UniSpeechForSequenceClassification),
}


def _compare(head: str, ours, theirs, x: torch.Tensor, mask: torch.Tensor) -> None:
    with torch.no_grad():
        if head == "ctc":
            labels = torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100], [7, -100, -100, -100]])
            o, h = ours(x, mask, labels=labels), theirs(x, attention_mask=mask, labels=labels)
            rel_close(o.logits, h.logits)
            rel_close(o.loss, h.loss)
        elif head == "classification":
            labels = torch.tensor([0, 1, 1])
            o, h = ours(x, mask, labels=labels), theirs(x, attention_mask=mask, labels=labels)
            rel_close(o.logits, h.logits)
            rel_close(o.loss, h.loss)
        elif head == "pretraining":
            o, h = ours(x, mask), theirs(x, attention_mask=mask)
            rel_close(o.projected_states, h.projected_states)
            rel_close(o.projected_quantized_states, h.projected_quantized_states)
            # transformers counts padded frames in the perplexity: compare on an unpadded batch
            full = torch.ones_like(mask)
            rel_close(ours(x, full).codevector_perplexity, theirs(x, attention_mask=full).codevector_perplexity)
        else:
            o, h = ours(x, mask, output_hidden_states=True), theirs(x, attention_mask=mask, output_hidden_states=True)
            rel_close(o.last_hidden_state, h.last_hidden_state)
            rel_close(o.extract_features, h.extract_features)
            assert len(o.hidden_states) == len(h.hidden_states) == TINY["num_hidden_layers"] + 1
            for a, b in zip(o.hidden_states, h.hidden_states):
                rel_close(a, b)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_transformers_checkpoint_loads_into_ours(tmp_path, head, variant):
    torch.manual_seed(0)
    cfg = transformers.UniSpeechConfig(**TINY, **VARIANTS[variant], use_weighted_layer_sum=head == "classification")
    theirs = HEADS[head][0](cfg).eval()
    theirs.save_pretrained(tmp_path)
    ours, info = HEADS[head][1].from_pretrained(tmp_path, output_loading_info=True)
    assert info.missing_keys == [] and info.unexpected_keys == []
    _compare(head, ours, theirs, *padded_batch())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_our_checkpoint_loads_into_transformers(tmp_path, head, variant):
    torch.manual_seed(1)
    cfg = uc.UniSpeechConfig(**TINY, **VARIANTS[variant], use_weighted_layer_sum=head == "classification")
    ours = HEADS[head][1](cfg).eval()
    ours.save_pretrained(tmp_path)
    theirs, info = HEADS[head][0].from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    _compare(head, ours, theirs.eval(), *padded_batch(seed=3))


def test_state_dict_keys_match_transformers_exactly():
    cfg = TINY | VARIANTS["layer_stableln"]
    theirs = transformers.UniSpeechForPreTraining(transformers.UniSpeechConfig(**cfg)).state_dict()
    ours = uc.UniSpeechForPreTraining(uc.UniSpeechConfig(**cfg)).state_dict()
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        assert ours[k].shape == theirs[k].shape, k


def test_legacy_weight_norm_keys_and_pytorch_bin(tmp_path):
    """Older files name the positional conv's weight norm weight_g/weight_v and ship pytorch_model.bin."""
    torch.manual_seed(2)
    theirs = transformers.UniSpeechForCTC(transformers.UniSpeechConfig(**TINY)).eval()
    theirs.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
        for k, v in state.items()
    }
    assert any(k.endswith("weight_g") for k in legacy)
    (tmp_path / "model.safetensors").unlink()
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    ours, info = uc.UniSpeechForCTC.from_pretrained(tmp_path, output_loading_info=True)
    assert info.missing_keys == [] and info.unexpected_keys == []
    x, mask = padded_batch()
    with torch.no_grad():
        rel_close(ours(x, mask).logits, theirs(x, attention_mask=mask).logits)


def test_pretraining_checkpoint_into_ctc_and_ctc_into_classification(tmp_path):
    cfg = uc.UniSpeechConfig(**TINY)
    pre = uc.UniSpeechForPreTraining(cfg)
    pre.save_pretrained(tmp_path / "pre")
    ctc, info = uc.UniSpeechForCTC.from_pretrained(tmp_path / "pre", output_loading_info=True, allow_new_head=True)
    assert sorted(info.missing_keys) == ["lm_head.bias", "lm_head.weight"]
    assert {"ctc_proj.weight", "quantizer.codevectors", "project_q.weight"} <= set(info.unexpected_keys)
    assert torch.equal(
        ctc.unispeech.encoder.layers[0].attention.q_proj.weight, pre.unispeech.encoder.layers[0].attention.q_proj.weight
    )
    ctc.save_pretrained(tmp_path / "ctc")
    clf, info = uc.UniSpeechForSequenceClassification.from_pretrained(
        tmp_path / "ctc", output_loading_info=True, allow_new_head=True, num_labels=3
    )
    assert set(info.missing_keys) == {"projector.weight", "projector.bias", "classifier.weight", "classifier.bias"}
    assert set(info.unexpected_keys) == {"lm_head.weight", "lm_head.bias"}
    assert clf.classifier.out_features == 3
    # the bare model loads from a head checkpoint (prefix stripped) and a head from the bare model (prefix added)
    base = uc.UniSpeechModel.from_pretrained(tmp_path / "ctc", allow_new_head=True)
    base.save_pretrained(tmp_path / "base")
    ctc2, info = uc.UniSpeechForCTC.from_pretrained(tmp_path / "base", output_loading_info=True, allow_new_head=True)
    assert sorted(info.missing_keys) == ["lm_head.bias", "lm_head.weight"] and not info.unexpected_keys
    assert torch.equal(ctc2.unispeech.masked_spec_embed, ctc.unispeech.masked_spec_embed)


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    cfg = uc.UniSpeechConfig(**TINY, adapter_attn_dim=None, my_custom_key={"a": 1})
    cfg.save_pretrained(tmp_path)
    again = uc.UniSpeechConfig.from_pretrained(tmp_path)
    assert again.to_dict() == cfg.to_dict()
    assert again.extra["my_custom_key"] == {"a": 1}
    hf = transformers.UniSpeechConfig.from_pretrained(tmp_path)
    assert hf.hidden_size == TINY["hidden_size"] and list(hf.conv_dim) == list(TINY["conv_dim"])
    # every field of transformers' UniSpeechConfig exists here with the same code default
    theirs = transformers.UniSpeechConfig().to_dict()
    ours = uc.UniSpeechConfig().to_dict()
    fields = [k for k in transformers.UniSpeechConfig.__annotations__ if not k.startswith("_")]
    assert len(fields) >= 47
    for key in fields:
        assert key in ours, key
        assert ours[key] == theirs[key], (key, ours[key], theirs[key])
