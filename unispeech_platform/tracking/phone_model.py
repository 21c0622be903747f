"""The MLflow pyfunc of a CTC phone recognizer: waveforms in, phone strings out (greedy CTC decoding).

MLflow loads this file as "model from code" (tracking.model_logging logs it with the model's export directory
as an artifact and ``unispeech_core`` as code), so an MLflow Model needs only torch, numpy, safetensors and
pandas to load and serve, not this platform.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from unispeech_core import PhoneTokenizer, UniSpeechForCTC, ctc_greedy_decode, pad_batch

INPUT_COLUMN = "waveform"
"""The input column: one 16 kHz mono waveform (a list or array of floats) per row."""
MODEL_ARTIFACT = "model_dir"
"""The artifact holding the exported model directory."""


def waveforms(model_input: Any) -> list[np.ndarray]:
    """The waveforms of a DataFrame (a ``waveform`` column; what MLflow passes after checking the signature)
    or of a list of arrays."""
    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN not in model_input.columns:
            raise ValueError(f"expected a column {INPUT_COLUMN!r} (16 kHz mono waveforms), got "
                             f"{list(model_input.columns)}")
        model_input = list(model_input[INPUT_COLUMN])
    elif isinstance(model_input, np.ndarray) and model_input.ndim == 1 and model_input.dtype != object:
        model_input = [model_input]
    out = []
    for i, wave in enumerate(model_input):
        arr = np.asarray(wave, dtype=np.float32)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"waveform {i}: expected a non-empty 1-D mono waveform at 16 kHz, got shape {arr.shape}")
        out.append(arr)
    return out


class PhoneRecognizer(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        directory = context.artifacts[MODEL_ARTIFACT]
        self.model = UniSpeechForCTC.from_pretrained(directory).eval()
        self.tokenizer = PhoneTokenizer.from_file(directory)

    # The DataFrame hint (MLflow infers no schema from it: the logged signature stays the one we give) tells MLflow
    # 3 the input type; without any hint it warns "Add type hints to the `predict` method" on every load.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        waves = waveforms(model_input)
        texts: list[str] = []
        for wave in waves:  # one per forward pass: a group-norm feature encoder would see another row's padding
            with torch.inference_mode():
                out = self.model(**pad_batch([wave]))
            texts += ctc_greedy_decode(out.logits, out.frame_lengths, self.tokenizer)
        return texts


mlflow.models.set_model(PhoneRecognizer())
