"""
Configuration service benchmark: how fast a management change reaches the
traffic port, and how long a gateway takes to load a large snapshot.

Everything runs as real processes on 127.0.0.1:

  service   twistd -n apimgw-config, a temporary SQLite database
  backend   two tiny twisted.web sites in one child process ("A" and "B"),
            answering every request with "<name> <path it received>"
  gateway   twistd -n apimgw, whose only source is the cloud source
            (config.service.endpoint / config.service.auth) pointing at the
            service, with a temporary config.backup.path

Part 1, change to served (gateway "bench", a one-API configuration):
``--iterations`` times, each change made through the management REST API,
measured from the moment the management call returned until the gateway
answers a request the way the change says (polled every ``--poll-ms`` over
a keep-alive connection, bounded by ``--change-timeout``):

  create   PUT /apis/{id}, then PUT /gateways/bench/apis/{id} (the call that
           makes it visible to the gateway, and the one timed from) until
           GET /<path>/x is answered 200 by backend A
  update   PUT /apis/{id} with a new path and a serviceUrl on backend B,
           until GET /<new path>/x is answered 200 by backend B
  delete   DELETE /apis/{id} until GET /<path>/x is answered 404

Part 2, snapshot load (gateway "load", ``--apis`` APIs x ``--operations``
operations): the service is populated through the management REST API
(PUT the API, its operations, then its assignment to the gateway; on
``--workers`` keep-alive connections in parallel); then the snapshot
endpoint is timed alone (GET with the gateway's token), and ``--repeat``
times a fresh gateway is started and timed from process start to /readyz
200 and to the first request served. The gateway's own view comes from its
log, recorded with microsecond timestamps (twistd --logger
config_bench.json_log_observer, the JSON log observer of bench/_common.py;
nothing in the gateway changes): the
"Applied the cloud configuration snapshot" and "Configuration generation 1
live" lines. The median of the repeats is reported. With the last gateway
still running, part 1's changes are repeated against the large
configuration (``--large-iterations``), then up to 10 more rounds with
other traffic alongside (a GET of an unchanged API every ``--poll-ms``),
whose latencies show what a rebuild does to the requests in the meantime.
Each change's rebuild is also read from the gateway's log ("Applied N
cloud configuration changes" to "Configuration generation N live").

``--profile`` adds, outside the measured figures, py-spy attached to the
large gateway during the changes and one more gateway start run under
py-spy (raw stacks in bench/out/, the top functions printed).
``--source DIR`` runs the service and the gateway from another tree (e.g.
a commit exported with ``git archive``) while this checkout is being edited.

Every child process is stopped by its PID (SIGTERM, then SIGKILL) in a
``finally``; every wait has a timeout and the whole run a time limit
(``--time-limit``). A Markdown table goes to standard output and the
figures as JSON to bench/out/config-<timestamp>.json.

Run: python bench/config_bench.py [--quick] [--iterations 50] [--apis 2000]
     [--operations 10] [--repeat 3] [--profile] [--source DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    LOCALHOST,
    REPO_DIR,
    Backends,
    BenchError,
    Client,
    GatewayProcess,
    Poller,
    Processes,
    child_env,
    command_line,
    cpu_busy,
    find_py_spy,
    fmt,
    free_port,
    get_status,
    is_404,
    json_log_observer,  # noqa: F401  (the gateway's twistd --logger, see LOGGER)
    machine,
    machine_line,
    percentile,
    py_spy_attached,
    remove_workdir,
    save_report,
    serve_backends,
    served_by,
    spread,
    summarize_profile,
    timestamp,
    twistd_command,
    wait_until,
)

#: Where the service and the gateway run from (--source; default this checkout).
SOURCE_DIR = REPO_DIR
ADMIN_KEY = "config-bench-admin-key-0123456789abcdef"
#: The gateway's twistd --logger: _common's, imported above (bench/ is on its PYTHONPATH).
LOGGER = "config_bench.json_log_observer"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")

# Gateway log lines (their log_format prefixes) the load phases are read from.
LOG_APPLIED = "Applied the cloud configuration snapshot"
LOG_LIVE = "Configuration generation {number} live"
LOG_CLOUD = "Cloud source: configuration service"
LOG_BACKUP = "Cloud configuration backup written"
LOG_STARTING = "twistd {version}"  # "... starting up.": services start right after
LOG_FACTORY = "Starting factory"  # of the HTTP client: the snapshot request's connection
CLIENT_NAMESPACE = "twisted.web.client._HTTP11ClientFactory"
#: The frames summarize_profile counts inclusively, and how it calls them.
PROFILED = (("(gateway/", "(json/"), "the gateway's own functions, and json")


# --- the gateway's log ------------------------------------------------------


def _first(events: list[dict[str, Any]], prefix: str, namespace: str | None = None,
           **fields: Any) -> dict[str, Any] | None:
    """The first event whose format starts with ``prefix`` (and has ``fields``)."""
    for event in events:
        if (str(event.get("log_format", "")).startswith(prefix)
                and (namespace is None or event.get("log_namespace") == namespace)
                and all(event.get(k) == v for k, v in fields.items())):
            return event
    return None


# --- HTTP -------------------------------------------------------------------


class Management(Client):
    """The service's management API with the admin key; ``ok`` raises on a non-2xx."""

    def __init__(self, port: int) -> None:
        super().__init__(port, {"Authorization": f"Bearer {ADMIN_KEY}"})

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.request(method, path, body)
        if status >= 300:
            raise BenchError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload.strip() else None


# --- the service, the backends, the gateway ---------------------------------


class Service:
    """``twistd -n apimgw-config`` on a temporary database."""

    def __init__(self, procs: Processes, workdir: Path, args: argparse.Namespace) -> None:
        self.db = workdir / "config.db"
        self.log = workdir / "config-service.log"
        self.port = free_port()
        self.management_port = free_port()
        self.argv = [
            *twistd_command(), "-n", "--pidfile=", "--logfile", str(self.log), "apimgw-config",
            "--db", str(self.db),
            "--listen", f"tcp:{self.port}:interface={LOCALHOST}",
            "--management", f"tcp:{self.management_port}:interface={LOCALHOST}",
        ]
        with open(workdir / "config-service.out", "wb") as out:
            self.proc = procs.start(
                self.argv, env=child_env(SOURCE_DIR, APIMGW_CONFIG_ADMIN_KEY=ADMIN_KEY),
                stdout=out, stderr=subprocess.STDOUT)
        wait_until(
            "the configuration service",
            lambda: get_status(self.management_port, "/") == 401
            and get_status(self.port, "/") == 404,
            args.ready_timeout, proc=self.proc, log=self.log,
        )

    def token(self, gateway: str) -> str:
        """A gateway token from ``python -m configservice token`` (reads the database)."""
        done = subprocess.run(
            [sys.executable, "-m", "configservice", "token", "--gateway", gateway,
             "--expiry", "1d", "--db", str(self.db)],
            cwd=SOURCE_DIR, env=child_env(SOURCE_DIR), capture_output=True, timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"token command failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode().strip()


class Gateway(GatewayProcess):
    """
    ``twistd -n apimgw`` with the cloud source only (see GatewayProcess),
    a backup directory of its own; with ``profile_out``, run under py-spy
    (then ``pid`` is the gateway's, py-spy's child).
    """

    def __init__(self, procs: Processes, workdir: Path, name: str, service: Service,
                 token: str, profile_out: Path | None = None) -> None:
        super().__init__(procs, workdir, name)
        self.backup = self.dir / "backup"
        self.backup.mkdir()
        self.argv = self.twistd_argv(LOGGER, "--backup-path", str(self.backup))
        env = child_env(
            SOURCE_DIR,
            CONFIG_SERVICE_ENDPOINT=f"http://{LOCALHOST}:{service.port}",
            CONFIG_SERVICE_AUTH=token,
            TELEMETRY_LOGS_STD="none",
        )
        argv = self.argv
        self.spy: subprocess.Popen[bytes] | None = None
        self.profile_out = profile_out
        if profile_out is not None:
            argv = [find_py_spy(), "record", "--rate", "250", "--format", "raw",
                    "-o", str(profile_out), "--", *self.argv]
        self.launch(argv, env)
        if profile_out is not None:
            self.spy = self.proc
            self.pid = self._child_of(self.proc.pid)

    @staticmethod
    def _child_of(pid: int, timeout: float = 10.0) -> int:
        """The PID of py-spy's child (the gateway)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    children = (task / "children").read_text().split()
                except OSError:
                    continue
                if children:
                    return int(children[0])
            time.sleep(0.005)
        raise BenchError("py-spy started no gateway process")

    def stop(self) -> None:
        if self.spy is not None:
            # The gateway by its PID; py-spy then writes its profile and exits.
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        super().stop()


# --- part 1: change to served ----------------------------------------------


class SteadyTraffic:
    """
    A thread sending GET ``path`` to the gateway every ``interval`` seconds
    (one keep-alive connection), recording each request's latency: what
    other traffic sees while the gateway applies changes.
    """

    def __init__(self, port: int, path: str, interval: float) -> None:
        self.client = Client(port, timeout=10.0)
        self.path = path
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                status, _ = self.client.request("GET", self.path)
                if status != 200:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
            self.latencies_ms.append((time.monotonic() - t0) * 1000)
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=15)
        self.client.close()
        lat = self.latencies_ms
        return {
            "requests": len(lat), "errors": self.errors,
            "p50_ms": round(percentile(lat, 50), 2), "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 1) if lat else None,
            "over_100ms": sum(1 for v in lat if v > 100),
        }


def measure_changes(manage: Management, gateway: Gateway, backends: Backends, gateway_id: str,
                    iterations: int, poll: float, timeout: float, prefix: str,
                    label: str, steady_path: str | None = None) -> dict[str, Any]:
    """
    ``iterations`` rounds of create (assign) / update (path + serviceUrl) /
    delete, each timed from the management call's return to the expected
    answer on the gateway's traffic port. With ``steady_path``, other
    traffic runs alongside (a request to that path every ``poll``): first
    1 s alone, then during the changes; its latencies are in ``steady``.
    """
    poller = Poller(gateway.http_port, poll, timeout)
    results: dict[str, Any] = {
        k: {"latency_ms": [], "call_ms": [], "polls": []} for k in ("create", "update", "delete")
    }
    steady: SteadyTraffic | None = None
    if steady_path is not None:
        quiet = SteadyTraffic(gateway.http_port, steady_path, poll)
        quiet.start()
        time.sleep(1.0)
        results["steady_quiet"] = quiet.stop()
        steady = SteadyTraffic(gateway.http_port, steady_path, poll)
        steady.start()
    since = time.time()

    def record(kind: str, call_started: float, returned: float, served: float,
               polls: int) -> None:
        results[kind]["latency_ms"].append((served - returned) * 1000)
        results[kind]["call_ms"].append((returned - call_started) * 1000)
        results[kind]["polls"].append(polls)

    try:
        for i in range(iterations):
            api_id = f"{prefix}{i:03d}"
            path, new_path = f"{prefix}-c{i:03d}", f"{prefix}-u{i:03d}"
            manage.ok("PUT", f"/apis/{api_id}",
                      {"path": path, "serviceUrl": backends.url("A") + f"/a{i}"})
            t0 = time.monotonic()
            manage.ok("PUT", f"/gateways/{gateway_id}/apis/{api_id}")
            t1 = time.monotonic()
            served, polls = poller.until(f"/{path}/x", served_by("A"))
            record("create", t0, t1, served, polls)

            t0 = time.monotonic()
            manage.ok("PUT", f"/apis/{api_id}",
                      {"path": new_path, "serviceUrl": backends.url("B") + f"/b{i}"})
            t1 = time.monotonic()
            served, polls = poller.until(f"/{new_path}/x", served_by("B"))
            record("update", t0, t1, served, polls)

            t0 = time.monotonic()
            manage.ok("DELETE", f"/apis/{api_id}")
            t1 = time.monotonic()
            served, polls = poller.until(f"/{new_path}/x", is_404)
            record("delete", t0, t1, served, polls)
    finally:
        poller.client.close()
        if steady is not None:
            results["steady"] = steady.stop()
    time.sleep(0.2)  # the last change's log lines
    results["gateway_log"] = {"rebuild_ms": rebuild_gaps(gateway.events(), since)}
    summary = ", ".join(
        f"{k} p50 {percentile(results[k]['latency_ms'], 50):.1f} ms"
        for k in ("create", "update", "delete")
    )
    if steady is not None:
        summary += (f"; other traffic: alone {results['steady_quiet']}, "
                    f"during the changes {results['steady']}")
    rebuilds = results["gateway_log"]["rebuild_ms"]
    print(f"  {label}: {iterations} rounds; {summary}; gateway log: changes applied → "
          f"generation live p50 {percentile(rebuilds, 50):.1f} ms ({len(rebuilds)} rebuilds)",
          flush=True)
    return results


def rebuild_gaps(events: list[dict[str, Any]], since: float) -> list[float]:
    """
    From the gateway's log: for each "Applied N cloud configuration changes"
    after ``since``, the ms until the next "Configuration generation N live"
    (the reconciler's coalescing delay, then translate, route table, swap).
    """
    gaps = []
    applied: float | None = None
    for event in events:
        if event["log_time"] < since:
            continue
        text = str(event.get("log_format", ""))
        if text.startswith("Applied {count} cloud configuration changes"):
            if applied is None:
                applied = event["log_time"]
        elif text.startswith(LOG_LIVE) and applied is not None:
            gaps.append(round((event["log_time"] - applied) * 1000, 1))
            applied = None
    return gaps


# --- part 2: populate, snapshot, load ---------------------------------------


def populate(manage_port: int, gateway_id: str, apis: int, operations: int,
             backend_url: str, workers: int, deadline: float) -> dict[str, Any]:
    """
    ``apis`` APIs with ``operations`` operations each, assigned to
    ``gateway_id``, through the management REST API on ``workers``
    keep-alive connections (each worker does whole APIs, in order: the
    API, its operations, its assignment).
    """
    counter = {"calls": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def one(index: int, manage: Management) -> None:
        api_id = f"api{index:04d}"
        manage.ok("PUT", f"/apis/{api_id}", {
            "path": f"api-{index:04d}",
            "serviceUrl": f"{backend_url}/svc{index:04d}",
            "displayName": f"API {index}",
        })
        for j in range(operations):
            manage.ok("PUT", f"/apis/{api_id}/operations/op{j}", {
                "method": METHODS[j % len(METHODS)],
                "urlTemplate": f"/items{j}/{{id}}" if j % 2 == 0 else f"/items{j}/{{id}}/detail",
            })
        manage.ok("PUT", f"/gateways/{gateway_id}/apis/{api_id}")
        with lock:
            counter["calls"] += operations + 2

    def worker(indices: range) -> None:
        manage = Management(manage_port)
        try:
            for index in indices:
                if stop.is_set() or time.monotonic() > deadline:
                    raise BenchError("populating the service took too long (--time-limit)")
                one(index, manage)
        finally:
            manage.close()

    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(worker, range(w, apis, workers)) for w in range(workers)]
        last_report = started
        while not all(f.done() for f in futures):
            time.sleep(0.2)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(f"  populating: {counter['calls']} calls, "
                      f"{last_report - started:.0f} s", flush=True)
        for f in futures:
            f.result()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
    elapsed = time.monotonic() - started
    return {
        "method": f"management REST API, {workers} keep-alive connections",
        "calls": counter["calls"],
        "seconds": round(elapsed, 2),
        "calls_per_second": round(counter["calls"] / elapsed, 1),
    }


def time_snapshot(port: int, gateway_id: str, token: str, count: int) -> dict[str, Any]:
    """GET the snapshot ``count`` times on a new connection each: total and first-byte times."""
    totals, firsts, sizes, apis = [], [], [], 0
    for _ in range(count):
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=60)
        try:
            t0 = time.monotonic()
            conn.request("GET", f"/gateways/{gateway_id}/configuration",
                         headers={"Authorization": token})
            response = conn.getresponse()
            t1 = time.monotonic()
            body = response.read()
            t2 = time.monotonic()
        finally:
            conn.close()
        if response.status != 200:
            raise BenchError(f"snapshot: {response.status} {body[:300]!r}")
        totals.append((t2 - t0) * 1000)
        firsts.append((t1 - t0) * 1000)
        sizes.append(len(body))
        apis = len(json.loads(body)["apis"])
    return {
        "count": count,
        "total_ms": [round(v, 1) for v in totals],
        "first_byte_ms": [round(v, 1) for v in firsts],
        "median_total_ms": round(statistics.median(totals), 1),
        "median_first_byte_ms": round(statistics.median(firsts), 1),
        "bytes": sizes[-1],
        "apis": apis,
    }


def load_once(procs: Processes, workdir: Path, run: int, service: Service, token: str,
              args: argparse.Namespace, probe_path: str, profile_out: Path | None,
              keep: bool) -> tuple[dict[str, Any], Gateway | None]:
    """
    Start a fresh gateway on the large configuration; time it to /readyz
    200 and to the first request served; read its log's phases.
    Returns the figures, and the gateway when ``keep`` (still running).
    """
    gateway = Gateway(procs, workdir, f"gateway-load-{run}", service, token, profile_out)
    ready = first = None
    try:
        ready = gateway.wait_ready(args.load_timeout)
        client = Client(gateway.http_port, timeout=10)
        try:
            status, body = client.request("GET", probe_path)
        finally:
            client.close()
        first = time.monotonic()
        if status != 200 or not body.startswith(b"A "):
            raise BenchError(f"GET {probe_path} after ready: {status} {body[:200]!r}")
        rss = gateway.rss_kib()
        if keep:
            # Wait for the backup write too, so the change measurements
            # that follow do not overlap it.
            wait_until("the gateway's backup", lambda: _first(gateway.events(), LOG_BACKUP)
                       is not None, 60, interval=0.1)
    finally:
        if not keep:
            gateway.stop()
    events = gateway.events()
    t0 = gateway.started

    def at(prefix: str, namespace: str | None = None, **fields: Any) -> float | None:
        event = _first(events, prefix, namespace, **fields)
        return None if event is None else round((event["log_time"] - t0) * 1000, 1)

    applied = _first(events, LOG_APPLIED)
    figures = {
        "ready_ms": round((ready - gateway.started_mono) * 1000, 1),
        "first_request_ms": round((first - gateway.started_mono) * 1000, 1),
        "rss_mib": None if rss is None else round(rss / 1024, 1),
        # From the gateway's own log, ms after the process was started.
        "log_first_event_ms": round((events[0]["log_time"] - t0) * 1000, 1) if events else None,
        "log_cloud_source_built_ms": at(LOG_CLOUD),
        "log_starting_ms": at(LOG_STARTING),
        "log_fetch_connect_ms": at(LOG_FACTORY, CLIENT_NAMESPACE),
        "log_snapshot_applied_ms": at(LOG_APPLIED),
        "log_generation_live_ms": at(LOG_LIVE, number=1),
        "log_backup_written_ms": at(LOG_BACKUP),
        "log_apis": None if applied is None else applied.get("apis"),
    }
    fields = ", ".join(f"{k} {v}" for k, v in figures.items())
    print(f"  run {run}: {fields}", flush=True)
    return figures, (gateway if keep else None)


# --- report -----------------------------------------------------------------


def change_rows(label: str, results: dict[str, dict[str, list[float]]]) -> list[str]:
    rows = []
    what = {
        "create": "create (assign API) → served by A",
        "update": "update path + serviceUrl → served by B",
        "delete": "delete → 404",
    }
    for kind, data in results.items():
        if kind not in what:
            continue
        lat = data["latency_ms"]
        rows.append(
            f"| {label} | {what[kind]} | {len(lat)} | {fmt(percentile(lat, 50))} | "
            f"{fmt(percentile(lat, 95))} | {fmt(max(lat))} | "
            f"{fmt(percentile(data['call_ms'], 50))} |"
        )
    return rows


def print_report(report: dict[str, Any]) -> None:
    env = report["environment"]
    s = report["settings"]
    print()
    print(machine_line(env))
    print()
    print(f"### Change to served (poll every {s['poll_ms']:g} ms, ms from the management "
          "call's return)")
    print()
    print("| configuration | change | n | p50 ms | p95 ms | max ms | management call p50 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    labels = (("1 API", "changes_small"),
              (f"{s['apis']:,} APIs × {s['operations']}", "changes_large"))
    for label, key in labels:
        if report.get(key):
            for row in change_rows(label, report[key]):
                print(row)
    for label, key in labels:
        gaps = (report.get(key) or {}).get("gateway_log", {}).get("rebuild_ms")
        if gaps:
            print(f"\nGateway log, {label}: \"Applied N cloud configuration changes\" → "
                  f"\"Configuration generation N live\" (20 ms coalescing delay, translate, route "
                  f"table, swap): p50 {percentile(gaps, 50):.1f} ms, p95 "
                  f"{percentile(gaps, 95):.1f} ms, max {max(gaps):.1f} ms over {len(gaps)} "
                  "rebuilds.")
    steady = report.get("steady_large")
    if steady:
        quiet, during = steady["steady_quiet"], steady["steady"]
        rounds = len(steady["create"]["latency_ms"])
        print()
        print(f"Other traffic on the {s['apis']:,}-API gateway (GET of an unchanged API every "
              f"{s['poll_ms']:g} ms, one connection), alone for 1 s, then during {rounds} more "
              "rounds of changes:")
        print()
        print("| other traffic | requests | p50 ms | p99 ms | max ms | > 100 ms | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, data in (("no changes", quiet), ("during the changes", during)):
            print(f"| {label} | {data['requests']} | {fmt(data['p50_ms'], 2)} | "
                  f"{fmt(data['p99_ms'], 2)} | {fmt(data['max_ms'])} | {data['over_100ms']} | "
                  f"{data['errors']} |")
    load = report.get("load")
    if not load:
        return
    pop = load["populate"]
    snap = load["snapshot"]
    runs = load["runs"]
    base = load.get("baseline") or {}
    n = len(runs)
    print()
    print(f"### Snapshot load: {s['apis']:,} APIs × {s['operations']} operations "
          f"(median of {n}, min–max in brackets)")
    print()
    print("| measurement | value |")
    print("|---|---:|")
    print(f"| populate ({pop['method']}) | {pop['calls']:,} calls in {pop['seconds']:.1f} s "
          f"({pop['calls_per_second']:,.0f} calls/s) |")
    print(f"| snapshot endpoint alone: GET …/configuration, total ms (median of "
          f"{snap['count']}) | {fmt(snap['median_total_ms'])} |")
    print(f"| snapshot endpoint: first byte ms (service's query + JSON encoding) | "
          f"{fmt(snap['median_first_byte_ms'])} |")
    print(f"| snapshot size | {snap['bytes'] / 1e6:.2f} MB ({snap['apis']:,} APIs) |")
    print(f"| gateway start → /readyz 200, s | "
          f"{spread([r['ready_ms'] for r in runs], 0.001)} |")
    print(f"| gateway start → first request served, s | "
          f"{spread([r['first_request_ms'] for r in runs], 0.001)} |")
    if base:
        print(f"| for comparison: start → /readyz 200 with 1 API, s | "
              f"{fmt(base['ready_ms'] / 1000, 2)} |")
    def gap(a: str, b: str) -> list[float | None]:
        return [None if r[a] is None or r[b] is None else r[b] - r[a] for r in runs]

    print(f"| gateway log: start → twistd starting up (interpreter, imports, service tree), s | "
          f"{spread([r['log_starting_ms'] for r in runs], 0.001)} |")
    print(f"| gateway log: starting up → snapshot applied (services start, fetch, JSON parse, "
          f"model objects, store), s | "
          f"{spread(gap('log_starting_ms', 'log_snapshot_applied_ms'), 0.001)} |")
    print(f"| gateway log: snapshot applied → generation 1 live (translate, route table, "
          f"swap), s | {spread(gap('log_snapshot_applied_ms', 'log_generation_live_ms'), 0.001)} |")
    ready_after = [r["ready_ms"] - r["log_generation_live_ms"]
                   for r in runs if r["log_generation_live_ms"] is not None]
    print(f"| generation live → /readyz 200 seen, ms | {spread(ready_after, 1.0, 1)} |")
    print(f"| gateway RSS after ready, MiB | {spread([r['rss_mib'] for r in runs], 1.0, 0)} |")


def environment() -> dict[str, Any]:
    try:
        from importlib.metadata import version

        twisted_version = version("twisted")
    except ImportError:  # importlib.metadata.PackageNotFoundError is one
        twisted_version = "unknown"

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(SOURCE_DIR), *argv], capture_output=True,
                                  timeout=10, check=False)
            return done.stdout.decode().strip() if done.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    if git("rev-parse", "--show-toplevel") == str(SOURCE_DIR):
        revision = git("rev-parse", "--short", "HEAD") or "unknown"
        if git("status", "--porcelain", "--untracked-files=no"):
            revision += " + uncommitted changes"
    else:
        revision = f"the tree in {SOURCE_DIR} (not a git checkout)"
    return {**machine(), "twisted": twisted_version, "revision": revision}


# --- main -------------------------------------------------------------------


def _on_signal(signum: int, frame: Any) -> None:
    if signum == signal.SIGALRM:
        raise BenchError("the time limit (--time-limit) was reached")
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Configuration service: change-to-served latency and snapshot load time.")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 10 changes, 200 APIs, 1 gateway start")
    parser.add_argument("--iterations", type=int, default=None,
                        help="change rounds (create, update, delete) on the 1-API gateway "
                             "(default 50, --quick 10; at most 500)")
    parser.add_argument("--large-iterations", type=int, default=None,
                        help="change rounds against the large configuration "
                             "(default 20, --quick 5; 0: skip)")
    parser.add_argument("--apis", type=int, default=None, help="APIs of part 2 (default 2000)")
    parser.add_argument("--operations", type=int, default=10, help="operations per API")
    parser.add_argument("--repeat", type=int, default=None,
                        help="fresh gateway starts on the large configuration (default 3)")
    parser.add_argument("--workers", type=int, default=8,
                        help="parallel management connections while populating")
    parser.add_argument("--snapshot-gets", type=int, default=5,
                        help="GETs of the snapshot endpoint alone")
    parser.add_argument("--poll-ms", type=float, default=2.0,
                        help="interval between gateway requests while waiting for a change")
    parser.add_argument("--change-timeout", type=float, default=10.0,
                        help="seconds one change may take to be served")
    parser.add_argument("--ready-timeout", type=float, default=30.0,
                        help="seconds the service or a small gateway may take to start")
    parser.add_argument("--load-timeout", type=float, default=180.0,
                        help="seconds a gateway may take to become ready on the large snapshot")
    parser.add_argument("--time-limit", type=float, default=1800.0,
                        help="seconds the whole run may take")
    parser.add_argument("--skip", choices=("changes", "load"), action="append", default=[],
                        help="leave out part 1 (changes) or part 2 (load)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile with py-spy (not part of the figures): attached "
                             "to the large gateway during extra change rounds, and one more "
                             "gateway start under it; raw stacks to bench/out/, top functions "
                             "printed")
    parser.add_argument("--source", type=Path, default=REPO_DIR,
                        help="the tree to run the service and the gateway from (put first on "
                             "PYTHONPATH; default this checkout), e.g. a commit exported with "
                             "git archive while the checkout is being edited")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out",
                        help="where the JSON (and --profile's stacks) go (default: %(default)s)")
    parser.add_argument("--keep-temp", action="store_true",
                        help="keep the temporary directory (database, logs)")
    parser.add_argument("--serve-backends", metavar="NAME=PORT,...", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_backends:
        return serve_backends(args.serve_backends)

    global SOURCE_DIR
    SOURCE_DIR = args.source.resolve()
    if not (SOURCE_DIR / "gateway" / "tap.py").exists() or not (
        SOURCE_DIR / "twisted" / "plugins" / "apimgw_config.py"
    ).exists():
        parser.error(f"--source {SOURCE_DIR}: no apimgw tree there")
    quick = args.quick
    args.iterations = args.iterations if args.iterations is not None else (10 if quick else 50)
    args.large_iterations = (args.large_iterations if args.large_iterations is not None
                             else (5 if quick else 20))
    args.apis = args.apis if args.apis is not None else (200 if quick else 2000)
    args.repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
    if not (1 <= args.iterations <= 500 and 0 <= args.large_iterations <= 500):
        parser.error("--iterations must be 1..500 and --large-iterations 0..500")
    if not (1 <= args.apis <= 20000 and 0 <= args.operations <= 50 and 1 <= args.repeat <= 10):
        parser.error("--apis 1..20000, --operations 0..50, --repeat 1..10")
    if not (1 <= args.workers <= 32 and 1 <= args.snapshot_gets <= 50 and args.poll_ms > 0):
        parser.error("--workers 1..32, --snapshot-gets 1..50, --poll-ms > 0")

    stamp = timestamp()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(max(1, int(args.time_limit)))
    procs = Processes(cwd=SOURCE_DIR)
    workdir = Path(tempfile.mkdtemp(prefix="apimgw-config-bench-"))
    started = time.monotonic()
    report: dict[str, Any] = {
        "timestamp": stamp,
        "command": command_line("bench/config_bench.py", argv),
        "environment": environment(),
        "settings": {
            "iterations": args.iterations, "large_iterations": args.large_iterations,
            "apis": args.apis, "operations": args.operations, "repeat": args.repeat,
            "workers": args.workers, "poll_ms": args.poll_ms,
            "change_timeout_s": args.change_timeout, "source": str(SOURCE_DIR),
        },
    }
    busy = report["environment"]["cpu_busy_before"] = cpu_busy()
    print(f"{report['environment']['cpu_count']} CPUs; temporary directory {workdir}",
          flush=True)
    if busy is not None and busy > 0.1:
        print(f"warning: the CPUs are {busy:.0%} busy with other work before the run; the "
              "figures will be high and noisy", flush=True)
    poll = args.poll_ms / 1000
    profile_lines: list[str] = []
    large_gateway: Gateway | None = None
    try:
        service = Service(procs, workdir, args)
        print(f"service: pid {service.proc.pid}, gateway API {LOCALHOST}:{service.port}, "
              f"management {LOCALHOST}:{service.management_port}", flush=True)
        backends = Backends(procs, workdir, Path(__file__).resolve(), child_env(SOURCE_DIR))
        print(f"backends: pid {backends.proc.pid}, A {backends.url('A')}, B {backends.url('B')}",
              flush=True)
        manage = Management(service.management_port)

        # Part 1: change to served on a one-API configuration.
        manage.ok("PUT", "/gateways/bench", {})
        manage.ok("PUT", "/apis/seed", {"path": "seed", "serviceUrl": backends.url("A") + "/s"})
        manage.ok("PUT", "/gateways/bench/apis/seed")
        token = service.token("bench")
        if "changes" not in args.skip:
            print("[part 1] change to served, 1-API configuration", flush=True)
            gateway = Gateway(procs, workdir, "gateway-small", service, token)
            try:
                ready = gateway.wait_ready(args.ready_timeout)
                report["baseline"] = {"ready_ms": round((ready - gateway.started_mono) * 1000, 1)}
                print(f"  gateway pid {gateway.pid} ready after "
                      f"{ready - gateway.started_mono:.2f} s", flush=True)
                Poller(gateway.http_port, poll, args.change_timeout).until(
                    "/seed/x", served_by("A"))
                report["changes_small"] = measure_changes(
                    manage, gateway, backends, "bench", args.iterations, poll,
                    args.change_timeout, "chg", "1 API")
            finally:
                gateway.stop()

        # Part 2: populate, snapshot alone, fresh gateways on the large configuration.
        if "load" not in args.skip:
            print(f"[part 2] snapshot load: {args.apis} APIs x {args.operations} operations",
                  flush=True)
            manage.ok("PUT", "/gateways/load", {})
            pop = populate(service.management_port, "load", args.apis, args.operations,
                           backends.url("A"), args.workers,
                           started + args.time_limit)
            print(f"  populated: {pop['calls']} calls in {pop['seconds']} s "
                  f"({pop['calls_per_second']} calls/s)", flush=True)
            load_token = service.token("load")
            snap = time_snapshot(service.port, "load", load_token, args.snapshot_gets)
            print(f"  snapshot endpoint: {snap['bytes']} bytes, {snap['apis']} APIs, "
                  f"total {snap['total_ms']} ms, first byte {snap['first_byte_ms']} ms",
                  flush=True)
            last = args.apis - 1
            probe = f"/api-{last:04d}/items0/42"
            runs = []
            for run in range(1, args.repeat + 1):
                keep = run == args.repeat and args.large_iterations > 0
                figures, kept = load_once(procs, workdir, run, service, load_token, args, probe,
                                          None, keep)
                runs.append(figures)
                if kept is not None:
                    large_gateway = kept
            report["load"] = {"populate": pop, "snapshot": snap, "runs": runs,
                              "baseline": report.get("baseline")}
            if large_gateway is not None:
                print(f"[part 1 again] change to served, {args.apis}-API configuration",
                      flush=True)
                report["changes_large"] = measure_changes(
                    manage, large_gateway, backends, "load", args.large_iterations, poll,
                    args.change_timeout, "big", f"{args.apis} APIs")
                rounds = min(10, args.large_iterations)
                print(f"[other traffic] {rounds} more rounds with requests to {probe} "
                      f"every {args.poll_ms:g} ms alongside", flush=True)
                report["steady_large"] = measure_changes(
                    manage, large_gateway, backends, "load", rounds, poll,
                    args.change_timeout, "stl", f"{args.apis} APIs + other traffic",
                    steady_path=probe)
                if args.profile:
                    out = args.out_dir / f"config-{stamp}-changes.pyspy.txt"
                    print(f"[profile] the changes again, py-spy attached → {out}", flush=True)
                    with py_spy_attached(procs, large_gateway.pid, out):
                        measure_changes(manage, large_gateway, backends, "load",
                                        args.large_iterations, poll, args.change_timeout, "spy",
                                        "profiled, not reported")
                    lines = summarize_profile(out, *PROFILED)
                    profile_lines += ["changes on the large configuration:", *lines]
                    print("\n".join(f"  {line}" for line in lines), flush=True)
                large_gateway.stop()
                large_gateway = None
            if args.profile:
                out = args.out_dir / f"config-{stamp}-load.pyspy.txt"
                print(f"[profile] one more gateway start under py-spy → {out}", flush=True)
                load_once(procs, workdir, 0, service, load_token, args, probe, out, False)
                lines = summarize_profile(out, *PROFILED)
                profile_lines += ["gateway start on the large configuration:", *lines]
                print("\n".join(f"  {line}" for line in lines), flush=True)
        manage.close()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: stopping the processes started", file=sys.stderr, flush=True)
        raise
    finally:
        signal.alarm(0)
        if large_gateway is not None:
            large_gateway.stop()
        procs.stop_all()
        remove_workdir(workdir, args.keep_temp)

    report["elapsed_s"] = round(time.monotonic() - started, 1)
    if profile_lines:
        report["profile_top"] = profile_lines
    print_report(report)
    out = save_report(args.out_dir, "config", stamp, report)
    print(f"\ncommand: {report['command']}")
    print(f"results: {out} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
