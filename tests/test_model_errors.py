"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import json
import re

import pytest
import torch
from parity_utils import TINY

import unispeech_core as uc


@pytest.fixture(scope="module")
def ctc():
    return uc.UniSpeechForCTC(uc.UniSpeechConfig(**TINY)).eval()


def test_wrong_rank(ctc):
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        ctc(torch.randn(2, 1, 4000))


def test_wrong_dtype(ctc):
    with pytest.raises(TypeError, match="floating point"):
        ctc(torch.ones(2, 4000, dtype=torch.long))


def test_audio_shorter_than_receptive_field(ctc):
    rf = ctc.config.receptive_field
    with pytest.raises(ValueError, match=f"receptive field \\({rf} samples"):
        ctc(torch.randn(1, rf - 1))
    x = torch.randn(2, 4000)
    mask = torch.ones(2, 4000, dtype=torch.long)
    mask[1, 30:] = 0  # a padded utterance of 30 samples is too short as well
    with pytest.raises(ValueError, match="30 samples is shorter"):
        ctc(x, mask)
    assert uc.UniSpeechConfig().receptive_field == 400


def test_labels_longer_than_frames(ctc):
    x = torch.randn(2, 1000)
    frames = int(ctc._get_feat_extract_output_lengths(1000))
    labels = torch.ones(2, frames + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"sample 0: {frames + 1} labels but only {frames} frames"):
        ctc(x, labels=labels)


def test_label_id_out_of_vocabulary(ctc):
    with pytest.raises(ValueError, match="vocab_size"):
        ctc(torch.randn(1, 4000), labels=torch.tensor([[1, 99]]))


def test_mismatched_config_and_weights(tmp_path, ctc):
    ctc.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + r": checkpoint tensor 'lm_head.weight' has shape "
                       r"\(12, 32\) but .* expects \(12, 64\) \(and \d+ more tensors\): config and weights do not match"):
        uc.UniSpeechForCTC.from_pretrained(tmp_path)


def test_missing_and_corrupt_checkpoints(tmp_path, ctc):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        uc.UniSpeechForCTC.from_pretrained(tmp_path / "nope")
    ctc.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors: cannot read"):
        uc.UniSpeechForCTC.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        uc.UniSpeechForCTC.from_pretrained(tmp_path)


def test_invalid_config_values():
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        uc.UniSpeechConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="same length"):
        uc.UniSpeechConfig(conv_dim=(8, 8), conv_stride=(5,), conv_kernel=(10, 3))
    with pytest.raises(ValueError, match="ctc_weight"):
        uc.UniSpeechConfig(ctc_weight=1.5)
    with pytest.raises(ValueError, match="model_type 'wav2vec2'"):
        uc.UniSpeechConfig.from_dict({"model_type": "wav2vec2"})
