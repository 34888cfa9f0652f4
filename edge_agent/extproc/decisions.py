"""What the sans-IO core answers for one ext_proc message: go on (with changes) or
answer the client now. The servicer turns these into ext_proc protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

JSON = "application/json"
EVENT_STREAM = "text/event-stream"


class BodyMode(enum.Enum):
    NONE = "none"
    BUFFERED = "buffered"
    STREAMED = "streamed"


@dataclass(slots=True)
class Continue:
    """Let the message through, with these changes."""

    set_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # replacement body; content-length is set with it
    chunk: bool = False  # `body` replaces one chunk of a streamed body: no content-length
    clear_route_cache: bool = False
    response_body_mode: BodyMode | None = None  # ask Envoy for the response body this way


@dataclass(slots=True)
class Respond:
    """Answer the client now; the provider is never contacted."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


Decision = Continue | Respond
CONTINUE = Continue()  # shared: decisions are never mutated after being returned
