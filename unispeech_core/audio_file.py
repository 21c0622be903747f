"""The one reader of an audio file whose path comes from data (a manifest row, a Kaldi wav.scp, an HF row's
``path``, a transcription input, a path sent to the served MLflow model): third-party data is hostile until read.
The platform imports it as ``unispeech_platform.data.audio_file``.

Regular files only: a FIFO would block the import forever, ``/dev/zero`` or ``/dev/urandom`` would read until the
machine runs out of memory, a directory reads as an error deep in a decoder. The file is opened non-blocking (so
opening a FIFO returns at once), checked with fstat on the open descriptor (no race with a path swapped between a
check and the read), and read up to a size cap within a deadline; anything else fails that row with a reason, never
the whole job. The deadline is checked between 1 MiB reads: a file served slower than the deadline allows (a stalled
network mount) fails its row; a single read() the kernel never returns from is not interrupted.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

MAX_AUDIO_BYTES = 512 * 1024 * 1024
"""Default cap of one audio file (512 MiB: ~4.5 h of 16 kHz 16-bit WAV); larger files are refused, not read."""

READ_TIMEOUT_S = 120.0
"""Default deadline of one audio file's read (a local 512 MiB file reads in about a second)."""
_CHUNK = 1 << 20

NOT_A_FILE = "not_a_regular_file"
TOO_LARGE = "audio_file_too_large"
TIMED_OUT = "audio_read_timeout"
UNREADABLE = "missing_audio_file"
"""Reasons of a refused read (the last is the importers' existing code for a file that cannot be opened)."""


@dataclass(frozen=True)
class AudioLimits:
    """The cap and the deadline of one audio file's read (``jobs.import_dataset --max-audio-mb
    --audio-read-timeout``): small enough to ship with every chunk of rows a worker converts."""

    max_bytes: int = MAX_AUDIO_BYTES
    timeout_s: float = READ_TIMEOUT_S


class AudioFileError(OSError):
    """An audio path that is not read: ``reason`` (a report code) and a one-line ``detail`` naming the path."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_audio_file(path: str | os.PathLike, max_bytes: int = MAX_AUDIO_BYTES,
                    timeout_s: float = READ_TIMEOUT_S) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``max_bytes``, read within
    ``timeout_s`` seconds; AudioFileError otherwise, before any blocking read."""
    deadline = time.monotonic() + timeout_s
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise AudioFileError(UNREADABLE, f"{path}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AudioFileError(NOT_A_FILE, f"{path}: {_kind(info.st_mode)}, not an audio file: not read")
        if info.st_size > max_bytes:
            raise AudioFileError(TOO_LARGE, f"{path}: {info.st_size} bytes > the {max_bytes}-byte cap: not read")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise AudioFileError(TOO_LARGE, f"{path}: more than the {max_bytes}-byte cap: not read")
            if time.monotonic() > deadline and total < info.st_size:
                raise AudioFileError(TIMED_OUT, f"{path}: {total} of {info.st_size} bytes read in the "
                                                f"{timeout_s:g}-second deadline: not read")
        return b"".join(chunks)
    except AudioFileError:
        raise
    except OSError as e:
        raise AudioFileError(UNREADABLE, f"{path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
