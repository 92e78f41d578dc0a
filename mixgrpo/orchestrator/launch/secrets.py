"""The launch's secrets: RUNPOD_API_KEY and HF_TOKEN, read from the environment or a ``.env`` file.

Neither is ever printed, logged, written into the run directory or put on a
command line: the API key goes only into the SDK's HTTP header, the HF token
only into the pod's environment in the create request. ``Redactor`` scrubs both
from every message the launcher shows (SDK errors echo queries).
"""

from __future__ import annotations

import os
from pathlib import Path
from mixgrpo.errors import InputError

API_KEY = "RUNPOD_API_KEY"
HF_TOKEN = "HF_TOKEN"
REDACTED = "<redacted>"


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a .env file (``export`` prefix, quotes and comments allowed); {} when missing."""
    if not path.is_file():
        return {}
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def lookup(name: str, dotenv: Path | None = None) -> str | None:
    """The secret ``name`` from the environment, else from ``dotenv`` (default ./.env); None when unset or empty."""
    value = os.environ.get(name) or read_dotenv(dotenv or Path(".env")).get(name)
    return value or None


def require_api_key(dotenv: Path | None = None) -> str:
    """RUNPOD_API_KEY, or a ValueError that says where to put it (never what it is)."""
    key = lookup(API_KEY, dotenv)
    if not key:
        raise InputError(f"{API_KEY} is not set: export it, or put {API_KEY}=... in a .env file here "
                         "(https://www.runpod.io/console/user/settings -> API Keys)")
    return key


def check_env_value(name: str, value: str) -> None:
    """Pod env values travel inside a GraphQL string literal: refuse the characters that would break out of it."""
    if any(c in value for c in '"\\\n\r'):
        raise InputError(f"{name} contains a quote, backslash or newline; it cannot be passed to the pod")


class Redactor:
    """Replaces every known secret value in a text by <redacted>."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text
