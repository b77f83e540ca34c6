"""
The Lua scripts: each check is one script, so one round trip, and atomic
(Redis runs a script alone), which is what makes N gateways sharing one
Redis admit exactly ``limit`` calls between them.

Time comes from Redis's ``TIME`` (microseconds) so that replicas whose
clocks disagree still agree on the windows, unless ``ARGV[5]`` gives a time
explicitly (replay of admissions made while Redis was away, and tests on a
fake clock). Every script answers ``{admitted, count, retry_after_us}``,
``retry_after_us = -1`` meaning "never".

Sliding window: a sorted set, one member per counted unit, scored by its
time; ``ZREMRANGEBYSCORE`` drops what left the window (score <= now -
period), ``ZCARD`` counts, ``ZADD`` adds unique members (the caller's
``ARGV[6]`` is unique per call), ``PEXPIRE`` lets an idle key vanish. The
oldest members give the exact retry time of a refused call.

Fixed window: a hash ``{w: window index, c: count}`` that expires at the
window's end (never with ``period == 0``). An ``add`` for a window older
than the stored one (a late replay) is dropped.
"""

from __future__ import annotations

import hashlib

__all__ = ["EPOCH", "FIXED", "SLIDING", "Script"]


class Script:
    """A Lua script and its SHA1 (the name ``EVALSHA`` calls it by)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


_NOW = """
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

SLIDING = Script(
    """-- apimgw sliding window: KEYS[1] zset; ARGV limit, period_us, amount, mode (t|p|a), now_us|'', member
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local mode = ARGV[4]
"""
    + _NOW
    + """
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
local count = redis.call('ZCARD', key)
if mode == 'p' then
  if count < limit then return {1, count, 0} end
  amount = 1
elseif mode == 'a' or count + amount <= limit then
  local member = ARGV[6]
  if amount == 1 then
    redis.call('ZADD', key, now, member)
  else
    local i = 1
    while i <= amount do
      local args = {}
      local j = 0
      while i <= amount and j < 1000 do
        args[#args + 1] = now
        args[#args + 1] = member .. ':' .. i
        i = i + 1
        j = j + 1
      end
      redis.call('ZADD', key, unpack(args))
    end
  end
  redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1)
  return {1, count + amount, 0}
end
if amount > limit then return {0, count, -1} end
local nth = count + amount - limit - 1
local oldest = redis.call('ZRANGE', key, nth, nth, 'WITHSCORES')
return {0, count, tonumber(oldest[2]) + period - now}
"""
)

FIXED = Script(
    """-- apimgw fixed window: KEYS[1] hash {w, c}; ARGV limit, period_us, amount, mode (t|p|a), now_us|'', anchor_us
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local mode = ARGV[4]
"""
    + _NOW
    + """
local anchor = tonumber(ARGV[6])
local window = 0
if period > 0 then window = math.floor((now - anchor) / period) end
local stored = redis.call('HMGET', key, 'w', 'c')
local w = tonumber(stored[1])
local count = 0
if w == window then
  count = tonumber(stored[2]) or 0
elseif w and w > window and mode == 'a' then
  return {1, 0, 0}
end
local retry = -1
if period > 0 then retry = anchor + (window + 1) * period - now end
if mode == 'p' then
  if count < limit then return {1, count, 0} end
  amount = 1
elseif mode == 'a' or count + amount <= limit then
  count = count + amount
  redis.call('HSET', key, 'w', window, 'c', count)
  if period > 0 then redis.call('PEXPIRE', key, math.ceil(retry / 1000) + 1) end
  return {1, count, 0}
end
if amount > limit then return {0, count, -1} end
return {0, count, retry}
"""
)

#: Returns the namespace's epoch marker, creating it (with ARGV[1]) if it
#: is missing: a missing marker means Redis lost its data (restart without
#: persistence, flush, eviction) since a gateway last saw it.
EPOCH = Script(
    """-- apimgw epoch: KEYS[1]; ARGV new value
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1])
  v = ARGV[1]
end
return v
"""
)
