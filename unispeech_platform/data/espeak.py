"""espeak-ng as a speech synthesiser (the program, for the synthetic corpus), and the cleaning of its IPA into
phone tokens that every G2P path shares (the importers' in-process libespeak-ng G2P is ``importers/g2p.py``).

``--ipa=1`` joins a word's phones with ``_`` and words with spaces (``--ipa=3`` would add zero-width
joiners instead, so we never use it). What we clean (docs/architecture.md#offline-corpus-espeak-ng): stress marks, the French link ``-``,
empty tokens, language-switch markers such as ``(en)`` (the utterance is rejected: its phones are no longer
in the voice's language) and ASCII phoneme codes some voices leak (mapped when unambiguous, else rejected).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ESPEAK = "espeak-ng"
_STRIP = str.maketrans("", "", "ˈˌ-")
_LANG_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)")
# Kirshenbaum-style codes leaked by some voices (ky, ru): map the unambiguous ones to IPA.
ASCII_MAP = {"dZ": "dʒ", "tS": "tʃ", "S": "ʃ", "Z": "ʒ", "N": "ŋ", "X": "χ", 'u"': "ʉ"}
_ALLOWED_ASCII = set("abcdefghijklmnopqrstuvwxyz")

# Reasons an utterance gets no phones (reported by the corpus jobs).
LANGUAGE_SWITCH = "language_switch"
ASCII_LEAK = "ascii_leak"
NO_PHONES = "no_phones"
ESPEAK_FAILED = "espeak_failed"


class G2PError(ValueError):
    """espeak-ng gave no usable phones; ``reason`` is one of the codes above."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def require_espeak() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise RuntimeError("espeak-ng is not installed: run `apt-get install espeak-ng` (or `make setup`)")
    return path


def clean_ipa(raw: str) -> list[str]:
    """Phone tokens of espeak-ng ``--ipa=1`` output, or G2PError with the reason."""
    text = " ".join(raw.split())  # clauses come on separate lines
    switch = _LANG_SWITCH.search(text)
    if switch:
        raise G2PError(LANGUAGE_SWITCH, f"espeak switched language {switch.group(0)} in {text!r}")
    phones: list[str] = []
    for word in text.split(" "):
        for token in word.split("_"):
            token = token.translate(_STRIP)
            token = ASCII_MAP.get(token, token)
            if not token:
                continue
            if any(c.isascii() and c not in _ALLOWED_ASCII for c in token):
                raise G2PError(ASCII_LEAK, f"ASCII phoneme code {token!r} in {text!r}")
            phones.append(token)
    if not phones:
        raise G2PError(NO_PHONES, f"no phones in {raw!r}")
    return phones


def _run(args: list[str], text: str) -> str:
    try:
        proc = subprocess.run(
            [ESPEAK, *args, "--stdin"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        require_espeak()
        raise
    if proc.returncode != 0:
        raise G2PError(
            ESPEAK_FAILED, f"espeak-ng {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def check_voice(voice: str) -> None:
    """Raise naming the voice if espeak-ng does not have it (espeak-ng exits 1 for unknown voices)."""
    try:
        _run(["-q", "-v", voice], "")
    except G2PError as e:
        raise ValueError(f"espeak-ng has no voice {voice!r}: {e.detail}") from None


def synthesize(
    text: str, voice: str, *, speed: int = 170, pitch: int = 50, amplitude: int = 90
) -> tuple[np.ndarray, int, list[str]]:
    """Speak ``text``: mono float32 waveform, its sample rate (22,050 Hz) and its phone tokens.

    ``voice`` may carry a variant (``es+f2``); the phones do not depend on the variant.
    """
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        wav = Path(tmp) / "out.wav"
        args = ["-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "-z", "--ipa=1"]
        ipa = _run([*args, "-w", str(wav)], text)
        phones = clean_ipa(ipa)
        wave, rate = sf.read(io.BytesIO(wav.read_bytes()), dtype="float32")
    return wave, rate, phones
