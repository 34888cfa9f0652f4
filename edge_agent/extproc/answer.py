"""What happens to a provider's answer once it is in the client's schema: it is read
whole when someone needs it (a buffered JSON body, or an SSE stream reassembled), its
usage metered, and, when the request is cacheable and the answer complete, stored in
every cache tier. Sans-IO; one per request, owned by its `Exchange`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from edge_agent.api.schema import Assembler
from edge_agent.extproc.decisions import EVENT_STREAM, JSON, BodyMode
from edge_agent.extproc.provider_call import ProviderCall

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.extproc.exchange import Exchange


class AnswerKeeper:
    """Capture → meter → store."""

    __slots__ = ("_assembler", "_capture_bytes", "_captured", "ex", "metered")

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self._assembler: Assembler | None = None
        self._captured: list[bytes] | None = None
        self._capture_bytes = 0
        self.metered = False  # usage already counted by a call or the upstream filter

    @property
    def capturing(self) -> bool:
        return self._assembler is not None or self._captured is not None

    @property
    def assembling(self) -> bool:
        return self._assembler is not None

    def whole(self, chunk: bytes) -> bytes:
        """The buffered JSON answer so far, with its last chunk."""
        return b"".join(self._captured) + chunk if self._captured else chunk

    def mode(self, headers: Mapping[str, str]) -> BodyMode | None:
        ex = self.ex
        if headers.get("content-encoding", "identity").lower() != "identity":
            self.count_store("encoded")
            return None
        content_type = headers.get("content-type", "")
        if content_type.startswith(EVENT_STREAM):
            assert ex.endpoint is not None
            self._assembler = ex.schema.assembler(ex.endpoint)
            return BodyMode.STREAMED if self._assembler is not None else None
        if not content_type.startswith(JSON):
            return None
        length = headers.get("content-length")
        self._captured = []
        if length is not None and length.isascii() and length.isdigit():
            if int(length) > ex.agent.max_entry_bytes:
                self.count_store("too_large")
                self._captured = None
                return None
            return BodyMode.BUFFERED  # one message for the whole body
        return BodyMode.STREAMED  # chunked JSON: collect chunks, give up past the size limit

    def feed(self, chunk: bytes, end_of_stream: bool) -> None:
        ex = self.ex
        if self._assembler is not None:
            self._capture_bytes += len(chunk)
            if self._capture_bytes > ex.agent.max_entry_bytes:
                self._assembler = None
                self.count_store("too_large")
                self.count_usage(None)  # no longer read: its usage stays unknown
                ex.done = True  # the rest of the stream is of no use: let it flow
            else:
                self._assembler.feed(chunk)
                if end_of_stream:
                    self._store_stream()
        elif self._captured is not None:
            self._capture_bytes += len(chunk)
            if self._capture_bytes > ex.agent.max_entry_bytes:
                self._captured = None
                self.count_store("too_large")
                ex.done = True
            else:
                self._captured.append(chunk)
                if end_of_stream:
                    self._store_json(b"".join(self._captured))

    def _store_stream(self) -> None:
        ex = self.ex
        assembler, self._assembler = self._assembler, None
        assert assembler is not None
        result = assembler.result()
        if not self.metered:
            usage = result.get("usage") if result is not None else None
            self.count_usage(ex.schema.usage(usage))
        if result is None:
            self.count_store("incomplete")
            return
        self._put(orjson.dumps(result))

    def _store_json(self, body: bytes) -> None:
        ex = self.ex
        self._captured = None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.count_store("invalid")
            return
        assert ex.endpoint is not None
        if not ex.schema.is_complete(ex.endpoint, parsed):
            self.count_store("incomplete")
            return
        self._put(body)

    def _put(self, body: bytes) -> None:
        ex = self.ex
        pending = ex.semantic_pending
        # The cross-process lease is released once the shared tier has the entry (other
        # processes' waiters then find it); with the put deferred, so is the release.
        lease, ex.lease = (ex.lease, False) if pending is not None else (False, ex.lease)
        ex.land(body)
        agent = ex.agent
        assert ex.key is not None
        stored = True
        if agent.cache is not None:
            stored = agent.cache.put(ex.key, body, model=ex.model, tenant=ex.caller.tenant)
        self.count_store("stored" if stored else "too_large")
        if pending is not None:
            # The semantic lookup runs beside the request (shadow mode) and its result is
            # not in yet: its vector is what the semantic and shared tiers store. (A task
            # already done runs this after its own landing callback, added first.)
            purges = _purges(agent)
            pending.add_done_callback(
                lambda _: self._put_shared(body, stored, lease, _purges(agent) != purges)
            )
        else:
            self._put_shared(body, stored)

    def _put_shared(
        self, body: bytes, stored: bool, lease: bool = False, purged: bool = False
    ) -> None:
        """The semantic tier (with the lookup's vector) and the shared tier; then the
        lease, when this call holds it. `purged`: a purge ran while the put waited for
        the lookup, and the answer must not come back through these tiers."""
        ex = self.ex
        agent = ex.agent
        assert ex.key is not None
        sem = ex.semantic
        shared_vector = None
        if (
            not purged
            and agent.semantic is not None
            and ex.scope is not None
            and sem is not None
            and sem.vector is not None
            and len(body) <= agent.max_entry_bytes
        ):
            # The vector computed for the lookup is reused: no second embedding.
            agent.semantic.store(
                ex.scope[0],
                ex.scope[1],
                sem.vector,
                sem.signature,
                body,
                model=ex.model,
                key=ex.key,
                tenant=ex.caller.tenant,
            )
            shared_vector = (agent.semantic.namespace, *ex.scope, sem.vector)
        if agent.shared is not None and stored and not purged:
            agent.shared.put(
                ex.key,
                body,
                model=ex.model,
                endpoint=str(ex.endpoint),
                tenant=ex.caller.tenant,
                semantic=shared_vector,
            )
        if lease:
            assert agent.shared is not None
            agent.shared.release_lease(ex.key)  # queued behind the put (redis_tier.py)

    def count_store(self, outcome: str) -> None:
        ex = self.ex
        if outcome != "stored":
            ex.land(None)
        ex.agent.metrics.cache_stores.labels(str(ex.endpoint), outcome).inc()

    def count_usage(self, usage: object) -> None:
        ex = self.ex
        if ex.target is None or self.metered:
            return
        call = ex.call
        if call is None:
            assert ex.request is not None
            call = ProviderCall(ex.agent, ex.target, ex.request, ex.model, ex.tenant_label)
        ex.used = call.count_usage(usage)


def _purges(agent: Agent) -> int:
    """Purges of the local tiers so far: a deferred store skips an answer purged since."""
    exact = agent.cache.purges if agent.cache is not None else 0
    return exact + (agent.semantic.purges if agent.semantic is not None else 0)
