"""A test-only response stage (docs/architecture.md, "How to add a stage"): replaces the
word "secret" in answers, in the client's schema, before the answer is stored.

Put in the pipeline by one line of config: `pipeline: {response: [tests.
example_response_stage:redact]}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge_agent.extproc.decisions import BodyMode

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange


class Redact:
    def headers(self, ex: Exchange, status: str, headers: Mapping[str, str]) -> BodyMode | None:
        # JSON whole (one chunk), a stream as it comes.
        if headers.get("content-type", "").startswith("text/event-stream"):
            return BodyMode.STREAMED
        return BodyMode.BUFFERED

    def body(self, ex: Exchange, chunk: bytes, end_of_stream: bool) -> bytes | None:
        return chunk.replace(b"secret", b"[gone]") if b"secret" in chunk else None


redact = Redact()
