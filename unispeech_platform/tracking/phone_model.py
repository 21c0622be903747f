"""The MLflow pyfunc of a CTC phone recognizer: audio in, phone strings out.

Input: a DataFrame with one utterance per row, in one of three columns (the first one set in a row is used):

- ``waveform``: 16 kHz mono samples (a list or array of floats);
- ``audio``: the bytes of an audio file in any format libsndfile reads (WAV, FLAC, OGG, MP3, ...), any rate and
  channel count;
- ``path``: the path of such a file on the serving machine (read as jobs.transcribe reads one: a regular file,
  at most 512 MiB).

Files are decoded, downmixed and resampled to 16 kHz by the same functions as the training pipeline and
jobs.transcribe (unispeech_core.audio, unispeech_core.audio_file). Utterances run in padded batches of
``batch_size`` (sorted by length); a group-norm feature encoder (feat_extract_norm: group) scores padded input
differently, so such a model batches only utterances of equal length. Decoding is greedy by default; ``decoder:
beam`` runs the CTC beam search of jobs.transcribe (unispeech_core.beam, no LM), ``beam_size`` wide. The options
are ``params`` of ``predict`` or the ``model_config`` of ``mlflow.pyfunc.load_model`` (params win).

MLflow loads this file as "model from code" (tracking.model_logging logs it with the model's export directory
as an artifact and ``unispeech_core`` as code), so an MLflow Model needs only its pip requirements (torch,
torchaudio, soundfile, numpy, pandas, safetensors; flashlight-text for the beam search) to load and serve, not
this platform.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from unispeech_core import PhoneTokenizer, UniSpeechForCTC, ctc_greedy_decode, pad_batch

INPUT_COLUMN = "waveform"
"""16 kHz mono waveforms (a list or array of floats) per row."""
AUDIO_COLUMN = "audio"
"""Audio file bytes per row."""
PATH_COLUMN = "path"
"""Audio file paths per row."""
INPUT_COLUMNS = (INPUT_COLUMN, AUDIO_COLUMN, PATH_COLUMN)
MODEL_ARTIFACT = "model_dir"
"""The artifact holding the exported model directory."""
DEFAULTS = {"decoder": "greedy", "beam_size": 16, "batch_size": 8}
"""Decoding options (``params`` / ``model_config``)."""


def _set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return not (isinstance(value, (str, bytes)) and len(value) == 0)


def _decoded(data: bytes, where: str) -> np.ndarray:
    from unispeech_core.audio import decode_audio, to_mono_16k

    decoded = decode_audio(data, None, None)
    if decoded.error is not None:
        raise ValueError(f"{where}: {decoded.error}: {decoded.detail}")
    return to_mono_16k(decoded.wave, decoded.sample_rate)


def _wave(row: int, column: str, value: Any) -> np.ndarray:
    if column == PATH_COLUMN:
        from unispeech_core.audio_file import read_audio_file

        return _decoded(read_audio_file(str(value)), f"row {row} ({value})")
    if column == AUDIO_COLUMN:
        return _decoded(bytes(value), f"row {row}")
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"waveform {row}: expected a non-empty 1-D mono waveform at 16 kHz, got shape {arr.shape}")
    return arr


def waveforms(model_input: Any) -> list[np.ndarray]:
    """The 16 kHz mono waveforms of a DataFrame (columns ``waveform``, ``audio`` or ``path``; what MLflow passes
    after checking the signature) or of a list of arrays."""
    if isinstance(model_input, pd.DataFrame):
        columns = [c for c in INPUT_COLUMNS if c in model_input.columns]
        if not columns:
            raise ValueError(f"expected a column {', '.join(map(repr, INPUT_COLUMNS))} (16 kHz mono waveforms, audio "
                             f"file bytes or paths), got {list(model_input.columns)}")
        out = []
        for i, row in enumerate(model_input[columns].itertuples(index=False)):
            column, value = next(((c, v) for c, v in zip(columns, row) if _set(v)), (None, None))
            if column is None:
                raise ValueError(f"row {i}: no {', '.join(columns)} value")
            out.append(_wave(i, column, value))
        return out
    if isinstance(model_input, np.ndarray) and model_input.ndim == 1 and model_input.dtype != object:
        model_input = [model_input]
    return [_wave(i, INPUT_COLUMN, wave) for i, wave in enumerate(model_input)]


def batches(lengths: list[int], size: int, *, pad: bool) -> list[list[int]]:
    """Row indices in batches of at most ``size``, shortest first; without ``pad`` only equal lengths share one."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < size and (pad or lengths[out[-1][0]] == lengths[i]):
            out[-1].append(i)
        else:
            out.append([i])
    return out


class PhoneRecognizer(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        directory = context.artifacts[MODEL_ARTIFACT]
        self.model = UniSpeechForCTC.from_pretrained(directory).eval()
        self.tokenizer = PhoneTokenizer.from_file(directory)
        self.config = {**DEFAULTS, **{k: v for k, v in (getattr(context, "model_config", None) or {}).items()
                                      if k in DEFAULTS}}
        self._beams: dict[int, Any] = {}

    def _beam(self, size: int):
        if size not in self._beams:
            from unispeech_core.beam import BeamDecoder, BeamOptions

            tokens = [self.tokenizer.id_to_token[i] for i in range(len(self.tokenizer))]
            self._beams[size] = (BeamDecoder(tokens, BeamOptions(beam_size=size)), tokens)
        return self._beams[size]

    def _decode(self, logits: torch.Tensor, lengths: torch.Tensor, options: dict[str, Any]) -> list[str]:
        if options["decoder"] == "greedy":
            return ctc_greedy_decode(logits, lengths, self.tokenizer)
        if options["decoder"] != "beam":
            raise ValueError(f"decoder: 'greedy' or 'beam', got {options['decoder']!r}")
        from unispeech_core.tokenizer import SPECIAL_TOKENS

        decoder, tokens = self._beam(int(options["beam_size"]))
        return [" ".join(tokens[s.id] for s in row if tokens[s.id] not in SPECIAL_TOKENS)
                for row in decoder(logits.log_softmax(-1), lengths)]

    # The DataFrame hint (MLflow infers no schema from it: the logged signature stays the one we give) tells MLflow
    # 3 the input type; without any hint it warns "Add type hints to the `predict` method" on every load.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        options = {**self.config, **{k: v for k, v in (params or {}).items() if k in DEFAULTS and v is not None}}
        waves = waveforms(model_input)
        pad = self.model.config.pads_safely
        texts: list[str] = [""] * len(waves)
        for batch in batches([len(w) for w in waves], max(1, int(options["batch_size"])), pad=pad):
            with torch.inference_mode():
                out = self.model(**pad_batch([waves[i] for i in batch]))
            logits = out.logits.float()
            lengths = out.frame_lengths if out.frame_lengths is not None else torch.full(
                (len(batch),), logits.shape[1])
            for i, text in zip(batch, self._decode(logits, lengths, options)):
                texts[i] = text
        return texts


mlflow.models.set_model(PhoneRecognizer())
