"""Training-time audio augmentation: speed, reverberation, coloured noise, band limit, lossy codec.

``BatchStream`` applies it to training rows only (docs/data.md#augmentation), in the order a recording chain
would: the talker's rate (speed), the room (reverberation), background noise, the channel (band limit), the
codec. Every choice comes from ``row_rng("augment", effect, seed, epoch, row id, copy)``: the same row gets
the same audio on any worker, another epoch other audio, and one effect's draws do not depend on which other
effects are on. The signal processing is torchaudio's (resampling, ``fftconvolve``, ``add_noise``, biquads)
and libsndfile's (codecs, through soundfile); only the noise colouring and the room impulse response are
written here, each saying why. Recorded noise and measured impulse responses come from the user's folders
(``noise_dir``, ``rir_dir``; data/audio_bank.py) when given.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from unispeech_platform.config.augment import AugmentConfig

from .audio import _resampler
from .audio_bank import AudioBankError, measured_rir, noise_stretch, open_bank, warn_once
from .decode import row_rng
from .schema import TARGET_SAMPLE_RATE as SR

EFFECTS = ("speed", "reverb", "noise", "bandlimit", "codec")  # application order; fixed order for counters
CODEC_FORMATS = {  # codec name -> libsndfile (format, subtype, sample rate)
    "mp3": ("MP3", "MPEG_LAYER_III", SR),
    "vorbis": ("OGG", "VORBIS", SR),
    "opus": ("OGG", "OPUS", SR),
    "mulaw": ("WAV", "ULAW", 8000),  # G.711 telephone speech: 8 kHz, 8-bit mu-law
}
NOISE_EXPONENTS = {"white": 0.0, "pink": 0.5, "brown": 1.0}  # amplitude ~ f^-e: power ~ 1, 1/f, 1/f^2
NOISE_FLOOR_HZ = 20.0  # coloured noise stops rising below this: its energy stays in the audible band
HEADROOM = 0.5  # peak level the biquads and codecs see: torchaudio's lfilter clamps at 1, codecs clip


@dataclass(frozen=True)
class Augmented:
    """The augmented wave (float32, 16 kHz mono), the effects that changed it (in ``EFFECTS`` order) and what
    was drawn for them (speed, rt60_s, drr_db or rir, noise, snr_db, highpass_hz, lowpass_hz, codec, compression;
    ``noise`` is a colour or the drawn file's path inside ``noise_dir``, ``rir`` the file's inside ``rir_dir``)."""

    wave: np.ndarray
    applied: tuple[str, ...]
    drawn: dict[str, float | str]


def augment(
    wave: np.ndarray, cfg: AugmentConfig, *, seed: int, epoch: int, row_id: str, copy: int
) -> Augmented:
    """``wave`` with the effects drawn for (seed, epoch, row_id, copy); the input (Arrow memory) is kept."""
    applied: list[str] = []
    drawn: dict[str, float | str] = {}
    x = torch.from_numpy(np.array(wave, dtype=np.float32))  # a copy: the input may be read-only Arrow memory

    def draw(effect: str, prob: float) -> np.random.Generator | None:
        rng = row_rng("augment", effect, seed, epoch, row_id, copy)
        return rng if rng.random() < prob else None

    if (rng := draw("speed", cfg.speed_prob)) is not None:
        factor = drawn["speed"] = float(cfg.speed_factors[int(rng.integers(len(cfg.speed_factors)))])
        if factor != 1.0:
            x = change_speed(x, factor)
            applied.append("speed")
    if (rng := draw("reverb", cfg.reverb_prob)) is not None and (rir := _room(cfg, rng, drawn)) is not None:
        x = reverberate(x, rir)
        applied.append("reverb")
    if (rng := draw("noise", cfg.noise_prob)) is not None and (noise := _noise(cfg, len(x), rng, drawn)) is not None:
        x = add_noise(x, noise, drawn["snr_db"])
        applied.append("noise")
    if (rng := draw("bandlimit", cfg.bandlimit_prob)) is not None:
        highpass_hz = drawn["highpass_hz"] = float(rng.uniform(*cfg.bandlimit_highpass_hz))
        lowpass_hz = drawn["lowpass_hz"] = float(rng.uniform(*cfg.bandlimit_lowpass_hz))
        x = band_limit(x, highpass_hz, lowpass_hz)
        applied.append("bandlimit")
    if (rng := draw("codec", cfg.codec_prob)) is not None:
        codec = drawn["codec"] = cfg.codecs[int(rng.integers(len(cfg.codecs)))]
        compression = drawn["compression"] = float(rng.uniform(*cfg.codec_compression))
        x = codec_round_trip(x, codec, compression)
        applied.append("codec")
    return Augmented(np.ascontiguousarray(x.numpy(), dtype=np.float32), tuple(applied), drawn)


def _room(cfg: AugmentConfig, rng: np.random.Generator, drawn: dict) -> torch.Tensor | None:
    """The impulse response for a row: a measured one from ``rir_dir``, else a generated one. A measured file
    that does not decode leaves the row dry (said once per file, not counted as reverberated)."""
    if cfg.rir_dir is None:
        rt60_s = drawn["rt60_s"] = float(rng.uniform(*cfg.reverb_rt60_s))
        drr_db = drawn["drr_db"] = float(rng.uniform(*cfg.reverb_drr_db))
        return room_impulse_response(rt60_s, drr_db, rng)
    try:
        drawn["rir"], rir = measured_rir(open_bank(cfg.rir_dir), rng)
    except AudioBankError as e:
        warn_once(f"data.augment.rir_dir: {e}: rows that draw it are not reverberated")
        return None
    return torch.from_numpy(rir)


def _noise(cfg: AugmentConfig, n: int, rng: np.random.Generator, drawn: dict) -> torch.Tensor | None:
    """The noise for a row of ``n`` samples and its SNR (in ``drawn``): a stretch of a recorded file from
    ``noise_dir``, else generated coloured noise. A file that does not decode leaves the row clean (said once)."""
    if cfg.noise_dir is None:
        colour = drawn["noise"] = cfg.noise_colours[int(rng.integers(len(cfg.noise_colours)))]
        drawn["snr_db"] = float(rng.uniform(*cfg.noise_snr_db))
        return coloured_noise(colour, n, rng)
    drawn["snr_db"] = float(rng.uniform(*cfg.noise_snr_db))
    try:
        drawn["noise"], noise = noise_stretch(open_bank(cfg.noise_dir), n, rng)
    except AudioBankError as e:
        warn_once(f"data.augment.noise_dir: {e}: rows that draw it get no noise")
        return None
    return torch.from_numpy(noise)


def change_speed(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Play ``factor`` times faster (tempo and pitch, as Kaldi's speed perturbation): length / factor.

    The resampling ``torchaudio.functional.speed`` does (read at factor x 16 kHz, write at 16 kHz), through
    the decode stage's cached ``transforms.Resample``: the kernel is built once per factor, not per row."""
    with torch.no_grad():
        return _resampler(round(factor * SR), SR)(x)


def room_impulse_response(rt60_s: float, drr_db: float, rng: np.random.Generator) -> torch.Tensor:
    """A synthetic room impulse response at 16 kHz, unit energy: the direct path, then a diffuse tail.

    The tail is Polack's statistical model: Gaussian noise under an exponential envelope whose energy falls
    60 dB in ``rt60_s``, scaled so that direct / tail energy is ``drr_db``. Written here because no kept
    library fits: torchaudio's image-method simulator (``prototype.functional.simulate_rir_ism``) left with
    the prototype package in 2.9, pyroomacoustics is a large compiled dependency for what is a few lines of
    this model, and measured RIR collections are data we would have to ship.
    """
    n = max(2, int(rt60_s * SR))
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-np.log(1000.0) * t / rt60_s)  # amplitude 1e-3 = -60 dB at rt60
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    tail[0] = 1.0  # the direct path: no delay, so the speech keeps its place in time
    return torch.from_numpy(tail / np.linalg.norm(tail)).float()


def reverberate(x: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """``x`` convolved with ``rir`` (FFT), cut to its own length (the tail past its end dropped), same RMS."""
    import torchaudio.functional as F

    y = F.fftconvolve(x, rir)[: len(x)]
    return _same_rms(y, x)


def coloured_noise(colour: str, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` samples of white, pink (1/f power) or brown (1/f^2 power) noise.

    White Gaussian noise shaped in the frequency domain. Written here because neither torchaudio nor numpy
    makes coloured noise; the one package that does (``colorednoise``) is this same FFT shaping.
    """
    white = rng.standard_normal(n)
    exponent = NOISE_EXPONENTS[colour]
    if exponent == 0.0 or n < 2:
        return torch.from_numpy(white).float()
    spectrum = np.fft.rfft(white)
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / SR), NOISE_FLOOR_HZ)
    spectrum *= freqs**-exponent
    spectrum[0] = 0.0  # no DC offset
    return torch.from_numpy(np.fft.irfft(spectrum, n)).float()


def add_noise(x: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``x`` plus ``noise`` scaled to ``snr_db`` (energy ratio over the utterance); silence gets no noise."""
    import torchaudio.functional as F

    if not torch.any(x != 0):
        return x
    return F.add_noise(x[None], noise[None], torch.tensor([snr_db]))[0]


def band_limit(x: torch.Tensor, highpass_hz: float, lowpass_hz: float) -> torch.Tensor:
    """A telephone-like channel: 4th-order high-pass and low-pass (each biquad twice, 24 dB per octave)."""
    import torchaudio.functional as F

    scale = _peak(x) / HEADROOM
    y = x / scale
    for _ in range(2):
        y = F.lowpass_biquad(y, SR, lowpass_hz)
        if highpass_hz > 0:
            y = F.highpass_biquad(y, SR, highpass_hz)
    return y * scale


def codec_round_trip(x: torch.Tensor, codec: str, compression: float) -> torch.Tensor:
    """Encode with ``codec`` in memory, decode again (libsndfile): the same length, the codec's artefacts.

    ``compression`` is libsndfile's compression level (0 = best quality), unused by mu-law. A length the
    decoder gives back differently (codec frames, padding) is cut or zero-padded at the end.
    """
    fmt, subtype, rate = CODEC_FORMATS[codec]
    scale = _peak(x) / HEADROOM
    y = x / scale
    with torch.no_grad():
        if rate != SR:
            y = _resampler(SR, rate)(y)
        buf = io.BytesIO()
        options = {} if codec == "mulaw" else {"compression_level": compression}
        try:
            sf.write(buf, y.numpy(), rate, format=fmt, subtype=subtype, **options)
        except (sf.SoundFileError, ValueError, TypeError) as e:
            raise RuntimeError(
                f"data.augment.codecs: libsndfile {sf.__libsndfile_version__} cannot encode {codec} ({e}); "
                "remove it from the list"
            ) from None
        buf.seek(0)
        decoded, _ = sf.read(buf, dtype="float32")
        y = torch.from_numpy(np.ascontiguousarray(decoded))
        if rate != SR:
            y = _resampler(rate, SR)(y)
    n = len(x)
    y = y[:n] if len(y) >= n else torch.nn.functional.pad(y, (0, n - len(y)))
    return y * scale


def _peak(x: torch.Tensor) -> float:
    peak = float(x.abs().max()) if len(x) else 0.0
    return peak if peak > 0 else HEADROOM


def _same_rms(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    want, have = like.pow(2).mean().sqrt(), y.pow(2).mean().sqrt()
    return y * (want / have) if float(have) > 0 else y
