"""Cohere's native v2 Chat API (`POST /v2/chat`), not its OpenAI-compatibility endpoint.

The request mapping from the OpenAI chat format (the pivot) is close to one-to-one: v2 took
OpenAI's message roles, `tool_calls` and function-tool shapes. The differences handled here:

- `system`/`developer` messages are hoisted into one leading system message;
- assistant text that comes with tool calls travels as Cohere's `tool_plan` (the text the
  model says before calling tools), and a `tool_plan` comes back as the message content;
- `tool_choice` has only REQUIRED and NONE: a named function is forced only when it is the
  one tool offered (REQUIRED is then the same thing), otherwise refused;
- ranges are narrower: temperature and the penalties 0..1 (refused beyond), `p`
  0.01..0.99 (OpenAI's `top_p` edges are clamped: 1.0 and 0.99 keep the same tokens in
  practice);
- `n`, `logprobs` (Cohere returns token ids, not the token text OpenAI's format needs),
  `logit_bias`, audio and the rest in `_OPENAI_ONLY` are refused with a 400.

Answers: finish reasons COMPLETE/STOP_SEQUENCE → stop, MAX_TOKENS → length, TOOL_CALL →
tool_calls. ERROR and TIMEOUT have no OpenAI counterpart: a whole answer says `stop` and
the gateway logs a warning; a stream ends with an error event and no `[DONE]`, so it is
never taken for a complete answer (or cached). Usage comes from `usage.tokens`, falling
back to `usage.billed_units`. Citations have no OpenAI counterpart and are not passed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge_agent.api.openai import Endpoint
from edge_agent.providers.base import Schema
from edge_agent.providers.kind import ProviderType
from edge_agent.translate.cohere import CODEC

if TYPE_CHECKING:
    from edge_agent.config import Provider


class CohereAdapter:
    schema: Schema = "cohere"
    endpoints: frozenset[Endpoint] = frozenset()  # everything goes through the codec
    codec = CODEC

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        # base_url is what you would give Cohere's SDK (https://api.cohere.com); a path
        # prefix (a proxy, a private deployment) is kept, a trailing /v2 dropped.
        self._base = provider.base_path.removesuffix("/v2")

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        path = f"{self._base}/v2/chat"
        return f"{path}?{query}" if query else path

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {api_key}")] if api_key else []


COHERE = ProviderType(names=("cohere",), adapter=CohereAdapter)
