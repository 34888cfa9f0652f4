"""The notes a chained request's downstream Exchange and its upstream Attempts share."""

from __future__ import annotations

import itertools
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

#: Request header naming a chained request's AttemptLog entry (set by the Exchange).
ATTEMPT_KEY_HEADER = "x-edge-agent-attempt"
#: Envoy's count of attempts (the virtual host sets include_attempt_count_in_response).
ATTEMPT_COUNT_HEADER = "x-envoy-attempt-count"


@dataclass(slots=True)
class _Chained:
    path: str  # the client's path and query: attempts after the first see a provider's
    query: str
    tenant: str  # the caller's tenant label, for the attempt's usage metrics
    traceparent: str | None = None  # the request's span, parent of the attempts' spans
    states: dict[str, str] = field(default_factory=dict)  # target → started/answered/refused


class AttemptLog:
    """What the downstream Exchange and the attempts of one chained request share.

    Keyed by a nonce the Exchange puts in ATTEMPT_KEY_HEADER (not x-request-id, which
    clients can set). Attempts learn the client's path here (Envoy keeps an earlier
    attempt's `:path` for the next one) and note how each went; the Exchange reads the
    notes once the final answer arrives. Bounded: requests that never finish cannot make
    it grow.
    """

    def __init__(self, max_requests: int = 10_000) -> None:
        self._requests: OrderedDict[str, _Chained] = OrderedDict()
        # The answering attempt's usage (input, output tokens, USD), for the request's
        # limits settlement; it may arrive after `finish` (a stream's usage comes last).
        self._usage: OrderedDict[str, tuple[int, int, float]] = OrderedDict()
        self._max = max_requests
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-{secrets.token_hex(4)}-"

    def begin(self, path: str, query: str, tenant: str, traceparent: str | None = None) -> str:
        key = f"{self._prefix}{next(self._ids)}"
        self._requests[key] = _Chained(path, query, tenant, traceparent)
        if len(self._requests) > self._max:
            self._requests.popitem(last=False)
        return key

    def get(self, key: str) -> _Chained | None:
        return self._requests.get(key)

    def note(self, key: str, target: str, state: str) -> None:
        chained = self._requests.get(key)
        if chained is not None:
            chained.states[target] = state

    def record_usage(self, key: str, used: tuple[int, int, float]) -> None:
        if key:
            self._usage[key] = used
            if len(self._usage) > self._max:
                self._usage.popitem(last=False)

    def take_usage(self, key: str) -> tuple[int, int, float] | None:
        return self._usage.pop(key, None)

    def finish(self, key: str) -> dict[str, str]:
        chained = self._requests.pop(key, None)
        return chained.states if chained is not None else {}
