"""The limits of one agent process: which scopes a caller has, and the ledger that
answers (Redis for every replica, attached by the runtime; this process's own without
it, or when Redis does not answer).

Redis trouble never fails a request: an admission Redis does not answer within
`cache.redis.timeout_ms` is decided by the local ledger with this process's share of
each limit (1 / workers), counted in `edge_agent_limits_fallback_total`, and settled
there too. Settlements are sent in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from edge_agent.config import Config
from edge_agent.identity.tenants import Caller, Tenants
from edge_agent.limits.ledger import (
    Ask,
    LedgerUnavailable,
    LocalLedger,
    Scope,
    Settle,
    Verdict,
    scopes_of,
)
from edge_agent.limits.spend import SpendBook
from edge_agent.telemetry.metrics import Metrics

log = logging.getLogger("edge_agent.limits")
_FAILED = (LedgerUnavailable, OSError, TimeoutError)


class SharedLedger(Protocol):
    """The ledger every replica shares (`redis_ledger.RedisLedger`)."""

    async def admit(self, ask: Ask) -> Verdict: ...

    async def settle(self, settle: Settle) -> None: ...

    async def spent(self, scope: str, now: float) -> tuple[float, float]: ...


class Limiter:
    def __init__(
        self,
        config: Config,
        tenants: Tenants,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenants = tenants
        self.metrics = metrics
        self.clock = clock
        self.estimates = config.limits
        self.local = LocalLedger()
        # This process's share of each limit while Redis does not answer: 1 / workers,
        # set by the service (only the worker context knows the count --workers gave).
        self.share = 1.0
        self._tenant_scopes: dict[str, Scope | None] = {}  # tenants are fixed config
        self.redis: SharedLedger | None = None
        self._timeout_s = config.cache.redis.timeout_ms / 1000
        self.spend = SpendBook()  # what each tenant spent, for GET /admin/spend
        self._pending: set[asyncio.Task[None]] = set()
        self._failing = False

    def attach(self, shared: SharedLedger) -> None:
        self.redis = shared

    # ---- who is limited ------------------------------------------------------------
    def scopes(self, caller: Caller) -> tuple[Scope, ...]:
        """The tenant's scope (shared by all its callers) and the key's own, if any."""
        name = caller.tenant
        if name not in self._tenant_scopes:
            tenant = self.tenants.get(name)
            self._tenant_scopes[name] = (
                None
                if tenant is None
                else Scope(
                    f"t:{tenant.name}", **tenant.limits.model_dump(), **tenant.budget.model_dump()
                )
            )
        found = [self._tenant_scopes[name]]
        key = caller.key
        if key is not None and (key.limits or key.budget):
            found.append(Scope(f"k:{key.id}", **(key.limits or {}), **(key.budget or {})))
        return scopes_of(found)

    # ---- the ledger ----------------------------------------------------------------
    async def admit(self, ask: Ask) -> tuple[Verdict, bool]:
        """(verdict, decided locally)."""
        if self.redis is not None:
            # Not wait_for: a script Redis ran after the deadline must be undone, so the
            # call is left to finish and compensated when it does.
            task = asyncio.ensure_future(self.redis.admit(ask))
            done, _ = await asyncio.wait({task}, timeout=self._timeout_s)
            if task in done and task.exception() is None:
                self._failing = False
                return task.result(), False
            if task in done:
                self._fell_back(task.exception() or TimeoutError())
            else:
                task.add_done_callback(lambda t: self._undo_late(t, ask))
                self._fell_back(TimeoutError("admission over cache.redis.timeout_ms"))
        return self.local.admit(ask, self.share if self.redis is not None else 1.0), True

    def _undo_late(self, task: asyncio.Future[Verdict], ask: Ask) -> None:
        """An admission Redis granted after the request went on without it: give back
        everything it took."""
        if task.cancelled() or task.exception() is not None:
            return
        verdict = task.result()
        if verdict.admitted:
            undo = Settle(
                ask.request_id,
                ask.scopes,
                verdict.reserved,
                ask.tokens,
                -ask.cost_usd,
                self.clock(),
                ask.now,
                release=True,
            )
            self.settle_later(undo, local=False)

    def settle_later(self, settle: Settle, local: bool) -> None:
        if local or self.redis is None:
            self.local.settle(settle, self.share if self.redis is not None else 1.0)
            return
        task = asyncio.ensure_future(self._settle(settle))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, settle: Settle) -> None:
        assert self.redis is not None
        for delay in (0.5, 1.0, 2.0, None):  # a short outage must not pin slots
            try:
                await asyncio.wait_for(self.redis.settle(settle), max(0.25, 4 * self._timeout_s))
                return
            except _FAILED as exc:
                if delay is None:
                    # The slot expires by itself (CONCURRENCY_TTL_S); the reservation
                    # stays charged: an overcharge, never an overshoot.
                    log.warning("a limits settlement did not reach Redis (%r)", exc)
                    return
                await asyncio.sleep(delay)

    def _fell_back(self, exc: BaseException) -> None:
        self.metrics.limits_fallback.inc()
        if not self._failing:  # once per outage
            log.warning("limits: Redis did not answer (%r); deciding per process", exc)
        self._failing = True

    def note_spend(self, verdict: Verdict, scopes: tuple[Scope, ...]) -> None:
        for s in scopes:
            if s.name.startswith("t:") and s.usd_per_day and s.name in verdict.spent_day:
                left = max(0.0, s.usd_per_day - verdict.spent_day[s.name])
                self.metrics.budget_remaining.labels(s.name[2:]).set(left)

    async def spent(self, scope: str) -> tuple[float, float]:
        """(USD today, USD this month) for a scope, from the shared ledger when it answers."""
        now = self.clock()
        if self.redis is not None:
            try:
                return await asyncio.wait_for(self.redis.spent(scope, now), 2.0)
            except _FAILED:
                pass
        return self.local.spent(scope, now)

    async def close(self) -> None:
        await self.spend.close()
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
