"""``http``: a remote judge. POST the batch as JSON, read back one float (or null) per completion.

Request (``Content-Type: application/json``), ``batch_size`` items per request
(default: the whole batch), up to ``concurrency`` requests in flight::

    {"items": [{"prompt": "...", "completion": "...", "metadata": {...}}, ...]}

Response: a JSON list of numbers/nulls, or ``{"scores": [...]}``, one per item.
A request that times out (``request_timeout_s``), fails to connect, or gets HTTP
429/5xx is retried ``retries`` times with exponential backoff (``backoff_s``,
doubled each time; a numeric ``Retry-After`` is honoured up to 30 s); after that,
and at once for other 4xx answers or a malformed response, its items are null.

The API key, if any, is read from the environment variable named by
``api_key_env`` at request time and sent as ``<auth_header>: <auth_scheme> <key>``;
it is never logged, and never part of an error message.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mixgrpo.rewards.channels.base import ScoringInput, pop_options, register

logger = logging.getLogger("mixgrpo.reward.http")

_DEFAULTS = {
    "url": None, "request_timeout_s": 30.0, "retries": 2, "backoff_s": 0.5, "batch_size": None, "concurrency": 4,
    "api_key_env": None, "auth_header": "Authorization", "auth_scheme": "Bearer", "include_metadata": True,
    "headers": {},
}
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class RequestFailed(Exception):
    """A request that will not succeed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, retry: bool, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.retry, self.wait_s = retry, wait_s


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None  # images and other blobs do not travel to a judge
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _parse_scores(body: bytes, expected: int) -> list[float | None]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise RequestFailed("response is not JSON", retry=False) from None
    scores = payload.get("scores") if isinstance(payload, dict) else payload
    if not isinstance(scores, list) or len(scores) != expected:
        got = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise RequestFailed(f"response has {got} scores for {expected} items", retry=False)
    return [float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None for s in scores]


class HttpChannel:
    """Scores a batch with a remote judge (see the module docstring)."""

    def __init__(self, options: dict[str, Any]) -> None:
        opts = pop_options(options, "http", _DEFAULTS)
        url = str(opts["url"] or "")
        if not url.startswith(("http://", "https://")):
            raise ValueError("channel kind 'http' needs options.url = 'http(s)://...'")
        if float(opts["request_timeout_s"]) <= 0 or int(opts["retries"]) < 0 or float(opts["backoff_s"]) < 0:
            raise ValueError("channel kind 'http': request_timeout_s > 0, retries >= 0, backoff_s >= 0")
        if int(opts["concurrency"]) < 1 or (opts["batch_size"] is not None and int(opts["batch_size"]) < 1):
            raise ValueError("channel kind 'http': concurrency >= 1 and batch_size >= 1 (or none)")
        if not isinstance(opts["headers"], dict):
            raise ValueError("channel kind 'http': options.headers must be a mapping")
        self.opts, self.url = opts, url
        self._logged: set[str] = set()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in self.opts["headers"].items()}}
        env = self.opts["api_key_env"]
        if env:
            key = os.environ.get(env)
            if not key:
                raise ValueError(f"environment variable {env} (options.api_key_env) is not set")
            headers[self.opts["auth_header"]] = f"{self.opts['auth_scheme']} {key}".strip()
        return headers

    def _post_once(self, body: bytes, headers: dict[str, str], expected: int) -> list[float | None]:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=float(self.opts["request_timeout_s"])) as response:
                return _parse_scores(response.read(), expected)
        except urllib.error.HTTPError as error:
            retry_after = error.headers.get("Retry-After") if error.headers else None
            wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
            raise RequestFailed(f"HTTP {error.code}", error.code in _RETRYABLE_STATUS, wait) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise RequestFailed(f"{type(reason).__name__}: {reason}", retry=True) from None

    def _post(self, items: list[dict[str, Any]], headers: dict[str, str]) -> list[float | None]:
        body = json.dumps({"items": items}, default=_json_default).encode("utf-8")
        attempts = int(self.opts["retries"]) + 1
        for attempt in range(attempts):
            try:
                return self._post_once(body, headers, len(items))
            except RequestFailed as failure:
                if not failure.retry or attempt == attempts - 1:
                    self._log_once(str(failure), attempt + 1)
                    return [None] * len(items)
                delay = float(self.opts["backoff_s"]) * 2 ** attempt
                time.sleep(max(delay, min(failure.wait_s or 0.0, 30.0)))
        return [None] * len(items)

    def _log_once(self, message: str, tries: int) -> None:
        kind = message.split(":")[0]
        if kind not in self._logged:  # the URL is the user's; headers (the key) never appear here
            self._logged.add(kind)
            logger.warning("http judge %s: %s after %d tries; its items are null", self.url, message, tries)

    def __call__(self, batch: ScoringInput) -> list[float | None]:
        headers = self._headers()
        with_metadata = bool(self.opts["include_metadata"])
        items = [{"prompt": p, "completion": c, **({"metadata": md} if with_metadata else {})}
                 for p, c, md in zip(batch.prompts, batch.completions, batch.metadata)]
        size = int(self.opts["batch_size"] or max(1, len(items)))
        chunks = [items[s:s + size] for s in range(0, len(items), size)]
        workers = max(1, min(int(self.opts["concurrency"]), len(chunks)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda chunk: self._post(chunk, headers), chunks))
        return [value for part in parts for value in part]


@register("http")
def http_channel(options: dict[str, Any]) -> HttpChannel:
    """Remote-judge channel (options: url, api_key_env, batch_size, concurrency, request_timeout_s, retries, ...)."""
    return HttpChannel(options)

