"""
Counters for rate limits and quotas: the runtime state behind the
``rate-limit``, ``rate-limit-by-key`` and ``quota`` policies.

* :class:`LocalCounters`: in this process, exact, synchronous; what a
  gateway without Redis uses (each replica then counts alone).
* :class:`RedisCounters`: in a real Redis shared by every replica; one
  atomic script per check, pipelined on one connection.
* :class:`FallbackCounters`: Redis while it answers, the local counters
  when it does not, and a replay into Redis when it is back.

All three answer with a :class:`Verdict` (the local one synchronously,
the others through a Deferred); the policy side sees only :class:`Counters`.
"""

from ._errors import RedisAuthError, RedisError, RedisTimeout, RedisUnavailable
from ._fallback import FallbackCounters
from ._local import Entry, LocalCounters
from ._redis import RedisCounters
from ._service import CountersService
from ._url import RedisAddress, parse_redis_url
from ._verdict import NEVER, Counters, Verdict

__all__ = [
    "NEVER",
    "Counters",
    "CountersService",
    "Entry",
    "FallbackCounters",
    "LocalCounters",
    "RedisAddress",
    "RedisAuthError",
    "RedisCounters",
    "RedisError",
    "RedisTimeout",
    "RedisUnavailable",
    "Verdict",
    "parse_redis_url",
]
