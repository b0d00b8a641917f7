"""Two Lua script calls made one: one round trip to Redis, and atomic together.

Admission asks two things of Redis: may the request go (rate limits), and may it hold its
worst-case cost (money). Each is a script of its own module; chained here, Redis runs the first,
the second only when the first lets the request through, and the first's undo when the second
refuses, all in one EVALSHA. Each script keeps its own KEYS/ARGV layout: it becomes a Lua
function of those two tables.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from switchyard.store.redis_pipe import RedisPipe


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script call: its source, keys and arguments; `goes_on`: the first reply element that
    means the call succeeded (a refusal is any other value)."""

    source: str
    keys: Sequence[Any]
    args: Sequence[Any]
    goes_on: int


@functools.lru_cache(maxsize=8)
def _chained(first: str, second: str, first_goes_on: int, second_goes_on: int) -> tuple[str, str]:
    source = f"""
local function first(KEYS, ARGV)
{first}
end
local function second(KEYS, ARGV)
{second}
end
local nk, na, nu = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local k1, k2, a1, undo, a2 = {{}}, {{}}, {{}}, {{}}, {{}}
for i = 1, nk do k1[i] = KEYS[i] end
for i = nk + 1, #KEYS do k2[i - nk] = KEYS[i] end
for i = 1, na do a1[i] = ARGV[3 + i] end
for i = 1, nu do undo[i] = ARGV[3 + na + i] end
for i = 4 + na + nu, #ARGV do a2[#a2 + 1] = ARGV[i] end
local r1 = first(k1, a1)
if r1[1] ~= {first_goes_on} then return {{r1}} end
local r2 = second(k2, a2)
if r2[1] ~= {second_goes_on} then first(k1, undo) end
return {{r1, r2}}
"""
    return source, hashlib.sha1(source.encode()).hexdigest()


async def run_chained(pipe: RedisPipe, first: ScriptCall, undo_args: Sequence[Any],
                      second: ScriptCall) -> tuple[Any, Any | None]:
    """Both replies; the second is None when the first refused (the second did not run). When
    the second refuses, `first` ran again with `undo_args` (same keys) before the reply."""
    source, sha = _chained(first.source, second.source, first.goes_on, second.goes_on)
    keys = [*first.keys, *second.keys]
    args = [len(first.keys), len(first.args), len(undo_args), *first.args, *undo_args, *second.args]
    replies = await pipe.evalsha(sha, source, keys, args)
    return replies[0], (replies[1] if len(replies) > 1 else None)
