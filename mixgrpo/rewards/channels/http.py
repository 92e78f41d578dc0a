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

from pydantic import Field

from mixgrpo.rewards.channels.base import ChannelOptions, ScoringInput, register

logger = logging.getLogger("mixgrpo.reward.http")


class HttpOptions(ChannelOptions):
    url: str = Field(pattern=r"^https?://")
    """The judge's endpoint, http(s)://..."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds one request may take before it is retried."""
    retries: int = Field(default=2, ge=0)
    """Retries of a request that timed out, failed to connect or got HTTP 429/5xx."""
    backoff_s: float = Field(default=0.5, ge=0)
    """Wait before the first retry, doubled each time (a numeric Retry-After is honoured up to 30 s)."""
    batch_size: int | None = Field(default=None, ge=1)
    """Items per request (None: the whole batch in one request)."""
    concurrency: int = Field(default=4, ge=1)
    """Requests in flight at once."""
    api_key_env: str | None = None
    """Environment variable holding the API key (read at request time, never logged)."""
    auth_header: str = "Authorization"
    """Header the key is sent in."""
    auth_scheme: str = "Bearer"
    """Prefix of the key in that header ("" for none)."""
    include_metadata: bool = True
    """Send each prompt's metadata with its items."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers."""

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

    def __init__(self, options: HttpOptions) -> None:
        self.opts, self.url = options, options.url
        self._logged: set[str] = set()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.opts.headers}
        env = self.opts.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise ValueError(f"environment variable {env} (options.api_key_env) is not set")
            headers[self.opts.auth_header] = f"{self.opts.auth_scheme} {key}".strip()
        return headers

    def _post_once(self, body: bytes, headers: dict[str, str], expected: int) -> list[float | None]:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.opts.request_timeout_s) as response:
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
        attempts = self.opts.retries + 1
        for attempt in range(attempts):
            try:
                return self._post_once(body, headers, len(items))
            except RequestFailed as failure:
                if not failure.retry or attempt == attempts - 1:
                    self._log_once(str(failure), attempt + 1)
                    return [None] * len(items)
                delay = self.opts.backoff_s * 2 ** attempt
                time.sleep(max(delay, min(failure.wait_s or 0.0, 30.0)))
        return [None] * len(items)

    def _log_once(self, message: str, tries: int) -> None:
        kind = message.split(":")[0]
        if kind not in self._logged:  # the URL is the user's; headers (the key) never appear here
            self._logged.add(kind)
            logger.warning("http judge %s: %s after %d tries; its items are null", self.url, message, tries)

    def __call__(self, batch: ScoringInput) -> list[float | None]:
        headers = self._headers()
        with_metadata = self.opts.include_metadata
        items = [{"prompt": p, "completion": c, **({"metadata": md} if with_metadata else {})}
                 for p, c, md in zip(batch.prompts, batch.completions, batch.metadata)]
        size = self.opts.batch_size or max(1, len(items))
        chunks = [items[s:s + size] for s in range(0, len(items), size)]
        workers = max(1, min(self.opts.concurrency, len(chunks)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda chunk: self._post(chunk, headers), chunks))
        return [value for part in parts for value in part]


@register("http", HttpOptions)
def http_channel(options: HttpOptions) -> HttpChannel:
    """Remote-judge channel: POST the batch, one score (or null) back per completion."""
    return HttpChannel(options)
