"""Batched G2P through libespeak-ng in-process: one library load per worker process, not one espeak-ng
process per sentence.

The espeak-ng CLI cannot batch: it prints one line per clause, so sentence boundaries are lost in its output.
``espeak_TextToPhonemes`` of the same library (what the CLI's ``--ipa`` calls) returns phones clause by clause
for a text we hand it, so each sentence stays its own call without a process start (hand-written ctypes: the
only Python wrapper, ``phonemizer``, would add a dependency for ~30 lines). Its output has the CLI's
``--ipa=1`` form, so :func:`unispeech_platform.data.espeak.clean_ipa` cleans it the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

from ..espeak import ESPEAK_FAILED, LANGUAGE_SWITCH, G2PError, clean_ipa

# A language code (Common Voice locale, ISO code, a source's language column) -> espeak-ng voice, where the two
# differ; any other code's voice is its first part, lower-cased (``es-MX`` -> ``es``).
DEFAULT_VOICES = {"en": "en-us", "sv-SE": "sv", "pt": "pt", "fy-NL": "fy", "ga-IE": "ga", "zh-CN": "cmn"}

_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_CHARS_UTF8 = 1
_IPA_WITH_UNDERSCORES = 0x02 | (ord("_") << 8)  # bit 1: IPA; bits 8-23: the separator between a word's phones
_LOCK = threading.Lock()  # the library keeps one global voice


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        lib = ctypes.cdll.LoadLibrary(name)
    except OSError as e:
        raise RuntimeError(
            f"libespeak-ng is not installed ({e}): run `apt-get install espeak-ng` (or `make setup`)"
        ) from None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) <= 0:
        raise RuntimeError("libespeak-ng failed to initialise (is espeak-ng-data installed?)")
    return lib


_current_voice: list[str] = [""]


def voice_for(lang: str, voices: dict[str, str] | None = None) -> str:
    """The espeak-ng voice of ``lang``: the caller's choice (``--voice``), else DEFAULT_VOICES, else the code."""
    return (voices or {}).get(lang) or DEFAULT_VOICES.get(lang) or lang.split("-")[0].lower()


def _set_voice(voice: str) -> None:
    if _current_voice[0] == voice:
        return
    if _library().espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r}")
    _current_voice[0] = voice


def check_voice_lib(voice: str) -> None:
    """Raise ValueError naming the voice if libespeak-ng does not have it."""
    with _LOCK:
        _set_voice(voice)


def phonemize_lib(text: str, voice: str) -> list[str]:
    """Phone tokens of ``text`` in ``voice``, or G2PError with the reason (``espeak.clean_ipa``'s)."""
    with _LOCK:
        _set_voice(voice)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        clauses: list[str] = []
        while ptr.value:
            out = _library().espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _IPA_WITH_UNDERSCORES)
            if out is None:
                raise G2PError(ESPEAK_FAILED, f"libespeak-ng returned nothing for {text!r}")
            clauses.append(out.decode("utf-8", errors="replace"))
    return clean_ipa("\n".join(clauses))


def foreign_words(text: str, voice: str) -> list[str]:
    """The words of ``text`` that espeak-ng's ``voice`` reads in another language (a language switch), found by
    phonemizing each word alone; called only for a sentence that switched, so the cost is paid on failures."""
    found = []
    for word in dict.fromkeys(text.split()):  # each distinct word once, in order
        try:
            phonemize_lib(word, voice)
        except G2PError as e:
            if e.reason == LANGUAGE_SWITCH:
                found.append(word)
    return found
