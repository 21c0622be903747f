"""CTC beam search (unispeech_core.beam: torchaudio's flashlight decoder, optionally with a KenLM n-gram over the
model's tokens), with an LM that does not load as a setup error of the job (exit 3 naming it)."""

from __future__ import annotations

from unispeech_core import beam as _core
from unispeech_core.beam import WORD_DELIMITER, BeamOptions
from unispeech_platform.runtime.errors import JobSetupError

__all__ = ["WORD_DELIMITER", "BeamDecoder", "BeamOptions", "LMLoadError"]


class LMLoadError(JobSetupError, _core.LMLoadError):
    """The --lm file is not a KenLM model (exit 3 naming it)."""


class BeamDecoder(_core.BeamDecoder):
    def __init__(self, tokens: list[str], options: BeamOptions):
        try:
            super().__init__(tokens, options)
        except _core.LMLoadError as e:
            raise LMLoadError(str(e)) from None
