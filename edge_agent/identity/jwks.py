"""Fetching issuers' key sets (JWKS) for the JWT verifier: the I/O side of
`edge_agent.identity.jwt`.

`warm()` loads every issuer's keys at start (an IdP that is down is logged, not fatal: its
tokens are refused until a later fetch works). `refresh(issuer)` is what a `NeedKeys`
asks for; concurrent callers share one fetch, and the verifier's rate limit decides
whether a fetch happens at all. `run()` refreshes keys as they come due, in the
background.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from edge_agent.identity.jwt import (
    MAX_JWKS_BYTES,
    JwksError,
    JwtIssuer,
    JwtVerifier,
    NeedKeys,
    Refused,
    Verified,
)
from edge_agent.identity.settings import FETCH_TIMEOUT_S

log = logging.getLogger("edge_agent.identity.jwks")

_MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)


class _FetchError(Exception):
    """Why a key set could not be read; the message is for the operator's log."""


def _where(config: JwtIssuer) -> str:
    """Where the keys come from, fit for a log: no credentials, query or fragment."""
    if config.jwks_url is None:
        return str(config.jwks_file)
    parts = urlsplit(config.jwks_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _max_age(cache_control: str | None) -> float | None:
    match = _MAX_AGE.search(cache_control or "")
    return float(match.group(1)) if match else None


class JwksFetcher:
    """Fetches JWKS documents (aiohttp, or a file) into a `JwtVerifier`."""

    def __init__(
        self,
        verifier: JwtVerifier,
        *,
        timeout_s: float = FETCH_TIMEOUT_S,
        max_bytes: int = MAX_JWKS_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._inflight: dict[str, asyncio.Task[str | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    # -- what the agent calls --------------------------------------------------------------

    async def warm(self) -> None:
        """Load every JWKS issuer's keys; failures are logged and retried later."""
        names = [c.issuer for c in self.verifier.issuers if c.uses_jwks]
        await asyncio.gather(*(self.refresh(n, force=True) for n in names))

    async def refresh(self, issuer: str, *, force: bool = False) -> str | None:
        """Fetch and load the issuer's keys, or join the fetch under way. None when keys
        were loaded; otherwise why not (also when the rate limit allowed no fetch)."""
        config = self.verifier.issuer(issuer)
        if config is None or not config.uses_jwks:
            return "no JWKS is configured for this issuer"
        task = self._inflight.get(issuer)
        if task is None:
            if not self.verifier.refreshing(issuer, self._clock(), force=force):
                return f"keys were fetched less than {config.min_refresh_interval_s:g} s ago"
            task = asyncio.create_task(self._fetch_and_load(config))
            self._inflight[issuer] = task
            task.add_done_callback(lambda t: self._forget(issuer, t))
        # Shielded: a request that gives up must not cancel the fetch others wait for.
        return await asyncio.shield(task)

    async def check(self, token: str) -> Verified | Refused:
        """Check a token, fetching keys once when the verifier asks for them."""
        result = self.verifier.check(token, self._clock())
        if isinstance(result, NeedKeys):
            await self.refresh(result.issuer)
            result = self.verifier.check(token, self._clock())
            if isinstance(result, NeedKeys):
                return Refused.because("keys_unavailable")
        return result

    async def refresh_due(self) -> None:
        """Refresh the issuers whose keys are due (periodic refresh, failed loads)."""
        due = self.verifier.due(self._clock())
        await asyncio.gather(*(self.refresh(name) for name in due))

    async def run(self) -> None:
        """Keep keys fresh until cancelled (run it as a background task)."""
        while True:
            await self.refresh_due()
            next_at = self.verifier.next_due()
            if next_at is None:
                return
            await asyncio.sleep(min(max(next_at - self._clock(), 1.0), 60.0))

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    # -- plumbing --------------------------------------------------------------------------

    def _forget(self, issuer: str, task: asyncio.Task[str | None]) -> None:
        if self._inflight.get(issuer) is task:
            del self._inflight[issuer]

    async def _fetch_and_load(self, config: JwtIssuer) -> str | None:
        where = _where(config)
        reason: str | None = None
        skipped: list[str] = []
        try:
            if config.jwks_url is not None:
                body, max_age = await self._get(config.jwks_url)
            else:
                assert config.jwks_file is not None
                body = await asyncio.to_thread(self._read_file, config.jwks_file)
                max_age = None
            skipped = self.verifier.load_keys(config.issuer, body, self._clock(), max_age_s=max_age)
        except (_FetchError, JwksError) as exc:
            reason = str(exc)
        except Exception as exc:
            reason = f"unexpected {type(exc).__name__}"
        except BaseException:
            # Cancelled: the verifier must not wait for this fetch any longer.
            self.verifier.load_failed(config.issuer, self._clock())
            raise
        if reason is not None:
            self.verifier.load_failed(config.issuer, self._clock())
            if self.verifier.has_keys(config.issuer):
                outcome = "keeping its previous keys"
            else:
                outcome = "its tokens are refused until its keys load"
            log.warning("JWKS for issuer %r from %s: %s; %s", config.issuer, where, reason, outcome)
            return reason
        if skipped:
            log.warning(
                "JWKS for issuer %r from %s: skipped %s", config.issuer, where, "; ".join(skipped)
            )
        log.info("JWKS for issuer %r loaded from %s", config.issuer, where)
        return None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running loop, which __init__ may lack.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Accept": "application/json, application/jwk-set+json"},
            )
            self._session_loop = loop
        return self._session

    async def _get(self, url: str) -> tuple[bytes, float | None]:
        try:
            async with self._client().get(url, max_redirects=_MAX_REDIRECTS) as response:
                if response.status != 200:
                    raise _FetchError(f"HTTP {response.status}")
                length = response.content_length
                if length is not None and length > self.max_bytes:
                    raise _FetchError(f"the JWKS is larger than {self.max_bytes} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise _FetchError(f"the JWKS is larger than {self.max_bytes} bytes")
                return bytes(body), _max_age(response.headers.get("Cache-Control"))
        except TimeoutError:
            raise _FetchError(f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise _FetchError(f"cannot connect to {exc.host}:{exc.port}") from None
        except aiohttp.TooManyRedirects:
            raise _FetchError(f"more than {_MAX_REDIRECTS} redirects") from None
        except aiohttp.ClientError as exc:
            # The type only: some errors' text repeats the URL, query string included.
            raise _FetchError(f"request failed ({type(exc).__name__})") from None

    def _read_file(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read(self.max_bytes + 1)
        except OSError as exc:
            raise _FetchError(
                f"cannot read the file ({exc.strerror or type(exc).__name__})"
            ) from None
        if len(data) > self.max_bytes:
            raise _FetchError(f"the JWKS is larger than {self.max_bytes} bytes")
        return data
