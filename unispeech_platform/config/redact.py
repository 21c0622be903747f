"""Secrets never leave the process through what we log: resolved configs (MLflow params, resolved.yaml, sweep and
experiment artifacts), printed URIs and error messages are redacted here first.

Redacted: the userinfo of any URI (``https://user:password@host`` -> ``https://***@host``), the value of every
credential-like query parameter of a URI (a name containing key, secret, token, password, passwd or credential,
``sig``/``signature``, and every ``X-Amz-*``, e.g. ``s3://b/c?access_key=...&secret_key=...`` or a presigned URL's
``X-Amz-Signature``), the value of every key
whose name has a credential-like part (SECRET, PASSWORD, PASSWD, TOKEN, KEY, CREDENTIALS, e.g.
``AWS_SECRET_ACCESS_KEY``, ``api_key``), and every value under ``env_vars`` (a runtime_env's environment is where
clusters put credentials). The job itself keeps using the real values.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
SECRET_PARTS = frozenset({"SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "CREDENTIALS", "CREDENTIAL"})
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:[^=&;#\s'\"]*(?:key|secret|token|passw(?:or)?d|credential)[^=&;#\s'\"]*"
    r"|sig|signature|x-amz-[^=&;#\s'\"]+))=(?P<value>[^&;#\s'\"]*?)(?=[&;#\s'\"]|:\s|:$|$)",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """Every ``scheme://userinfo@`` in ``text`` with the userinfo replaced, and the value of every
    credential-like query parameter (``?secret_key=...``, ``&X-Amz-Signature=...``) with ``***``. Applied to
    whole messages, not only to URIs: one error line or traceback may quote several."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('name')}={REDACTED}" if m.group("value") else m.group(0), text)


def strip_userinfo(uri: str) -> str:
    """The URI without its credentials (for clients, such as urllib, that cannot take them in the URL)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), uri)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_PARTS & set(re.split(r"[_.\-\s]+", key.upper())))


def redact_config(data: Any, *, under_env_vars: bool = False) -> Any:
    """A copy of a config dump (dicts, lists, scalars) with secrets replaced by ``***``."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            key = str(k)
            if (under_env_vars or is_secret_key(key)) and not isinstance(v, dict | list):
                out[k] = REDACTED if v not in (None, "") else v
            else:
                out[k] = redact_config(v, under_env_vars=under_env_vars or key == "env_vars")
        return out
    if isinstance(data, list):
        return [redact_config(v, under_env_vars=under_env_vars) for v in data]
    if isinstance(data, str):
        return redact_uri(data)
    return data
