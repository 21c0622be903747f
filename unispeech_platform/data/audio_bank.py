"""Recorded noise and measured room impulse responses from the user's own files (``data.augment.noise_dir`` /
``rir_dir``, docs/data.md#augmentation): MUSAN-style folders of any audio libsndfile decodes, local (a directory
every worker reads at the same path) or on object storage.

Written here because what the toolkits offer is tied to their own pipelines (Lhotse's cut sets, SpeechBrain's CSV
manifests); what we need is small: a sorted listing (so every worker draws the same file for the same row), a
decode through the corpus decoder (so a file is "bad" by the same rules as a corpus row), and a per-process cache.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs

from unispeech_platform.config.augment import AugmentConfig
from unispeech_platform.runtime.errors import JobSetupError

from .audio import decode_audio, to_mono_16k
from .audio_file import MAX_AUDIO_BYTES, AudioFileError, read_audio_file
from .schema import TARGET_SAMPLE_RATE
from .storage import Location, locate

log = logging.getLogger(__name__)

CACHED_FILES = 32
"""Decoded files kept per process: MUSAN's noise files average ~20 s (1.3 MB as float32 at 16 kHz)."""

RIR_MAX_SECONDS = 2.0
"""A measured impulse response is cut after 2 s: the longest RT60 the generated one allows (longer tails are
below -60 dB in any real room, and the convolution's cost grows with them)."""


class AudioBankError(JobSetupError):
    """A noise or impulse-response folder that cannot serve: missing, empty, or a file that does not decode."""


def audio_suffixes() -> frozenset[str]:
    """File name endings of the audio formats libsndfile reads here (and the common aliases of those formats)."""
    import soundfile as sf

    return frozenset({f".{k.lower()}" for k in sf.available_formats()} | {".oga", ".opus", ".aif", ".mp3"})


@dataclass(frozen=True)
class AudioBank:
    """The audio files below ``root`` (sorted, inner paths of ``root``'s filesystem)."""

    root: str
    files: tuple[str, ...]

    def name(self, path: str) -> str:
        """``path`` relative to the bank's root: what a run records as drawn."""
        return path[len(locate(self.root).path.rstrip("/")) + 1:]

    def clip(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """A file drawn by ``rng`` and its 16 kHz mono samples (cached); AudioBankError if it does not decode."""
        path = self.files[int(rng.integers(len(self.files)))]
        return self.name(path), _decoded(self.root, path)


@functools.cache
def open_bank(root: str) -> AudioBank:
    """The bank at ``root`` (listed once per process); AudioBankError naming ``root`` when there is none."""
    try:
        loc = locate(root)
        if not loc.is_dir():
            raise AudioBankError(f"{root}: not a directory")
        suffixes = audio_suffixes()
        files = tuple(i.path for i in loc.walk()
                      if i.type == pafs.FileType.File and os.path.splitext(i.path)[1].lower() in suffixes)
    except (OSError, ValueError) as e:
        raise AudioBankError(f"{root}: {e}") from None
    if not files:
        raise AudioBankError(f"{root}: no audio files in it (regular files ending in a format libsndfile reads: "
                             ".wav, .flac, .ogg, .mp3, ...)")
    return AudioBank(root, files)


def check_bank(root: str, key: str) -> int:
    """Before Ray starts: every file of the bank at ``root`` decodes (one line naming ``key`` and the file
    otherwise). Returns the number of files."""
    try:
        bank = open_bank(root)
        for path in bank.files:
            _decoded(root, path)
    except AudioBankError as e:
        raise AudioBankError(f"{key}: {e}") from None
    return len(bank.files)


def check_augment_folders(augment: AugmentConfig) -> None:
    """The pre-Ray check of a job whose augmentation reads folders: each one it will draw from decodes."""
    if not augment.enabled:
        return
    for key, root, prob in (("data.augment.noise_dir", augment.noise_dir, augment.noise_prob),
                            ("data.augment.rir_dir", augment.rir_dir, augment.reverb_prob)):
        if root is not None and prob > 0:
            check_bank(root, key)


@functools.lru_cache(maxsize=CACHED_FILES)
def _decoded(root: str, path: str) -> np.ndarray:
    loc = locate(root)
    shown = path if loc.is_local else str(Location(loc.fs, path))
    try:
        if loc.is_local:
            data = read_audio_file(path)  # regular files only, capped: a FIFO in the folder cannot hang a worker
        else:
            with loc.fs.open_input_stream(path) as f:
                data = f.read(MAX_AUDIO_BYTES + 1)
            if len(data) > MAX_AUDIO_BYTES:
                raise AudioFileError("audio_file_too_large", f"{shown}: more than the {MAX_AUDIO_BYTES}-byte cap")
    except (AudioFileError, OSError) as e:
        raise AudioBankError(str(e)) from None
    decoded = decode_audio(data, None, None)
    if decoded.error is not None:
        raise AudioBankError(f"{shown}: {decoded.error} ({decoded.detail})")
    wave = to_mono_16k(decoded.wave, decoded.sample_rate)
    if not np.any(wave != 0):
        raise AudioBankError(f"{shown}: all samples are zero")
    return wave


def noise_stretch(bank: AudioBank, n: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """``n`` samples of a drawn file from a drawn offset; a file shorter than ``n`` is looped (as Lhotse and
    SpeechBrain do), so a short noise still covers the whole utterance."""
    name, wave = bank.clip(rng)
    start = int(rng.integers(len(wave)))
    reps = -(-(start + n) // len(wave))
    return name, np.tile(wave, reps)[start: start + n]


def measured_rir(bank: AudioBank, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A drawn impulse response, cut to start at its direct path (its largest peak: the propagation delay before
    it would shift the speech against its frames), at most ``RIR_MAX_SECONDS`` long, unit energy."""
    name, wave = bank.clip(rng)
    rir = wave[int(np.argmax(np.abs(wave))):][: int(RIR_MAX_SECONDS * TARGET_SAMPLE_RATE)]
    return name, (rir / np.linalg.norm(rir)).astype(np.float32)


@functools.cache
def warn_once(message: str) -> None:
    """One warning per distinct problem and process: a bad file drawn for many rows is said once."""
    log.warning(message)
