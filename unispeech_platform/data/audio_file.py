"""The one reader of an audio file whose path comes from data (unispeech_core.audio_file, where the served MLflow
model finds it too): regular files only, read non-blocking up to a size cap within a deadline."""

from unispeech_core.audio_file import (
    MAX_AUDIO_BYTES,
    NOT_A_FILE,
    READ_TIMEOUT_S,
    TIMED_OUT,
    TOO_LARGE,
    UNREADABLE,
    AudioFileError,
    AudioLimits,
    read_audio_file,
)

__all__ = [
    "MAX_AUDIO_BYTES", "NOT_A_FILE", "READ_TIMEOUT_S", "TIMED_OUT", "TOO_LARGE", "UNREADABLE", "AudioFileError",
    "AudioLimits", "read_audio_file",
]
