"""Decode, check and resample one utterance (unispeech_core.audio, where the served MLflow model finds it too):
every way a row can be bad has a fixed reason code, the same for the validator, the pipeline and transcription."""

from unispeech_core.audio import (
    BAD_REASONS,
    EMPTY_AUDIO,
    NON_FINITE,
    NULL_AUDIO,
    NUM_SAMPLES_MISMATCH,
    SAMPLE_RATE_MISMATCH,
    TOO_FEW_SAMPLES,
    TRUNCATED,
    UNDECODABLE,
    UNKNOWN_LENGTH,
    UNKNOWN_PHONES,
    Decoded,
    _resampler,
    decode_audio,
    encode_flac,
    frames_in_header,
    read_stream,
    short_body,
    to_mono_16k,
)

__all__ = [
    "BAD_REASONS", "EMPTY_AUDIO", "NON_FINITE", "NULL_AUDIO", "NUM_SAMPLES_MISMATCH", "SAMPLE_RATE_MISMATCH",
    "TOO_FEW_SAMPLES", "TRUNCATED", "UNDECODABLE", "UNKNOWN_LENGTH", "UNKNOWN_PHONES", "Decoded", "_resampler",
    "decode_audio", "encode_flac", "frames_in_header", "read_stream", "short_body", "to_mono_16k",
]
