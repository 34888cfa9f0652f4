"""The operator's own checker (`guardrails.external`): the I/O half. One POST per text of
a request, all at once, bounded by the checker's timeout as a whole."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from edge_agent.pipeline.effects import Effect

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.guardrails.settings import ExternalChecker

log = logging.getLogger("edge_agent.guardrails.external")

_MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # allow | block | redact | error
    text: str | None = None
    reason: str = ""


class CheckerClient:
    def __init__(self, config: ExternalChecker) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(raise_for_status=False)
        return self._session

    async def check(self, texts: list[str], tenant: str) -> list[Verdict]:
        """A verdict per text; all `error` when the checker failed or was late."""
        timeout = self.config.timeout_ms / 1000
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(self._one(t, tenant) for t in texts)), timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("guardrails checker %s failed: %r", self.config.url, exc)
            return [Verdict("error")] * len(texts)

    async def _one(self, text: str, tenant: str) -> Verdict:
        payload = {"text": text, "direction": "request", "tenant": tenant}
        async with self._client().post(self.config.url, json=payload) as resp:
            if resp.status != 200:
                raise ValueError(f"the checker answered {resp.status}")
            body: Any = await resp.json(content_type=None)
        action = body.get("action") if isinstance(body, dict) else None
        if action not in ("allow", "block", "redact"):
            raise ValueError(f"the checker's action {action!r} is none of allow, block, redact")
        new_text = body.get("text")
        if action == "redact" and not isinstance(new_text, str):
            raise ValueError("the checker said redact without a text")
        reason = body.get("reason")
        return Verdict(action, new_text, str(reason)[:_MAX_REASON] if reason else "")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass(frozen=True, slots=True)
class ExternalCheck(Effect):
    """The checker's verdicts on `texts` (a list, in order)."""

    texts: tuple[str, ...]
    tenant: str
    checker: CheckerClient  # the global one, or the tenant's own

    async def perform(self, agent: Agent) -> Any:
        return await self.checker.check(list(self.texts), self.tenant)
