"""
What a rate-limit policy adds per request, with local counters and with a
real Redis: starts a redis-server on a loopback port (stopped by its PID at
the end), then runs ``bench/proxy_bench.py``'s cases

  apimgw-policy        subscription key + set-header + rewrite-uri
  apimgw-limit-local   the same + a product-scope rate-limit, local counters
  apimgw-limit-redis   the same, counters in Redis (one round trip per check)

with the same wrk command (50 connections by default), and prints CPU µs
per request and p99 for each, and the differences.

Run: python bench/ratelimit_bench.py [--duration 6] [--repeat 3]
     (other options are passed to proxy_bench.py)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import proxy_bench  # noqa: E402

from gateway.testing.redis import RedisServer  # noqa: E402


def main(argv: list[str]) -> int:
    redis = RedisServer()
    redis.start()
    try:
        os.environ["APIMGW_BENCH_REDIS_URL"] = redis.url
        out = Path(proxy_bench.BENCH_DIR / "out")
        before = set(out.glob("proxy-*.json")) if out.exists() else set()
        status = proxy_bench.main(["--only", "limits", *argv])
        reports = sorted(set(out.glob("proxy-*.json")) - before)
    finally:
        redis.stop()
        redis.cleanup()
    if not reports:
        return status or 1
    cases = json.loads(reports[-1].read_text())["cases"]

    def figures(name: str) -> tuple[float | None, float | None]:
        case = cases.get(name) or {}
        return case.get("cpu_us_per_request"), case.get("p99_ms")

    base_cpu, base_p99 = figures("apimgw-policy")
    print("\nadded by the rate-limit policy (vs apimgw-policy in the same run):")
    for name in ("apimgw-limit-local", "apimgw-limit-redis"):
        cpu, p99 = figures(name)
        if None in (cpu, p99, base_cpu, base_p99):
            print(f"  {name}: not measured")
            continue
        print(f"  {name}: {cpu - base_cpu:+.1f} µs CPU per request, p99 {p99:.2f} ms "
              f"({p99 - base_p99:+.2f} ms)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
