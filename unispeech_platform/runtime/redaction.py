"""One redaction for everything a job's process prints: log records, warnings, one-line errors and the tracebacks
of errors no job catches. The rule itself (URI user-info, credential-like query parameters) is
``config.redact.redact_uri``; this module applies it at the three exits text has from a Python process, so that a
credential a user put in ``data.path`` or ``tracking.uri`` cannot leave through an error path nobody thought of.

Why hooks rather than redacting at each call site: the secret usually reaches the text through a library's own
exception message (pyarrow naming the URI it failed to open, pydantic quoting the input value), which no call site
formats. The job itself keeps using the real values.
"""

from __future__ import annotations

import logging
import sys
import traceback
import warnings

from unispeech_platform.config.redact import redact_uri

_installed = False


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record's message (with its arguments merged in) and exception text passed through redact_uri; the
    formatter uses a preset ``exc_text`` instead of formatting ``exc_info`` again."""
    message = record.getMessage()
    redacted = redact_uri(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact_uri("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    return record


class RedactingStream:
    """sys.stdout/sys.stderr with every write passed through redact_uri (a job's own ``print`` of an error, a
    library's progress line); everything else (isatty, fileno, encoding, flush) is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_uri(text))
        return len(text)  # what the caller handed over, as TextIOBase.write reports

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def install_redaction() -> None:
    """Once per process: standard output and error, every log record (logging's record factory, so every logger
    and handler, whichever stream it holds), warnings and uncaught exceptions print redacted text."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
    make_record = logging.getLogRecordFactory()
    logging.setLogRecordFactory(lambda *args, **kwargs: _redact_record(make_record(*args, **kwargs)))
    original_format = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None) -> str:
        return redact_uri(original_format(message, category, filename, lineno, line))

    warnings.formatwarning = formatwarning

    def excepthook(kind, value, tb) -> None:
        sys.stderr.write(redact_uri("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = excepthook
