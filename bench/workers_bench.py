"""
What a configuration change costs the traffic, with one process and with
``--workers N``: docs/workers.md's "no stall" claim, measured.

A gateway serves ``--apis`` APIs x ``--operations`` operations from a local
file (a build of that configuration takes long enough to see). Keep-alive
client threads (``--connections``) send GETs to the APIs in a loop; after a
quiet period the file is changed (one API's backend moves from backend A to
B) and the gateway gets SIGHUP, ``--changes`` times, each change waited for
(every worker applied it, read from the admin port's ``/config``), then a
quiet period again. Reported per worker count:

  requests, failures     every answer must be 200
  p50 / p99 ms           all requests of the run
  slow                   requests that took more than 100 ms
  longest gap ms         the longest time in which no request at all
                         completed: with one process, a rebuild's length;
                         with workers (rolled out one at a time), what the
                         busiest moment left of the aggregate throughput

Run: python bench/workers_bench.py [--apis 2000] [--operations 10]
     [--connections 8] [--changes 5] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    LOCALHOST,
    REPO_DIR,
    Backends,
    BenchError,
    GatewayProcess,
    Processes,
    child_env,
    cpu_busy,
    percentile,
    remove_workdir,
    save_report,
    serve_backends,
    timestamp,
    wait_until,
)

SCRIPT = Path(__file__).resolve()


def config_text(apis: int, operations: int, backend_a: str, backend_b: str, moved: int) -> str:
    """``apis`` APIs of ``operations`` operations; API ``moved`` on backend B (-1: none)."""
    lines = ["apis:"]
    for i in range(apis):
        backend = backend_b if i == moved else backend_a
        lines += [
            f"  - name: api{i}",
            f"    path: api{i}",
            f"    serviceUrl: {backend}/svc{i}",
            "    operations:",
        ]
        lines += [
            f'      - {{name: op{j}, method: GET, urlTemplate: "/op{j}/{{id}}"}}'
            for j in range(operations)
        ]
    return "\n".join(lines) + "\n"


def admin_json(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/config", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def applied(port: int, workers: int, generation: int) -> bool:
    """Every worker (or the one process) serves supervisor generation ``generation`` or later."""
    dump = admin_json(port)
    if workers <= 1:
        return int(dump.get("generation", 0)) >= generation
    # The supervisor's snapshot number is its generation number.
    return all(w["pid"] and w["applied"] >= generation for w in dump["workers"])


class Load:
    """Keep-alive client threads recording (completion time, latency, status) per request."""

    def __init__(self, port: int, connections: int, apis: int) -> None:
        self.port = port
        self.apis = apis
        self.stop = threading.Event()
        self.records: list[list[tuple[float, float, int]]] = [[] for _ in range(connections)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(connections)]

    def run(self, index: int) -> None:
        out = self.records[index]
        conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=30)
        n = index
        while not self.stop.is_set():
            path = f"/api{(n * 7919) % self.apis}/op{n % 3}/{n}"
            n += len(self.records)
            started = time.monotonic()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(f"{path}: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=30)
                status = 0
            done = time.monotonic()
            out.append((done, done - started, status))
        conn.close()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> list[tuple[float, float, int]]:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        return sorted(r for records in self.records for r in records)


def measure(args: argparse.Namespace, workers: int, procs: Processes, workdir: Path,
            backends: Backends, env: dict[str, str]) -> dict[str, Any]:
    config = workdir / f"config-{workers}.yaml"
    a, b = backends.url("A"), backends.url("B")
    config.write_text(config_text(args.apis, args.operations, a, b, -1))
    gw = GatewayProcess(procs, workdir, f"gateway-{workers}")
    gw.launch(
        gw.twistd_argv(
            "_common.json_log_observer",
            "--config", str(config),
            "--poll-interval", "3600",
            "--workers", str(workers),
            "--https", "",
        ),
        {**env, "TELEMETRY_LOGS_STD": "none"},
    )
    try:
        wait_until("the gateway's first configuration",
                   lambda: _quiet(lambda: applied(gw.admin_port, workers, 1)),
                   args.ready_timeout, proc=gw.proc, log=gw.out)
        print(f"[workers {workers}] ready; load on {args.connections} connections", flush=True)
        busy = cpu_busy()
        load = Load(gw.http_port, args.connections, args.apis)
        load.start()
        changes = []
        time.sleep(args.quiet)
        for n in range(args.changes):
            config.write_text(config_text(args.apis, args.operations, a, b, n))
            sent = time.monotonic()
            gw.proc.send_signal(signal.SIGHUP)
            target = n + 2

            def done(target: int = target) -> bool:
                return _quiet(lambda: applied(gw.admin_port, workers, target))

            wait_until(f"change {n + 1} on every worker", done,
                       args.ready_timeout, interval=0.01, proc=gw.proc, log=gw.out)
            changes.append((sent, time.monotonic()))
            print(f"  change {n + 1}: applied everywhere in "
                  f"{(changes[-1][1] - sent) * 1000:.0f} ms", flush=True)
            time.sleep(args.quiet)
        records = load.finish()
    finally:
        gw.stop()
    latencies = [r[1] for r in records]
    times = [r[0] for r in records]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    return {
        "workers": workers,
        "cpu_busy_before": busy,
        "requests": len(records),
        "failures": sum(1 for r in records if r[2] != 200),
        "errors": load.errors[:10],
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 1),
        "slow_over_100ms": sum(1 for x in latencies if x > 0.1),
        "longest_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "change_applied_everywhere_ms": [round((e - s) * 1000) for s, e in changes],
    }


def _quiet(check: Any) -> bool:
    try:
        return bool(check())
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apis", type=int, default=2000)
    parser.add_argument("--operations", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--quiet", type=float, default=2.0, help="seconds before and after each change")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument("--serve-backends", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_backends:
        return serve_backends(args.serve_backends)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    stamp = timestamp()
    procs = Processes(stop_timeout=15)
    workdir = Path(tempfile.mkdtemp(prefix="apimgw-workers-bench-"))
    env = child_env(REPO_DIR)
    results = []
    try:
        backends = Backends(procs, workdir, SCRIPT, env)
        for workers in counts:
            results.append(measure(args, workers, procs, workdir, backends, env))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        remove_workdir(workdir, args.keep_temp)
    print(f"\n{args.apis} APIs x {args.operations} operations, {args.connections} keep-alive "
          f"connections, {args.changes} changes\n")
    print("| workers | requests | failures | p50 ms | p99 ms | max ms | >100 ms | longest gap ms "
          "| change applied everywhere ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['workers']} | {r['requests']} | {r['failures']} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r['max_ms']} | {r['slow_over_100ms']} | {r['longest_gap_ms']} | "
              f"{', '.join(map(str, r['change_applied_everywhere_ms']))} |")
    out = save_report(args.out_dir, "workers", stamp, {
        "timestamp": stamp,
        "settings": {k: v for k, v in vars(args).items() if k != "out_dir"} | {"out_dir": str(args.out_dir)},
        "results": results,
    })
    print(f"\nresults: {out}")
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
