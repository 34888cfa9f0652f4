"""What the fake providers share: an aiohttp server's lifecycle, request recording, failure
injection, and a runner that serves a fake from a daemon thread for synchronous code.

The demo upstream (:mod:`edge_agent.demo.upstream`) and the test fakes of other providers'
wire formats build on :class:`FakeServer` and :class:`ServerThread`; what each provider says on
the wire (paths, headers, error bodies, streams) stays with the fake that speaks it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import orjson
from aiohttp import web

__all__ = [
    "Failure",
    "FakeServer",
    "RecordedRequest",
    "ServerThread",
    "read_body",
]


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake received it (header names lower-cased, repeats joined)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True, frozen=True)
class Failure:
    """An injected error answer (see :meth:`FakeServer.fail_next`)."""

    status: int
    body: bytes | None
    headers: Mapping[str, str] | None
    # The provider's name for the error, where its wire format carries one apart from the body
    # (Bedrock's x-amzn-errortype); None: the default for the status.
    error_type: str | None = None

    @classmethod
    def build(
        cls,
        status: int,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Failure:
        """Checks the status; a mapping body becomes JSON, a str its UTF-8 bytes."""
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        if isinstance(body, str):
            body = body.encode()
        elif body is not None and not isinstance(body, bytes):
            body = orjson.dumps(dict(body))
        return cls(status, body, dict(headers) if headers else None, error_type)


async def read_body(request: web.BaseRequest, limit: int) -> tuple[bytes, bool]:
    """The body (up to ``limit`` bytes) and whether it went past it; always drains the rest."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        if size <= limit:
            chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit], size > limit


class FakeServer:
    """An HTTP server on aiohttp's low-level server (no router, no access log) for a fake.

    Subclasses answer in :meth:`_handle`. Shared here: ``url``, ``start``/``stop`` (and
    ``async with``), recording into :attr:`requests`, :meth:`fail_next` and :meth:`reset`.
    Attributes that tests may change at any time (also from another thread): ``delay_s``,
    ``stream_delay_s``, ``truncate_streams`` and ``record``; what each one does on the wire is
    up to the subclass.
    """

    def __init__(self, *, name: str, host: str, port: int, record: bool) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.record = record
        self.delay_s: float = 0.0
        self.stream_delay_s: float = 0.0
        self.truncate_streams = 0
        # Appends are atomic under the GIL, so other threads may read (or copy) the list.
        self.requests: list[RecordedRequest] = []
        self._failures: deque[Failure] = deque()
        # Stream breaks, for fakes that can cut a stream short in their own wire format.
        self._breaks: deque[Any] = deque()
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._runner: web.ServerRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, no path: ``http://host:port`` (IPv6 hosts in brackets)."""
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _describe(self) -> str:
        """Who this is, in messages: ``fake Anthropic 'name'`` for ``FakeAnthropic``."""
        return f"fake {type(self).__name__.removeprefix('Fake')} {self.name!r}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{self._describe()} is already running")
        # handler_cancellation: a client that gives up (timeout tests) must not leave a
        # sleeping handler behind that would hold up stop().
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raise NotImplementedError

    # -- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status``.

        The default body is the provider's error JSON for the status; a mapping is sent as
        JSON, bytes/str as they are. ``headers`` (e.g. ``retry-after``) are added to the answer.
        """
        self._push(self._failures, [Failure.build(status, body, headers)] * count)

    def reset(self) -> None:
        """Forget recorded requests, pending failures and stream breaks (not the delays)."""
        with self._lock:
            self._failures.clear()
            self._breaks.clear()
        self.requests.clear()
        self.truncate_streams = 0

    # -- plumbing --------------------------------------------------------------------------

    def _push(self, queue: deque[Any], items: Iterable[Any]) -> None:
        with self._lock:
            queue.extend(items)

    def _take(self, queue: deque[Any]) -> Any:
        with self._lock:
            return queue.popleft() if queue else None

    def _record(self, request: web.BaseRequest, body: bytes, path: str | None = None) -> None:
        """Keep the request in :attr:`requests` (if ``record``); ``path`` defaults to its path."""
        if not self.record:
            return
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path if path is None else path,
                request.query_string,
                headers,
                body,
            )
        )


class _Server(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


T = TypeVar("T", bound=_Server)


class ServerThread(Generic[T]):
    """Runs a server with async ``start()``/``stop()`` on its own event loop in a daemon thread.

    For synchronous tests, benchmarks and the CLI. ``server`` is the server itself or a
    callable that builds it; without it, keyword arguments go to the class's ``fake_class``
    (how the ``Fake*Thread`` subclasses are used). Either way the server is built up front, so
    that its attributes (delays, failures) can be set before :meth:`start`; it is :attr:`fake`.
    ``loop_factory``: e.g. ``uvloop.new_event_loop``. ``start()`` and ``with`` return the
    running server. The thread is named ``<thread_prefix>-<server name>``.
    """

    fake_class: ClassVar[Callable[..., Any] | None] = None
    thread_prefix: ClassVar[str] = "server"

    def __init__(
        self,
        server: T | Callable[[], T] | None = None,
        /,
        *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        **kwargs: Any,
    ) -> None:
        if server is None:
            if self.fake_class is None:
                raise TypeError(f"{type(self).__name__} needs a server or a factory for one")
            server = self.fake_class(**kwargs)
        elif kwargs:
            raise TypeError(f"unexpected keyword arguments: {', '.join(kwargs)}")
        is_server = not isinstance(server, type) and callable(getattr(server, "start", None))
        self.fake: T = server if is_server else server()  # type: ignore[operator,assignment]
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def thread_name(self) -> str:
        name = getattr(self.fake, "name", None)
        return self.thread_prefix if name is None else f"{self.thread_prefix}-{name}"

    def start(self, timeout: float = 10.0) -> T:
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = self._loop_factory()
        thread = threading.Thread(
            target=self._run, args=(loop,), name=self.thread_name, daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.fake.start(), loop).result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            raise
        self._loop, self._thread = loop, thread
        return self.fake

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Let cancelled handlers finish unwinding before the loop goes away.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __enter__(self) -> T:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
