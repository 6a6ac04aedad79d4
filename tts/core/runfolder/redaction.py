"""Secrets never reach a run folder: secret-looking keys, URL credentials and known secret values are redacted."""
from __future__ import annotations

import os
import re

#: Names that hold secrets: ``api_key``, ``hf_token`` (but not ``max_new_tokens``), ``password``, ...
_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|authorization|credential|(^|_)token$)", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
REDACTED = "***redacted***"



def redact_url(text: str) -> str:
    """``scheme://user:KEY@host`` -> ``scheme://***redacted***@host``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def redact(obj, secrets: tuple[str, ...] = ()):
    """A copy of a JSON-like config with secret-looking keys, URL credentials and known secret values replaced."""
    if isinstance(obj, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return REDACTED if any(s and s in obj for s in secrets) else redact_url(obj)
    return obj


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def env_secrets() -> tuple[str, ...]:
    """Values of environment variables whose names look secret (never written anywhere)."""
    return tuple(v for k, v in os.environ.items() if _SECRET_KEY.search(k) and len(v) >= 8)

