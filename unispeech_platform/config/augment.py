"""``AugmentConfig``: the ``data.augment:`` section, training-time audio augmentation (docs/data.md)."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Range = tuple[float, float]
NOISE_COLOURS = ("white", "pink", "brown")
CODECS = ("mp3", "vorbis", "opus", "mulaw")
RANGE_LIMITS: dict[str, tuple[float, float]] = {  # (min, max) ranges and the interval each must stay in
    "reverb_rt60_s": (0.01, 2.0),
    "reverb_drr_db": (-20.0, 40.0),
    "noise_snr_db": (-10.0, 60.0),
    "bandlimit_highpass_hz": (0.0, 1000.0),  # below every low-pass cutoff
    "bandlimit_lowpass_hz": (1000.0, 7500.0),  # below 8 kHz, the Nyquist frequency of 16 kHz audio
    "codec_compression": (0.0, 0.99),  # libsndfile's LAME encoder refuses 1.0
}


class AugmentConfig(BaseModel):
    """Training-time audio augmentation (docs/data.md#augmentation): off unless ``enabled``; each effect then
    changes a row with its own probability, its choices drawn from (data.seed, epoch, row id, copy).
    A range is ``[min, max]``, sampled uniformly."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=False, description="Augment training batches (evaluation batches never).")
    speed_prob: Probability = Field(
        default=1.0, description="Chance a row gets a speed factor drawn from speed_factors (1.0 keeps it)."
    )
    speed_factors: list[Annotated[float, Field(ge=0.5, le=2.0)]] = Field(
        default=[0.9, 1.0, 1.1],
        min_length=1,
        description="Speed (tempo and pitch) factors, drawn uniformly: 1.1 is 10 % faster and shorter. The "
        "labels are unchanged; a row the change puts outside min/max_duration_s is dropped and counted.",
    )
    reverb_prob: Probability = Field(
        default=0.3, description="Chance of reverberation by a generated room impulse response."
    )
    reverb_rt60_s: Range = Field(
        default=(0.2, 0.8), description="Room RT60 range: seconds for a 60 dB decay, within [0.01, 2]."
    )
    reverb_drr_db: Range = Field(
        default=(-3.0, 6.0),
        description="Direct-to-reverberant energy ratio range in dB, within [-20, 40] (low: far microphone).",
    )
    noise_prob: Probability = Field(default=0.5, description="Chance of additive coloured noise.")
    noise_snr_db: Range = Field(
        default=(5.0, 20.0), description="Signal-to-noise ratio range in dB, within [-10, 60]."
    )
    noise_colours: list[Literal["white", "pink", "brown"]] = Field(
        default=list(NOISE_COLOURS),
        min_length=1,
        description="Noise spectra to draw from: white (flat), pink (1/f power), brown (1/f^2 power).",
    )
    noise_dir: str | None = Field(
        default=None,
        description="A folder of recorded noise (MUSAN-style; any audio libsndfile decodes, searched recursively; "
        "a local directory every worker reads at the same path, or an object-storage URI): the noise effect then "
        "adds a random stretch of a random file at the drawn SNR instead of generated coloured noise.",
    )
    rir_dir: str | None = Field(
        default=None,
        description="A folder of measured room impulse responses (any audio libsndfile decodes, searched "
        "recursively; local or object storage): the reverb effect then convolves with a random file, cut to "
        "start at its direct path and to at most 2 s, instead of a generated response (reverb_rt60_s and "
        "reverb_drr_db are then unused).",
    )
    bandlimit_prob: Probability = Field(
        default=0.3, description="Chance of a telephone-like band limit (high-pass and low-pass)."
    )
    bandlimit_highpass_hz: Range = Field(
        default=(100.0, 400.0), description="High-pass cutoff range in Hz, within [0, 1000] (0: none)."
    )
    bandlimit_lowpass_hz: Range = Field(
        default=(3000.0, 4000.0), description="Low-pass cutoff range in Hz, within [1000, 7500]."
    )
    codec_prob: Probability = Field(default=0.3, description="Chance of a lossy codec round trip.")
    codecs: list[Literal["mp3", "vorbis", "opus", "mulaw"]] = Field(
        default=list(CODECS),
        min_length=1,
        description="Codecs to draw from: mp3, vorbis, opus (libsndfile, in memory), mulaw (G.711, 8 kHz).",
    )
    codec_compression: Range = Field(
        default=(0.9, 0.99),
        description="libsndfile compression_level range, within [0, 0.99] (0: best quality; 0.9-0.99: low "
        "bitrates, e.g. Opus ~35-12 kbit/s; mulaw ignores it).",
    )

    @field_validator("noise_dir", "rir_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """Workers read the folder from another working directory: a local path is made absolute where the
        config is read (a URI is kept; the same rule as data/storage.py's ``absolute``, which this layer cannot
        import)."""
        if value is None or "://" in value:
            return value
        if not value.strip():
            raise ValueError("must name a folder (or be left out)")
        return os.path.abspath(value)

    @field_validator(*RANGE_LIMITS)
    @classmethod
    def _in_limits(cls, value: Range, info: ValidationInfo) -> Range:
        low, high = RANGE_LIMITS[info.field_name]
        if value[0] > value[1]:
            raise ValueError("must be [min, max] with min <= max")
        if value[0] < low or value[1] > high:
            raise ValueError(f"must lie within [{low}, {high}]")
        return value
