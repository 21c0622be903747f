"""Names that become directory names (experiment, run, sweep, arm): exactly one safe path component.

A name is joined under a storage root (``<storage>/<name>``) and that directory may later be replaced, so a name
that climbs out (``..``), is absolute (``/``), nests (``a/b``) or is empty would point a delete at the wrong
directory. We allow a conservative character set rather than reject a list of bad ones: a name is also a Ray
Train run name, an MLflow run name and part of URIs (``s3://bucket/<name>``), where spaces, colons or control
characters cause trouble of their own.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_NAME_LENGTH = 128
"""Leaves room under the file system's 255-byte limit for the suffixes we add (-pretrain, _ctchead, .tmp)."""
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._+=@-]{{0,{MAX_NAME_LENGTH - 1}}}")
RULE = (f"a single directory name: letters, digits and . _ - + = @, starting with a letter, digit or _, "
        f"at most {MAX_NAME_LENGTH} characters (no '/', '\\', '..', '.', spaces or a leading '-')")


def check_name(value: str) -> str:
    """``value`` if it is one safe path component, else ValueError saying what a name may be."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"must be {RULE}")
    return value


SafeName = Annotated[str, AfterValidator(check_name)]
"""A config field holding such a name (pydantic reports the key and the value on error: exit 2)."""
