"""RPM/TPM limiter in Redis, shared by every worker and replica.

One Lua script refills, checks and consumes the buckets of all scopes of a request
atomically, with Redis's own clock (``TIME``) so the clocks of the gateway machines do
not matter. The bucket math is the same integer math as ``LocalRateLimiter`` (see
``limiter.py``); Python only turns the returned levels into headers and messages.

Each scope is one hash ``<prefix><scope name>`` with fields ``r`` (request level),
``k`` (token level) and ``t`` (last update, ms). A missing key or field means a full
bucket, so a key may expire once it would be full again; the TTL is the larger of the
idle TTL and the time to refill. All keys of one call must live on one Redis node (no
Redis Cluster unless the prefix carries a hash tag such as ``{sy:rl}:``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchyard.store.redis_client import ScriptBatch, bounded_client
from switchyard.store.redis_pipe import RedisPipe
from switchyard.store.script_chain import ScriptCall

from switchyard.limits.limiter import (
    IDLE_TTL,
    UNIT,
    Admission,
    Scope,
    build_admission,
    check_tokens,
    unique_limited,
    unlimited_admission,
)

__all__ = ["RedisRateLimiter"]

# ARGV: op ("admit" | "correct"), amount (tokens | token delta in units), idle ttl ms,
# then rpm, tpm per key (-1 = unlimited). Returns {allowed, r1, k1, r2, k2, ...}.
# Levels are integers below 2^53 for any realistic limit, so doubles hold them exactly;
# they are written with %.0f because Lua's default number format keeps only 14 digits.
_SCRIPT = """
local UNIT = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local amount = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local n = #KEYS
local rpm, tpm, req, tok = {}, {}, {}, {}

local function refill(level, limit, elapsed)
  if limit < 0 then return nil end
  local cap = limit * UNIT
  if level == nil then return cap end
  level = level + elapsed * limit
  if level > cap then level = cap end
  return level
end

local function ms_until_full(level, limit)
  if level == nil or limit <= 0 then return 0 end
  local missing = limit * UNIT - level
  if missing <= 0 then return 0 end
  return math.ceil(missing / limit)
end

for i = 1, n do
  rpm[i] = tonumber(ARGV[2 + 2 * i])
  tpm[i] = tonumber(ARGV[3 + 2 * i])
  local h = redis.call('HMGET', KEYS[i], 'r', 'k', 't')
  local elapsed = 0
  local last = tonumber(h[3])
  if last ~= nil and now > last then elapsed = now - last end
  req[i] = refill(tonumber(h[1]), rpm[i], elapsed)
  tok[i] = refill(tonumber(h[2]), tpm[i], elapsed)
end

local allowed = 1
if op == 'admit' then
  local need = amount * UNIT
  for i = 1, n do
    if (req[i] ~= nil and req[i] < UNIT) or (tok[i] ~= nil and tok[i] < need) then
      allowed = 0
      break
    end
  end
  if allowed == 1 then
    for i = 1, n do
      if req[i] ~= nil then req[i] = req[i] - UNIT end
      if tok[i] ~= nil then tok[i] = tok[i] - need end
    end
  end
else
  for i = 1, n do
    if tok[i] ~= nil then
      tok[i] = math.min(tpm[i] * UNIT, tok[i] + amount)
    end
  end
end

local out = {allowed}
for i = 1, n do
  -- A refusal changes nothing (refill is a function of time alone), so it writes nothing.
  if allowed == 1 then
    local fields = {'t', string.format('%.0f', now)}
    if req[i] ~= nil then
      table.insert(fields, 'r')
      table.insert(fields, string.format('%.0f', req[i]))
    else
      redis.call('HDEL', KEYS[i], 'r')
    end
    if tok[i] ~= nil then
      table.insert(fields, 'k')
      table.insert(fields, string.format('%.0f', tok[i]))
    else
      redis.call('HDEL', KEYS[i], 'k')
    end
    redis.call('HSET', KEYS[i], unpack(fields))
    local ttl = math.max(idle, ms_until_full(req[i], rpm[i]), ms_until_full(tok[i], tpm[i]))
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  out[2 * i] = req[i] or 0
  out[2 * i + 1] = tok[i] or 0
end
return out
"""
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


class RedisRateLimiter:
    """The shared limiter. Redis errors surface as ``RuntimeError``; the gateway picks fail-open or closed."""

    def __init__(
        self,
        url: str,
        prefix: str = "sy:rl:",
        *,
        timeout: float = 1.0,
        max_connections: int = 64,
        idle_ttl: float = IDLE_TTL,
        client: Any = None,
        pipe: RedisPipe | None = None,
    ) -> None:
        """`client`: a Redis client shared with the worker's other parts (then not closed here);
        `pipe`: the worker's lean client, used for every call when given."""
        self._owned = client is None
        self._redis = client if client is not None else bounded_client(url, timeout=timeout, max_connections=max_connections)
        self._prefix = prefix
        self._pipe = pipe
        self._idle_ms = round(idle_ttl * 1000)
        kwargs = self._redis.connection_pool.connection_kwargs
        # Host and port only: the URL may carry a password.
        self._where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def admit(self, scopes: Sequence[Scope], tokens: int) -> Admission:
        check_tokens(tokens)
        limited = unique_limited(scopes)
        if not limited:
            return unlimited_admission()
        return self.admission(limited, tokens, await self._run("admit", tokens, limited))

    def admit_call(self, scopes: Sequence[Scope], tokens: int) -> tuple[ScriptCall, list[Any], list[Scope]] | None:
        """The admission as a script call to chain with another (script_chain), the arguments that
        undo it (the tokens given back; the request still counts, as when a hold is refused), and
        the scopes `admission` reads the reply for. None when nothing is limited."""
        check_tokens(tokens)
        limited = unique_limited(scopes)
        if not limited:
            return None
        keys, args = self._command("admit", tokens, limited)
        _, undo = self._command("correct", tokens * UNIT, limited)
        return ScriptCall(_SCRIPT, keys, args, goes_on=1), undo, limited

    def admission(self, limited: Sequence[Scope], tokens: int, reply: list[Any]) -> Admission:
        levels = [(_level(reply, i, 0, s.limits.rpm), _level(reply, i, 1, s.limits.tpm)) for i, s in enumerate(limited)]
        return build_admission(limited, tokens, levels, bool(reply[0]))

    async def correct(self, scopes: Sequence[Scope], estimated: int, actual: int, batch: ScriptBatch | None = None) -> None:
        """`batch`: queued with the request's other settlement calls (one round trip)."""
        delta = estimated - actual
        limited = [s for s in unique_limited(scopes) if s.limits.tpm is not None]
        if delta and limited:
            if batch is not None:
                keys, args = self._command("correct", delta * UNIT, limited)
                batch.add(_SHA, _SCRIPT, keys, args)
                return
            await self._run("correct", delta * UNIT, limited)

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()

    def _command(self, op: str, amount: int, scopes: Sequence[Scope]) -> tuple[list[Any], list[Any]]:
        keys = [self._prefix + s.name for s in scopes]
        args: list[Any] = [op, amount, self._idle_ms]
        for s in scopes:
            args += [_arg(s.limits.rpm), _arg(s.limits.tpm)]
        return keys, args

    async def _run(self, op: str, amount: int, scopes: Sequence[Scope]) -> list[Any]:
        keys, args = self._command(op, amount, scopes)
        try:
            if self._pipe is not None:
                return await self._pipe.evalsha(_SHA, _SCRIPT, keys, args)  # type: ignore[no-any-return]
            try:
                return await self._redis.evalsha(_SHA, len(keys), *keys, *args)  # type: ignore[no-any-return]
            except NoScriptError:
                # First call on this server (or after SCRIPT FLUSH/restart): EVAL also caches it there.
                return await self._redis.eval(_SCRIPT, len(keys), *keys, *args)  # type: ignore[no-any-return]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RuntimeError(f"rate limiter: Redis at {self._where} is unreachable: {exc}") from exc
        except RedisError as exc:
            raise RuntimeError(f"rate limiter: Redis at {self._where} failed: {exc}") from exc


def _arg(limit: int | None) -> int:
    return -1 if limit is None else limit


def _level(reply: list[Any], index: int, dim: int, limit: int | None) -> int | None:
    return None if limit is None else int(reply[1 + 2 * index + dim])
