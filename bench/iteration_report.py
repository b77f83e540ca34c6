"""
Summarise the reactor iteration traces ``bench/trace/sitecustomize.py``
wrote: how long an iteration's work takes, how many events it handles, how
long the reactor waits for events, the slow timer passes, and how steady
the rate of events is from one 100 ms window to the next.

    python bench/iteration_report.py /tmp/trace [--skip 3]

Why: at a fixed number of connections a closed-loop client's latency is
the number of requests in flight divided by the rate (Little's law), and
a request's path through the gateway takes a few iterations (its read, the
backend's answer read, each flushed at the end of its iteration). The p99
then follows from how the iterations vary: more events in one, a slower
CPU for a while, a long timer pass, a garbage collection. This report
separates those.
"""

from __future__ import annotations

import argparse
import glob
import os
from array import array

WINDOW = 0.1


def _q(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


def _saved(saves: list[tuple[float, ...]], start: float, end: float) -> float:
    """Time the trace spent saving itself between ``start`` and ``end``."""
    return sum(s[2] - s[1] for s in saves if start <= s[1] and s[2] <= end)


def report(path: str, skip: float) -> None:
    records = array("d")
    with open(path, "rb") as f:
        records.frombytes(f.read())
    rows = [tuple(records[i:i + 4]) for i in range(0, len(records), 4)]
    waits = [r for r in rows if r[0] == 0.0]
    timers = [r for r in rows if r[0] == 1.0]
    collections = [r for r in rows if r[0] == 2.0]
    saves = [r for r in rows if r[0] == 3.0]
    # A timer pass that ran the trace's own save is the trace's cost, not the gateway's.
    timers = [t for t in timers if not any(t[1] <= s[1] and s[2] <= t[2] for s in saves)]
    if len(waits) < 2:
        print(f"{path}: fewer than two iterations recorded")
        return
    origin = waits[0][1] + skip
    waits = [w for w in waits if w[1] >= origin]
    timers = [t for t in timers if t[1] >= origin]
    collections = [c for c in collections if c[1] >= origin]
    span = waits[-1][2] - waits[0][1]
    # An iteration's work: from the end of its wait to the start of the next.
    # (less the time the trace spent saving itself in it)
    busy = [
        (waits[i + 1][1] - waits[i][2] - _saved(saves, waits[i][2], waits[i + 1][1]), waits[i][3])
        for i in range(len(waits) - 1)
    ]
    with_events = sorted(b for b, n in busy if n)
    events = sorted(n for _, n in busy if n)
    waited = sum(w[2] - w[1] for w in waits)
    total = sum(n for _, n in busy)
    print(f"{os.path.basename(path)}: {span:.1f} s traced (first {skip:g} s skipped), "
          f"{len(busy):,} iterations, {total:,.0f} events")
    print(f"  waiting for events: {waited / span:.1%} of the time")
    if with_events:
        work = [_q(with_events, p) * 1e3 for p in (.5, .9, .99)] + [with_events[-1] * 1e3]
        print("  work per iteration (ms): p50 {:.3f}  p90 {:.3f}  p99 {:.3f}  max {:.3f}".format(*work))
        count = [_q(events, p) for p in (.5, .9, .99)] + [events[-1]]
        print("  events per iteration: p50 {:.0f}  p90 {:.0f}  p99 {:.0f}  max {:.0f}".format(*count))
    per_window: dict[int, float] = {}
    for w in waits:
        key = int((w[2] - origin) / WINDOW)
        per_window[key] = per_window.get(key, 0.0) + w[3]
    # Whole windows only: the last one is cut by the end of the trace.
    counts = sorted(per_window[k] for k in sorted(per_window)[:-1])
    if counts:
        median = _q(counts, .5)
        slow = sum(1 for c in counts if c < 0.8 * median)
        print(f"  events per {WINDOW * 1000:.0f} ms: min {counts[0]:,.0f}  p10 {_q(counts, .1):,.0f}  "
              f"p50 {median:,.0f}  max {counts[-1]:,.0f}; {slow} of {len(counts)} windows "
              f"below 80% of the median")
    if timers:
        longest = sorted(timers, key=lambda t: t[2] - t[1], reverse=True)[:5]
        print(f"  timer passes over 0.2 ms: {len(timers)}; longest (ms at s): " + ", ".join(
            f"{(t[2] - t[1]) * 1e3:.2f} at {t[1] - origin:.1f}" for t in longest))
    else:
        print("  timer passes over 0.2 ms: none")
    if collections:
        longest_gc = max(c[2] - c[1] for c in collections)
        print(f"  garbage collections: {len(collections)} (generations "
              f"{sorted({int(c[3]) for c in collections})}), longest {longest_gc * 1e3:.2f} ms")
    else:
        print("  garbage collections: none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--skip", type=float, default=3.0,
                        help="seconds at the start left out (start-up, wrk's warm-up)")
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.directory, "iterations.*.bin")))
    if not paths:
        raise SystemExit(f"no iterations.*.bin in {args.directory}")
    for path in paths:
        report(path, args.skip)


if __name__ == "__main__":
    main()
