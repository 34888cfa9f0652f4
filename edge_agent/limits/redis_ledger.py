"""The ledger in Redis, for every replica and worker at once: the algorithm of
`ledger.LocalLedger`, as one Lua script per call (atomic, one round trip).

Keys share one hash tag (`{<prefix>:rl}`), so a script may touch any of them in Redis
Cluster too. Per scope: `...:<scope>:req` and `:tok` (hashes: level, at), `:conc` (a
sorted set of request ids by deadline), `:usd:d:<day>` / `:usd:m:<month>` (floats).
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from edge_agent.limits.ledger import (
    CONCURRENCY_TTL_S,
    Ask,
    LedgerUnavailable,
    Scope,
    Settle,
    Verdict,
    day_key,
    month_key,
    until_next_day,
    until_next_month,
    window,
)

_FIELDS = 5  # keys per scope: req, tok, conc, usd day, usd month
_ARGS = 5  # limits per scope: rpm, tpm, concurrency, usd/day, usd/month

# Buckets: level refilled at cap/60 per second up to cap; a missing bucket is full.
_COMMON = """
local function refill(key, cap, now)
  local v = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(v[1]), tonumber(v[2])
  if level == nil then return cap end
  return math.min(cap, level + math.max(0, now - at) * cap / 60)
end
local function save(key, level, now, cap)
  redis.call('HSET', key, 'level', tostring(level), 'at', tostring(now))
  -- Kept until it would be full again (a debt must not vanish with the key).
  local full_ms = math.ceil((cap - level) / (cap / 60) * 1000)
  redis.call('PEXPIRE', key, math.max(120000, full_ms + 60000))
end
local function charge(day, month, usd, day_ttl, month_ttl)
  for i, k in ipairs({day, month}) do
    local v = tonumber(redis.call('INCRBYFLOAT', k, tostring(usd)))
    if v < 0 then redis.call('SET', k, '0') end
    redis.call('EXPIRE', k, i == 1 and day_ttl or month_ttl)
  end
end
"""

_ADMIT = (
    _COMMON
    + """
local now, rid = tonumber(ARGV[1]), ARGV[2]
local tokens, cost, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local day_ttl, month_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local n = (#ARGV - 7) / 5
local req, tok = {}, {}
local best_req, best_tok = nil, nil
for i = 0, n - 1 do
  local k, a = i * 5, 7 + i * 5
  local rpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3])
  if rpm > 0 then
    req[i] = refill(KEYS[k + 1], rpm, now)
    if req[i] < 1 then
      return {0, 0, 'requests', i, tostring((1 - req[i]) / (rpm / 60)), rpm, tostring(req[i])}
    end
    if best_req == nil or req[i] - 1 < best_req[2] then best_req = {rpm, req[i] - 1} end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= conc then
      return {0, 0, 'concurrency', i, '1', 0, '0'}
    end
  end
end
local reserved, reason, scope, retry = 1, '', -1, 0
for i = 0, n - 1 do
  local k, a = i * 5, 7 + i * 5
  local tpm = tonumber(ARGV[a + 2])
  local usd_day, usd_month = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if tpm > 0 and tokens > 0 then
    tok[i] = refill(KEYS[k + 2], tpm, now)
    if tok[i] < tokens and reserved == 1 then
      reserved, reason, scope, retry = 0, 'tokens', i, (tokens - tok[i]) / (tpm / 60)
    end
    if best_tok == nil or tok[i] - tokens < best_tok[2] then best_tok = {tpm, tok[i] - tokens} end
  end
  if reserved == 1 and usd_day > 0 then
    if (tonumber(redis.call('GET', KEYS[k + 4])) or 0) + cost > usd_day then
      reserved, reason, scope, retry = 0, 'budget_day', i, day_ttl
    end
  end
  if reserved == 1 and usd_month > 0 then
    if (tonumber(redis.call('GET', KEYS[k + 5])) or 0) + cost > usd_month then
      reserved, reason, scope, retry = 0, 'budget_month', i, month_ttl
    end
  end
end
local spent = {}
for i = 0, n - 1 do
  local k, a = i * 5, 7 + i * 5
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local budget = tonumber(ARGV[a + 4]) > 0 or tonumber(ARGV[a + 5]) > 0
  if rpm > 0 then save(KEYS[k + 1], req[i] - 1, now, rpm) end
  if conc > 0 then
    redis.call('ZADD', KEYS[k + 3], now + ttl, rid)
    redis.call('EXPIRE', KEYS[k + 3], ttl)
  end
  if reserved == 1 and tpm > 0 and tokens > 0 then
    save(KEYS[k + 2], tok[i] - tokens, now, tpm)
  end
  if reserved == 1 and budget and cost ~= 0 then
    charge(KEYS[k + 4], KEYS[k + 5], cost, day_ttl + 86400, month_ttl + 86400)
  end
  spent[#spent + 1] = tostring(tonumber(redis.call('GET', KEYS[k + 4])) or 0)
end
local r = best_req or {0, 0}
local t = best_tok or {0, 0}
return {1, reserved, reason, scope, tostring(retry), r[1], tostring(r[2]), t[1], tostring(t[2]),
        unpack(spent)}
"""
)

_SETTLE = (
    _COMMON
    + """
local now, rid = tonumber(ARGV[1]), ARGV[2]
local settling, refund, delta = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local day_ttl, month_ttl, release = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local n = (#ARGV - 8) / 5
for i = 0, n - 1 do
  local k, a = i * 5, 8 + i * 5
  local tpm, conc = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local budget = tonumber(ARGV[a + 4]) > 0 or tonumber(ARGV[a + 5]) > 0
  if conc > 0 and release == 1 then redis.call('ZREM', KEYS[k + 3], rid) end
  if settling == 1 then
    if tpm > 0 and refund ~= 0 then
      save(KEYS[k + 2], math.min(tpm, refill(KEYS[k + 2], tpm, now) + refund), now, tpm)
    end
    if budget and delta ~= 0 then
      charge(KEYS[k + 4], KEYS[k + 5], delta, day_ttl + 86400, month_ttl + 86400)
    end
  end
end
return 1
"""
)


class RedisLedger:
    """Admission and settlement in Redis. Calls raise on any Redis trouble: the caller
    (the limits service) falls back to its local ledger."""

    def __init__(self, client: Redis | RedisCluster, prefix: str) -> None:
        self._client = client
        self._tag = f"{{{prefix}:rl}}"
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, scopes: tuple[Scope, ...], now: float) -> list[str]:
        day, month = day_key(now), month_key(now)
        out = []
        for s in scopes:
            base = f"{self._tag}:{s.name}"
            out += [f"{base}:req", f"{base}:tok", f"{base}:conc"]
            out += [f"{base}:usd:d:{day}", f"{base}:usd:m:{month}"]
        return out

    @staticmethod
    def _limits(scopes: tuple[Scope, ...]) -> list[Any]:
        out: list[Any] = []
        for s in scopes:
            out += [
                s.requests_per_minute or 0,
                s.tokens_per_minute or 0,
                s.concurrent_requests or 0,
                repr(float(s.usd_per_day or 0)),
                repr(float(s.usd_per_month or 0)),
            ]
        return out

    @staticmethod
    def _ttls(now: float) -> list[int]:
        return [math.ceil(until_next_day(now)), math.ceil(until_next_month(now))]

    async def spent(self, scope: str, now: float) -> tuple[float, float]:
        """(USD today, USD this month) for `scope`, reservations in flight included."""
        base = f"{self._tag}:{scope}"
        try:
            day, month = await self._client.mget(
                f"{base}:usd:d:{day_key(now)}", f"{base}:usd:m:{month_key(now)}"
            )
        except RedisError as exc:
            raise LedgerUnavailable(repr(exc)) from None
        return float(day or 0), float(month or 0)

    async def admit(self, ask: Ask) -> Verdict:
        args = [
            repr(ask.now),
            ask.request_id,
            ask.tokens,
            repr(float(ask.cost_usd)),
            int(CONCURRENCY_TTL_S),
            *self._ttls(ask.now),
            *self._limits(ask.scopes),
        ]
        try:
            raw = await self._admit(keys=self._keys(ask.scopes, ask.now), args=args)
        except RedisError as exc:
            raise LedgerUnavailable(repr(exc)) from None
        return _verdict(raw, ask.scopes)

    async def settle(self, settle: Settle) -> None:
        args = [
            repr(settle.now),
            settle.request_id,
            1 if settle.charge else 0,
            settle.tokens_refund,
            repr(float(settle.cost_delta)),
            *self._ttls(settle.admitted_at),
            1 if settle.release else 0,
            *self._limits(settle.scopes),
        ]
        try:
            # The day and month keys are the admission's: a reservation made before
            # midnight is settled against the day it was charged to.
            await self._settle(keys=self._keys(settle.scopes, settle.admitted_at), args=args)
        except RedisError as exc:
            raise LedgerUnavailable(repr(exc)) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _verdict(raw: list[Any], scopes: tuple[Scope, ...]) -> Verdict:
    admitted, reserved = int(raw[0]) == 1, int(raw[1]) == 1
    reason = _text(raw[2]) or None
    index = int(raw[3])
    scope = scopes[index].name if 0 <= index < len(scopes) else ""
    retry = float(_text(raw[4]))
    if not admitted:
        cap, level = int(raw[5]), float(_text(raw[6]))
        req = window(cap, level) if reason == "requests" else None
        return Verdict(False, False, reason, scope, retry, req)  # type: ignore[arg-type]
    req_cap, req_left = int(raw[5]), float(_text(raw[6]))
    tok_cap, tok_left = int(raw[7]), float(_text(raw[8]))
    spent = {s.name: float(_text(v)) for s, v in zip(scopes, raw[9:], strict=False)}
    return Verdict(
        True,
        reserved,
        reason,  # type: ignore[arg-type]
        scope,
        retry,
        window(req_cap, req_left) if req_cap else None,
        window(tok_cap, tok_left) if tok_cap else None,
        spent,
    )
