"""What each tenant spent, per key and model and UTC day: tokens, cost, cache savings,
requests. Kept in this process, and in Redis (one hash per tenant and day,
`{<prefix>:spend}:<tenant>:<day>`) when `cache.redis` is set, so `GET /admin/spend`
answers for every replica. Writes are summed in the process and go out in one
pipeline every half second; they never slow a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.limits.ledger import day_key

log = logging.getLogger("edge_agent.limits.spend")

FIELDS = ("requests", "input_tokens", "output_tokens", "cost_usd", "saved_usd")
MAX_DAYS = 400
_KEEP_S = MAX_DAYS * 86400
_FLUSH_S = 0.5


def _book() -> defaultdict[tuple[str, str], defaultdict[str, float]]:
    return defaultdict(lambda: defaultdict(float))


@dataclass(frozen=True, slots=True)
class Spent:
    tenant: str
    key: str  # the key's name, or "-" for callers without one
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0

    def fields(self) -> dict[str, float]:
        return {
            "requests": 1,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "saved_usd": self.saved_usd,
        }


class SpendBook:
    def __init__(self) -> None:
        # (tenant, day) → "key|model|field" → value: kept here without Redis; with it,
        # what has not been written yet.
        self._local = _book()
        self._unsent = _book()
        self._client: Any = None
        self._tag = ""
        self._flusher: asyncio.Task[None] | None = None

    def attach(self, client: Any, prefix: str) -> None:
        self._client = client
        self._tag = f"{{{prefix}:spend}}"

    def record(self, spent: Spent, now: float) -> None:
        day = day_key(now)
        # Summed here first; with Redis, written in one pipeline per `_FLUSH_S` (not a
        # round trip per request).
        books = self._unsent if self._client is not None else self._local
        book = books[(spent.tenant, day)]
        for field, value in spent.fields().items():
            if value:
                book[f"{spent.key}|{spent.model}|{field}"] += value
        if self._client is not None and self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(_FLUSH_S)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Write what was recorded since the last flush to Redis."""
        unsent, self._unsent = self._unsent, _book()
        if not unsent:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for (tenant, day), fields in unsent.items():
                    name = f"{self._tag}:{tenant}:{day}"
                    for field, value in fields.items():
                        pipe.hincrbyfloat(name, field, value)
                    pipe.expire(name, _KEEP_S)
                await asyncio.wait_for(pipe.execute(), 2.0)
        except Exception as exc:  # spend reporting must never fail a request
            log.warning("spend not recorded in Redis (%r)", exc)

    async def report(
        self, tenants: Iterable[str], key: str | None, since: float, now: float
    ) -> list[dict[str, Any]]:
        """Rows of spend per tenant, key and model, summed over the days since `since`."""
        if self._client is not None:
            await self.flush()  # this process's latest requests included
        days = []
        t = datetime.fromtimestamp(since, UTC)
        end = datetime.fromtimestamp(now, UTC)
        while t.date() <= end.date() and len(days) < MAX_DAYS:
            days.append(t.strftime("%Y%m%d"))
            t += timedelta(days=1)
        totals: dict[tuple[str, str, str], dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(FIELDS, 0.0)
        )
        for tenant in tenants:
            for day in days:
                for field, value in (await self._read(tenant, day)).items():
                    who, model, name = field.rsplit("|", 2)
                    if (key is None or who == key) and name in FIELDS:
                        totals[(tenant, who, model)][name] += value
        return [
            {
                "tenant": tenant,
                "key": who,
                "model": model,
                **{k: (round(v, 6) if k.endswith("_usd") else int(v)) for k, v in f.items()},
            }
            for (tenant, who, model), f in sorted(totals.items())
        ]

    async def _read(self, tenant: str, day: str) -> dict[str, float]:
        if self._client is None:
            return dict(self._local.get((tenant, day), {}))
        raw = await self._client.hgetall(f"{self._tag}:{tenant}:{day}")
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if self._client is not None:
            await self.flush()
