"""
Side-by-side reverse-proxy benchmark: apimgw against nginx and Twisted's
stock ``ReverseProxyResource``, in one run, on one machine.

The setup is the one of the "Hot path budget" in the design brief: an nginx
backend returning a fixed ~100-byte body; wrk with 50 keep-alive
connections; wrk and the backend pinned to one CPU, the proxy under test
pinned to the other. Every case is measured with the same wrk command, one
after the other:

  backend      the backend alone (the ceiling of the load side)
  nginx        nginx 1 worker, upstream keepalive 64
  stock        twisted.web.proxy.ReverseProxyResource (bench/stock_proxy.py)
  apimgw-none  apimgw, TELEMETRY_LOGS_STD=none
  apimgw-text  apimgw, TELEMETRY_LOGS_STD=text, log written to /dev/null
  apimgw-policy apimgw, access log none, an APIM API with a typical
               pipeline: subscription key check + set-header + rewrite-uri
               (wrk sends the key and the operation's path; compare with
               apimgw-none for the added cost)

Each proxy is started, polled until it answers with the backend's body,
warmed up, measured, and stopped by its PID (SIGTERM, then SIGKILL). The
results are printed as a table with the apimgw ratios and written as JSON
to bench/out/proxy-<timestamp>.json.

With ``--interleave`` every proxy is started at once (all pinned to the
proxy CPU; the idle ones cost nothing) and the cases are measured in
``--repeat`` rounds of one run each, so round ``i`` of nginx and of apimgw
ran within the same minute: the ratio of each round, and their median,
compare the two on the same machine, where the one-after-the-other ratio
also measures how the shared machine's speed drifted between the cases.

With ``--workers N`` (N > 1) apimgw runs N worker processes
(``GATEWAY_WORKERS``, docs/workers.md) and nginx N workers, and nothing is
pinned: on the 2-CPU machine the proxies' workers share both CPUs with wrk
and the backend, so the figures are whole-machine throughput, and the CPU
per request (the proxy's processes, supervisor and workers included, or
nginx's master and workers) is the comparable figure.

Run: python bench/proxy_bench.py [--duration 10] [--connections 50]
     [--threads 1] [--only backend,nginx,stock] [--profile] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import (
    BENCH_DIR,
    LOCALHOST,
    REPO_DIR,
    BenchError,
    Processes,
    cpu_busy,
    free_port,
    interpreter_of,
    python_build,
    remove_workdir,
    save_report,
    steal_share,
    steal_ticks,
    tail,
    timestamp,
    twisted_version,
)

STATUS_PATH = "/status-0123456789abcdef"

#: The policy case's API: a subscription key, a header set and the URL
#: rewritten from the operation's template parameter on every request.
POLICY_CONFIG = """\
apis:
  - name: bench
    path: bench
    serviceUrl: http://{host}:{port}
    subscriptionRequired: true
    operations:
      - {{name: get-item, method: GET, urlTemplate: "/items/{{id}}"}}
subscriptions:
  - {{name: bench, scope: /apis, primaryKey: bench-key-0001}}
policies:
  - scope: api
    apiId: bench
    xml: |
      <policies>
        <inbound>
          <base />
          <set-header name="X-Bench" exists-action="override"><value>1</value></set-header>
          <rewrite-uri template="/things/{{id}}" />
        </inbound>
        <backend><base /></backend>
        <outbound><base /></outbound>
        <on-error><base /></on-error>
      </policies>
"""

#: The policy case plus a per-subscription rate-limit that never refuses
#: (its cost is the counter check, not 429s): at product scope, as APIM
#: users put it.
LIMIT_CONFIG = POLICY_CONFIG.replace(
    "subscriptions:\n  - {{name: bench, scope: /apis, primaryKey: bench-key-0001}}",
    "products:\n  - {{name: gold, apis: [bench]}}\n"
    "subscriptions:\n  - {{name: bench, scope: /products/gold, primaryKey: bench-key-0001}}",
) + """\
  - scope: product
    productId: gold
    xml: |
      <policies>
        <inbound>
          <base />
          <rate-limit calls="1000000000" renewal-period="60" />
        </inbound>
        <backend><base /></backend>
        <outbound><base /></outbound>
        <on-error><base /></on-error>
      </policies>
"""

_KEYED = ("/bench/items/42", ("Ocp-Apim-Subscription-Key: bench-key-0001",))

#: Cases whose wrk requests differ from ``GET /``: (target, headers).
CASE_REQUESTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "apimgw-policy": _KEYED,
    "apimgw-limit-local": _KEYED,
    "apimgw-limit-redis": _KEYED,
}

CASES = (
    "backend", "nginx", "stock", "apimgw-none", "apimgw-text", "apimgw-policy",
    "apimgw-limit-local", "apimgw-limit-redis", "relay",
)
ALIASES = {
    "apimgw": ("apimgw-none", "apimgw-text", "apimgw-policy"),
    "limits": ("apimgw-policy", "apimgw-limit-local", "apimgw-limit-redis"),
    "all": CASES[:6],
}
LABELS = {
    "backend": "backend alone (nginx)",
    "nginx": "nginx reverse proxy",
    "stock": "Twisted ReverseProxyResource",
    "apimgw-none": "apimgw, access log none",
    "apimgw-text": "apimgw, access log text",
    "apimgw-policy": "apimgw, key + set-header + rewrite-uri",
    "apimgw-limit-local": "apimgw-policy + rate-limit, local counters",
    "apimgw-limit-redis": "apimgw-policy + rate-limit, Redis counters",
    "relay": "byte relay, apimgw reactor",
}


def _body(size: int = 100) -> str:
    """
    The backend's fixed response body: ``size`` bytes, safe inside an nginx
    single-quoted string.
    """
    head = '{"message":"hello from the apimgw benchmark backend","pad":"'
    tail = '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail


BODY = _body()


@dataclass
class CaseResult:
    """
    What one case measured, or why it could not be measured.
    """

    name: str
    label: str
    command: list[str] = field(default_factory=list)
    requests_per_sec: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    profile: str | None = None
    cpu_busy_before: float | None = None
    wrk_output: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    cpu_share: float | None = None
    cpu_us_per_request: float | None = None

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


# --- processes -------------------------------------------------------------

#: Seconds a stopped process gets between SIGTERM and SIGKILL.
STOP_TIMEOUT = 5.0


def _on_sigterm(signum: int, frame: Any) -> None:
    # Turn SIGTERM into SystemExit so that the try/finally in main() stops
    # everything this script started.
    raise SystemExit(128 + signum)


# --- environment -----------------------------------------------------------


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def ensure_tools() -> tuple[str, str]:
    """
    Return the paths of nginx and wrk, installing them with apt-get (the
    Debian packages nginx-light and wrk) only when one is missing.
    """
    nginx, wrk = _which("nginx"), _which("wrk")
    if nginx and wrk:
        return nginx, wrk
    print("nginx or wrk is missing: apt-get install -y nginx-light wrk", flush=True)
    prefix: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise BenchError("nginx and wrk are needed; install nginx-light and wrk as root")
        prefix = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, "apt-get", "install", "-y", "nginx-light", "wrk"]
    if subprocess.run(install, env=env, timeout=600, check=False).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run([*prefix, "apt-get", "update"], env=env, timeout=600, check=False)
        subprocess.run(install, env=env, timeout=600, check=True)
    nginx, wrk = _which("nginx"), _which("wrk")
    if not (nginx and wrk):
        raise BenchError("apt-get ran but nginx or wrk is still not on PATH")
    return nginx, wrk


def cpu_plan() -> tuple[int | None, int | None, str]:
    """
    Choose the CPU for the load side (wrk and the backend) and the CPU for
    the proxy under test. With fewer than two usable CPUs nothing is pinned.
    """
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:
        usable = list(range(os.cpu_count() or 1))
    if len(usable) < 2:
        return (
            None,
            None,
            (
                f"only {len(usable)} usable CPU: nothing pinned; wrk, the backend and the "
                "proxy share it, so the figures are not comparable with the design's table"
            ),
        )
    return (
        usable[0],
        usable[1],
        (
            f"wrk and backend on CPU {usable[0]}, proxy on CPU {usable[1]} "
            f"({len(usable)} usable CPUs)"
        ),
    )


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """
    ``argv`` run on one CPU with ``taskset -c`` (which execs, so the PID is
    the command's own).
    """
    if cpu is None:
        return list(argv)
    taskset = _which("taskset")
    if taskset is None:
        raise BenchError("taskset (util-linux) is needed to pin processes to CPUs")
    return [taskset, "-c", str(cpu), *argv]


def wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    timeout: float,
    ready_path: str = "/",
    log: Path | None = None,
    case: str = "",
) -> None:
    """
    Poll until ``ready_path`` answers 200 and the case's request (``/``
    for most) answers 200 with the backend's body; fail when the process
    exits or ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    target, header_lines = CASE_REQUESTS.get(case, ("/", ()))
    headers = dict(line.split(": ", 1) for line in header_lines)
    checks = [(ready_path, None)] if ready_path != "/" else []
    checks.append((target, BODY.encode()))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = f"\n{tail(log)}" if log else ""
            raise BenchError(f"exited with status {proc.returncode} before answering{detail}")
        try:
            for path, body in checks:
                conn = http.client.HTTPConnection(LOCALHOST, port, timeout=1.0)
                try:
                    conn.request("GET", path, headers=headers if path == target else {})
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                if response.status != 200:
                    raise BenchError(f"GET {path} answered {response.status}: {data[:200]!r}")
                if body is not None and data != body:
                    raise BenchError(f"GET {path} answered another body: {data[:200]!r}")
            return
        except (OSError, http.client.HTTPException, BenchError) as e:
            last = str(e) or type(e).__name__
        time.sleep(0.1)
    detail = f"\n{tail(log)}" if log else ""
    raise BenchError(f"not answering after {timeout:.0f} s (last: {last}){detail}")


# --- wrk -------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """
    Read req/s, the 50% and 99% latencies (ms), the request count and the
    error counts from the output of ``wrk --latency``.
    """
    result: dict[str, Any] = {
        "requests_per_sec": None,
        "p50_ms": None,
        "p99_ms": None,
        "requests": None,
        "non_2xx_3xx": 0,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }
    m = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if m:
        result["requests_per_sec"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if m:
            result[key] = _ms(m.group(1), m.group(2))
    m = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if m:
        result["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        result["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        result["non_2xx_3xx"] = int(m.group(1))
    return result


class Wrk:
    """
    The one wrk command every case is measured with.
    """

    def __init__(
        self, path: str, threads: int, connections: int, cpu: int | None, procs: Processes
    ) -> None:
        self.path = path
        self.threads = threads
        self.connections = connections
        self.cpu = cpu
        self.procs = procs

    def argv(self, port: int, seconds: int, case: str = "") -> list[str]:
        target, headers = CASE_REQUESTS.get(case, ("/", ()))
        return [
            self.path,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds}s",
            "--latency",
            *[arg for header in headers for arg in ("-H", header)],
            f"http://{LOCALHOST}:{port}{target}",
        ]

    def run(self, port: int, seconds: int, case: str = "") -> str:
        proc = self.procs.start(
            pinned(self.argv(port, seconds, case), self.cpu),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            out, _ = proc.communicate(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            raise BenchError(f"wrk did not finish within {seconds + 15} s") from None
        finally:
            self.procs.stop(proc)
        text = out.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise BenchError(f"wrk exited with status {proc.returncode}:\n{text}")
        return text


# --- cases -----------------------------------------------------------------


def _fill(template: str, **values: Any) -> str:
    text = (BENCH_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    left = re.findall(r"@[A-Z_]+@", re.sub(r"(?m)^\s*#.*$", "", text))
    if left:
        raise BenchError(f"{template}: placeholders left unfilled: {', '.join(left)}")
    return text


def start_nginx(
    procs: Processes,
    nginx: str,
    workdir: Path,
    name: str,
    template: str,
    cpu: int | None,
    workers: int = 1,
    **values: Any,
) -> tuple[subprocess.Popen[bytes], Path, list[str]]:
    """
    Start nginx in the foreground (``daemon off``) from its own prefix
    directory under ``workdir``, with ``workers`` worker processes.
    """
    prefix = workdir / name
    prefix.mkdir(mode=0o755)
    conf = prefix / "nginx.conf"
    text = _fill(template, prefix=prefix, body=BODY, **values)
    if workers != 1:
        if "worker_processes 1;" not in text:
            raise BenchError(f"{template}: no 'worker_processes 1;' to set {workers} workers in")
        text = text.replace("worker_processes 1;", f"worker_processes {workers};")
    conf.write_text(text)
    log = prefix / "error.log"
    argv = pinned(
        [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(log)],
        cpu,
    )
    with open(prefix / "stderr.log", "wb") as err:
        proc = procs.start(argv, stdout=err, stderr=subprocess.STDOUT)
    return proc, log, argv


@dataclass
class Settings:
    duration: int
    warmup: int
    repeat: int
    ready_timeout: float
    profile: bool
    profile_duration: int
    apimgw_cmd: str
    apimgw_from: str
    out_dir: Path
    stamp: str
    #: worker processes of the proxy under test (apimgw and nginx)
    workers: int = 1
    #: py-spy's output: ``flamegraph`` (SVG) or ``raw`` (collapsed stacks,
    #: one line per stack with its sample count: text to sort and grep)
    profile_format: str = "flamegraph"
    #: measure the cases in rounds (one run of each per round) instead of
    #: one case after the other
    interleave: bool = False


def _apimgw_argv(
    settings: Settings, http_port: int, admin_port: int, config: Path, backend_port: int
) -> list[str]:
    """
    The apimgw command. ``--apimgw-cmd`` is either the twistd to run (the
    plugin arguments are appended) or, when it contains ``{...}``
    placeholders, the whole command: ``{http}``, ``{admin}`` (strports),
    ``{http_port}``, ``{admin_port}``, ``{backend_port}``, ``{config}``,
    ``{python}``.
    """
    http = f"tcp:{http_port}:interface={LOCALHOST}"
    admin = f"tcp:{admin_port}:interface={LOCALHOST}"
    if "{" in settings.apimgw_cmd:
        filled = settings.apimgw_cmd.format(
            http=http,
            admin=admin,
            http_port=http_port,
            admin_port=admin_port,
            backend_port=backend_port,
            config=config,
            python=sys.executable,
        )
        return shlex.split(filled)
    return [
        *shlex.split(settings.apimgw_cmd),
        "-n",
        "--pidfile=",
        "apimgw",
        "--http",
        http,
        "--admin",
        admin,
        "--config",
        str(config),
    ]


def find_py_spy() -> str | None:
    """
    The py-spy next to this Python or on PATH, installed with pip into this
    Python's environment when missing; None when it cannot be had.
    """
    for candidate in (Path(sys.executable).parent / "py-spy", _which("py-spy")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    print("  py-spy is not installed: pip install py-spy", flush=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], timeout=300, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else _which("py-spy")


def profile_case(
    procs: Processes, wrk: Wrk, settings: Settings, name: str, pid: int, port: int
) -> str | None:
    """
    Record a flame graph of process ``pid`` with py-spy while wrk loads it.
    This run is not one of the measurements. Returns the SVG's path, or
    None when py-spy is unavailable or cannot attach.
    """
    py_spy = find_py_spy()
    if py_spy is None:
        print("  --profile: py-spy unavailable, skipped", flush=True)
        return None
    suffix = "svg" if settings.profile_format == "flamegraph" else "txt"
    out = settings.out_dir / f"proxy-{settings.stamp}-{name}.{suffix}"
    seconds = settings.profile_duration
    log = settings.out_dir / f"proxy-{settings.stamp}-{name}.py-spy.log"
    with open(log, "wb") as err:
        spy = procs.start(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                settings.profile_format,
                "-o",
                str(out),
            ],
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(1.0)
        if spy.poll() is not None:
            print(f"  --profile: py-spy could not attach, skipped: {tail(log, 400)}", flush=True)
            return None
        wrk.run(port, seconds, name)
        spy.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        print("  --profile: py-spy did not finish, skipped", flush=True)
        return None
    finally:
        procs.stop(spy)
    if not out.exists():
        print(f"  --profile: py-spy wrote nothing: {tail(log, 400)}", flush=True)
        return None
    log.unlink(missing_ok=True)
    print(f"  profile: {out}", flush=True)
    return str(out)


def _cpu_seconds(pid: int) -> float | None:
    """
    CPU time (user + system) used so far by process ``pid`` and its direct
    children (an nginx master's workers).
    """
    tick = os.sysconf("SC_CLK_TCK")

    def read(path: str) -> tuple[int, float] | None:
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # After the command: state ppid ... utime (14th field) stime (15th).
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick

    own = read(f"/proc/{pid}/stat")
    if own is None:
        return None
    total = own[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pid):
            child = read(f"/proc/{entry}/stat")
            if child is not None and child[0] == pid:
                total += child[1]
    return total


def measure(result: CaseResult, wrk: Wrk, port: int, settings: Settings, pid: int) -> None:
    """
    Warm up, then run wrk ``settings.repeat`` times; the result is the run
    with the median req/s (all runs are kept in ``result.runs``). Each run
    also records the CPU time process ``pid`` used: as a share of one CPU
    (near 1.0, the proxy is the bottleneck; well below, the load side is)
    and per request.
    """
    if settings.warmup > 0:
        wrk.run(port, settings.warmup, result.name)
    runs = [one_run(wrk, port, settings, pid, result.name) for _ in range(settings.repeat)]
    settle(result, runs, by_rate=True)


def one_run(
    wrk: Wrk, port: int, settings: Settings, pid: int, case: str
) -> tuple[dict[str, Any], str]:
    """
    One wrk run of ``settings.duration`` seconds: its figures (with the CPU
    time process ``pid`` used, and the CPU stolen meanwhile) and wrk's output.
    """
    before = _cpu_seconds(pid)
    steal_before = steal_ticks()
    started = time.monotonic()
    text = wrk.run(port, settings.duration, case)
    elapsed = time.monotonic() - started
    after = _cpu_seconds(pid)
    steal = steal_share(steal_before, steal_ticks())
    parsed = parse_wrk(text)
    if parsed["requests_per_sec"] is None or parsed["p99_ms"] is None:
        raise BenchError(f"could not read wrk's output:\n{text}")
    parsed["cpu_share"] = parsed["cpu_us_per_request"] = None
    parsed["steal"] = steal
    if steal is not None and steal > 0.02:
        print(
            f"  warning: {steal:.0%} of the CPU time was stolen by the hypervisor "
            "during this run: its figures are the host's load, not this machine's",
            flush=True,
        )
    if before is not None and after is not None:
        used = after - before
        parsed["cpu_share"] = round(used / elapsed, 3)
        if parsed["requests"]:
            parsed["cpu_us_per_request"] = round(used / parsed["requests"] * 1e6, 1)
    return parsed, text


def settle(result: CaseResult, runs: list[tuple[dict[str, Any], str]], *, by_rate: bool) -> None:
    """
    The result is the run with the median req/s. ``result.runs`` keeps
    every run (more than one), sorted by req/s when ``by_rate``, else in
    the order measured (interleaved rounds: round ``i`` of every case ran
    in the same stretch of time).
    """
    ranked = sorted(runs, key=lambda run: run[0]["requests_per_sec"])
    parsed, text = ranked[len(ranked) // 2]
    if len(runs) > 1:
        result.runs = [run for run, _ in (ranked if by_rate else runs)]
    result.wrk_output = text
    result.requests_per_sec = parsed["requests_per_sec"]
    result.p50_ms = parsed["p50_ms"]
    result.p99_ms = parsed["p99_ms"]
    result.requests = parsed["requests"]
    result.non_2xx_3xx = parsed["non_2xx_3xx"]
    result.socket_errors = parsed["socket_errors"]
    result.cpu_share = parsed["cpu_share"]
    result.cpu_us_per_request = parsed["cpu_us_per_request"]


def start_proxy(
    name: str,
    procs: Processes,
    settings: Settings,
    nginx: str,
    workdir: Path,
    port: int,
    backend_port: int,
    cpu: int | None,
) -> tuple[subprocess.Popen[bytes], Path, str, list[str]]:
    """
    Start the proxy of case ``name`` on ``port``, pinned to ``cpu``. Returns
    the process, its log file, the path that says it is ready, and the
    command.
    """
    if name == "nginx":
        proc, log, argv = start_nginx(
            procs,
            nginx,
            workdir,
            "nginx-proxy",
            "nginx-proxy.conf.in",
            cpu,
            workers=settings.workers,
            port=port,
            backend_port=backend_port,
        )
        return proc, log, "/", argv
    if name in ("stock", "relay"):
        script = "stock_proxy.py" if name == "stock" else "relay_floor.py"
        argv = pinned(
            [
                sys.executable,
                str(BENCH_DIR / script),
                "--port",
                str(port),
                "--backend-port",
                str(backend_port),
            ],
            cpu,
        )
        log = workdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = procs.start(argv, stdout=out, stderr=subprocess.STDOUT)
        return proc, log, "/", argv

    access_log = name.split("-", 1)[1]
    config = workdir / "apimgw.yaml"
    extra_env: dict[str, str] = {}
    if access_log == "policy":
        access_log = "none"
        config.write_text(POLICY_CONFIG.format(host=LOCALHOST, port=backend_port))
    elif access_log.startswith("limit-"):
        config.write_text(LIMIT_CONFIG.format(host=LOCALHOST, port=backend_port))
        if access_log == "limit-redis":
            url = os.environ.get("APIMGW_BENCH_REDIS_URL", "")
            if not url:
                raise BenchError("apimgw-limit-redis needs APIMGW_BENCH_REDIS_URL "
                                 "(run bench/ratelimit_bench.py)")
            extra_env["RATE_LIMIT_REDIS_URL"] = url
        access_log = "none"
    else:
        config.write_text(
            "routes:\n"
            "  - path: /\n"
            "    pathType: Prefix\n"
            f"    backend: http://{LOCALHOST}:{backend_port}\n"
        )
    env = {
        k: v for k, v in os.environ.items() if k.upper().replace(".", "_") != "TELEMETRY_LOGS_STD"
    }
    env["TELEMETRY_LOGS_STD"] = access_log
    env.update(extra_env)
    # Stop promptly: no drain delay and a short grace (nothing is in flight
    # once wrk has finished).
    env["GATEWAY_SHUTDOWN_DELAY"] = "0"
    env["GATEWAY_SHUTDOWN_GRACE"] = "2"
    env["GATEWAY_WORKERS"] = str(settings.workers)
    if settings.apimgw_from == "tree":
        # Benchmark the working tree: twistd then also finds the plugin in
        # the tree's twisted/plugins/.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_DIR), env.get("PYTHONPATH", "")) if p
        )
    argv = pinned(_apimgw_argv(settings, port, free_port(), config, backend_port), cpu)
    log = workdir / f"{name}.log"
    # twistd -n logs to stdout. Not "-l /dev/null": twistd's LogFile rotates
    # after 1 MB by renaming the file, and as root that would rename
    # /dev/null itself. So the text case's log goes to /dev/null through
    # stdout, and stderr (tracebacks before logging starts) to the file.
    with open(log, "wb") as out:
        stdout: IO[bytes] | int = out if access_log == "none" else subprocess.DEVNULL
        proc = procs.start(argv, env=env, stdout=stdout, stderr=out)
    return proc, log, STATUS_PATH, argv


@dataclass
class Bed:
    """What every case runs against: the processes, wrk, the settings, the backend, the CPU plan."""

    procs: Processes
    wrk: Wrk
    settings: Settings
    nginx: str
    workdir: Path
    backend_port: int
    backend_pid: int
    proxy_cpu: int | None


#: A started case: the port and PID to measure, and the process to stop (none for ``backend``).
Opened = tuple[int, int, "subprocess.Popen[bytes] | None"]


def _open_case(name: str, bed: Bed) -> tuple[CaseResult, Opened | None]:
    """
    Announce case ``name`` and start its proxy (none for ``backend``),
    waiting until it answers. Returns the result to fill, and what was
    opened, or ``None`` when the proxy could not start (the reason is in
    ``result.error``, and the process is stopped).
    """
    result = CaseResult(name=name, label=LABELS[name])
    print(f"[{name}] {LABELS[name]}", flush=True)
    result.cpu_busy_before = busy = cpu_busy()
    if busy is not None and busy > 0.1:
        print(
            f"  warning: the CPUs are {busy:.0%} busy with other work before this case; "
            "the figures will be low and noisy",
            flush=True,
        )
    settings = bed.settings
    if name == "backend":
        result.command = bed.wrk.argv(bed.backend_port, settings.duration)
        return result, (bed.backend_port, bed.backend_pid, None)
    port = free_port()
    proc = None
    try:
        proc, log, ready_path, result.command = start_proxy(
            name, bed.procs, settings, bed.nginx, bed.workdir, port, bed.backend_port, bed.proxy_cpu
        )
        print(f"  pid {proc.pid}: {shlex.join(result.command)}", flush=True)
        wait_ready(proc, port, settings.ready_timeout, ready_path, log, name)
    except BenchError as e:
        if proc is not None:
            bed.procs.stop(proc)
        result.error = str(e)
        print(f"  FAILED: {e}", flush=True)
        return result, None
    return result, (port, proc.pid, proc)


def run_case(name: str, bed: Bed) -> CaseResult:
    """
    Start the proxy of case ``name``, wait until it answers, warm it up,
    measure it and stop it. A failure is recorded in the result, and the
    other cases still run.
    """
    result, opened = _open_case(name, bed)
    if opened is None:
        return result
    port, pid, proc = opened
    settings = bed.settings
    try:
        measure(result, bed.wrk, port, settings, pid)
        if settings.profile and name.startswith("apimgw"):
            result.profile = profile_case(bed.procs, bed.wrk, settings, name, pid, port)
    except BenchError as e:
        result.error = str(e)
        print(f"  FAILED: {e}", flush=True)
        return result
    finally:
        if proc is not None:
            bed.procs.stop(proc)
    print(
        f"  {result.requests_per_sec:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, non-2xx/3xx {result.non_2xx_3xx}, "
        f"socket errors {result.errors}",
        flush=True,
    )
    return result


def run_interleaved(names: Sequence[str], bed: Bed) -> dict[str, CaseResult]:
    """
    Every case's proxy started at once (each pinned to ``proxy_cpu``; an
    idle one costs nothing), each warmed up, then ``settings.repeat``
    rounds of one run per case. Round ``i`` of every case ran within the
    same minute, so the ratio of two cases in one round compares them on
    the same machine: this machine's speed drifts by a third from one
    minute to the next (docs/benchmarks.md), far more than between two
    cases run side by side. A case that fails is left out of the later
    rounds; the others go on.
    """
    settings, wrk = bed.settings, bed.wrk
    results: dict[str, CaseResult] = {}
    live: dict[str, tuple[int, int]] = {}
    started: list[subprocess.Popen[bytes]] = []
    runs: dict[str, list[tuple[dict[str, Any], str]]] = {}
    try:
        for name in names:
            results[name], opened = _open_case(name, bed)
            if opened is None:
                continue
            port, pid, proc = opened
            live[name] = (port, pid)
            if proc is not None:
                started.append(proc)
        for name, (port, _) in live.items():
            if settings.warmup > 0:
                wrk.run(port, settings.warmup, name)
            runs[name] = []
        for round_number in range(1, settings.repeat + 1):
            for name, (port, pid) in list(live.items()):
                try:
                    parsed, text = one_run(wrk, port, settings, pid, name)
                except BenchError as e:
                    results[name].error = str(e)
                    print(f"  [{name}] FAILED in round {round_number}: {e}", flush=True)
                    del live[name]
                    continue
                runs[name].append((parsed, text))
                print(
                    f"  round {round_number} [{name}]: {parsed['requests_per_sec']:,.0f} req/s, "
                    f"p99 {parsed['p99_ms']:.2f} ms",
                    flush=True,
                )
        if settings.profile:
            for name, (port, pid) in live.items():
                if name.startswith("apimgw"):
                    results[name].profile = profile_case(bed.procs, wrk, settings, name, pid, port)
    finally:
        for proc in started:
            bed.procs.stop(proc)
    for name in live:
        settle(results[name], runs[name], by_rate=False)
    return results


# --- report ----------------------------------------------------------------


def ratios(results: dict[str, CaseResult], interleaved: bool = False) -> dict[str, dict[str, Any]]:
    """
    apimgw (log none and text) and the byte relay (the floor of a proxy on
    apimgw's reactor path) over stock Twisted and over nginx: req/s and p99
    ratios, for the pairs that were both measured (of the median runs).
    Interleaved, also each round's req/s ratio and their median: the
    figure least moved by the machine's drift.
    """
    out: dict[str, dict[str, Any]] = {}
    for mine in ("apimgw-none", "apimgw-text", "relay"):
        for other in ("stock", "nginx"):
            a, b = results.get(mine), results.get(other)
            if not a or not b or a.error or b.error:
                continue
            if not (a.requests_per_sec and b.requests_per_sec and a.p99_ms and b.p99_ms):
                continue
            pair: dict[str, Any] = {
                "requests_per_sec": round(a.requests_per_sec / b.requests_per_sec, 3),
                "p99": round(a.p99_ms / b.p99_ms, 3),
            }
            if interleaved and len(a.runs) == len(b.runs) > 1:
                rounds = [
                    round(x["requests_per_sec"] / y["requests_per_sec"], 3)
                    for x, y in zip(a.runs, b.runs, strict=True)
                ]
                pair["requests_per_sec_rounds"] = rounds
                pair["requests_per_sec_round_median"] = sorted(rounds)[len(rounds) // 2]
            out[f"{mine}/{other}"] = pair
    return out


_COLUMNS = (
    # title, width, format of the value
    ("case", 30, "<"),
    ("req/s", 9, ">"),
    ("p50 ms", 7, ">"),
    ("p99 ms", 7, ">"),
    ("proxy CPU", 9, ">"),
    ("CPU us/req", 10, ">"),
    ("non-2xx/3xx", 11, ">"),
    ("socket errors", 13, ">"),
)


def _row(values: Sequence[str]) -> str:
    cells = [f" {v:{align}{width}} " for v, (_, width, align) in zip(values, _COLUMNS, strict=True)]
    return "|" + "|".join(cells) + "|"


def print_table(
    results: dict[str, CaseResult],
    plan: str,
    wrk_cmd: str,
    interleaved: bool = False,
    python: str | None = None,
) -> None:
    """
    The results as a Markdown table, then the apimgw ratios and any
    failures. "proxy CPU" is the share of one CPU the proxy (for the
    backend case, the backend) used: near 100%, it is the bottleneck.
    """
    print()
    print(f"wrk: {wrk_cmd}")
    print(f"pinning: {plan}")
    print(f"python (apimgw): {python if python is not None else python_build()}")
    print()
    print(_row([title for title, _, _ in _COLUMNS]))
    print("|" + "|".join("-" * (width + 2) for _, width, _ in _COLUMNS) + "|")
    for name in CASES:
        r = results.get(name)
        if r is None:
            continue
        if r.error:
            print(_row([r.label, "failed"] + [""] * (len(_COLUMNS) - 2)))
            continue
        print(
            _row(
                [
                    r.label,
                    f"{r.requests_per_sec:,.0f}",
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.2f}",
                    "" if r.cpu_share is None else f"{r.cpu_share:.0%}",
                    "" if r.cpu_us_per_request is None else f"{r.cpu_us_per_request:.1f}",
                    str(r.non_2xx_3xx),
                    str(r.errors),
                ]
            )
        )
    found = ratios(results, interleaved)
    if found:
        print()
        for key, value in found.items():
            mine, other = key.split("/")
            rounds = ""
            if "requests_per_sec_rounds" in value:
                each = " ".join(f"{r:.2f}" for r in value["requests_per_sec_rounds"])
                rounds = f" (rounds {each}; median {value['requests_per_sec_round_median']:.2f}x)"
            print(
                f"{LABELS[mine]} / {LABELS[other]}: {value['requests_per_sec']:.2f}x req/s{rounds}, "
                f"{value['p99']:.2f}x p99"
            )
    for r in results.values():
        if r.error:
            print(f"\n{r.name} failed: {r.error}")


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "unknown"


def environment(nginx: str, wrk: str, gateway_python: str) -> dict[str, Any]:
    revision = _version(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"])
    return {
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        #: the gateway's interpreter (--apimgw-cmd's), not the bench's
        "python_build": gateway_python,
        "twisted": twisted_version(),
        "nginx": _version([nginx, "-v"]),
        "wrk": _version([wrk, "-v"]),
        "revision": revision,
    }


# --- main ------------------------------------------------------------------


def parse_cases(text: str) -> list[str]:
    chosen: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        names = ALIASES.get(word, (word,))
        for name in names:
            if name not in CASES:
                raise argparse.ArgumentTypeError(
                    f"unknown case {word!r}; choose from {', '.join(CASES + tuple(ALIASES))}"
                )
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise argparse.ArgumentTypeError("no case chosen")
    return [name for name in CASES if name in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    default_twistd = str(Path(sys.executable).parent / "twistd")
    parser = argparse.ArgumentParser(
        description="Compare apimgw with nginx and Twisted's stock reverse proxy.",
        epilog=f"cases: {', '.join(CASES)} (aliases: apimgw, all)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each case")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measurements per case; the median (by req/s) is reported",
    )
    parser.add_argument(
        "--only",
        type=parse_cases,
        default=list(ALIASES["all"]),
        help="comma-separated cases to run, e.g. backend,nginx,stock",
    )
    parser.add_argument(
        "--apimgw-cmd",
        default=default_twistd,
        help="twistd to run apimgw with (default: %(default)s), or a whole "
        "command with {http} {admin} {config} placeholders",
    )
    parser.add_argument(
        "--apimgw-from",
        choices=("tree", "installed"),
        default="tree",
        help="run the gateway from this checkout (PYTHONPATH, the default) or "
        "as installed with pip install .",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=30.0, help="seconds to wait for a proxy to answer"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record a py-spy flame graph of each apimgw case",
    )
    parser.add_argument(
        "--profile-duration",
        type=int,
        default=None,
        help="seconds of py-spy recording (default: --duration, at most 10)",
    )
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "raw"),
        default="flamegraph",
        help="py-spy output: an SVG flame graph, or raw collapsed stacks (text)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of apimgw (GATEWAY_WORKERS) and nginx; above 1 nothing is pinned",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="start every case's proxy at once and measure in --repeat rounds of one run per "
        "case, so that each round compares the cases in the same minute; the ratios then "
        "include each round's and their median",
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument(
        "--keep-temp", action="store_true", help="keep the temporary directory (configs and logs)"
    )
    args = parser.parse_args(argv)
    if args.threads > args.connections or min(args.duration, args.threads, args.repeat) < 1:
        parser.error("need --duration >= 1, --repeat >= 1 and 1 <= --threads <= --connections")
    if not 1 <= args.workers <= 64:
        parser.error("need 1 <= --workers <= 64")

    stamp = timestamp()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
        ready_timeout=args.ready_timeout,
        profile=args.profile,
        profile_duration=args.profile_duration or min(args.duration, 10),
        apimgw_cmd=args.apimgw_cmd,
        apimgw_from=args.apimgw_from,
        out_dir=args.out_dir,
        stamp=stamp,
        workers=args.workers,
        profile_format=args.profile_format,
        interleave=args.interleave,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs = Processes(stop_timeout=STOP_TIMEOUT)
    workdir = Path(tempfile.mkdtemp(prefix="apimgw-bench-"))
    os.chmod(workdir, 0o755)
    results: dict[str, CaseResult] = {}
    started = time.monotonic()
    try:
        nginx, wrk_path = ensure_tools()
        load_cpu, proxy_cpu, plan = cpu_plan()
        if args.workers > 1:
            load_cpu = proxy_cpu = None
            plan = (
                f"{args.workers} proxy workers (apimgw and nginx): nothing pinned; the proxies, "
                "wrk and the backend share every CPU"
            )
        print(f"pinning: {plan}", flush=True)
        wrk = Wrk(wrk_path, args.threads, args.connections, load_cpu, procs)

        backend_port = free_port()
        backend, backend_log, _ = start_nginx(
            procs,
            nginx,
            workdir,
            "nginx-backend",
            "nginx-backend.conf.in",
            load_cpu,
            port=backend_port,
        )
        print(f"backend: pid {backend.pid} on {LOCALHOST}:{backend_port}", flush=True)
        wait_ready(backend, backend_port, 10.0, "/", backend_log)

        bed = Bed(procs, wrk, settings, nginx, workdir, backend_port, backend.pid, proxy_cpu)

        def backend_alive() -> None:
            if backend.poll() is not None:
                raise BenchError(f"the backend exited:\n{tail(backend_log)}")

        if args.interleave:
            results.update(run_interleaved(args.only, bed))
            backend_alive()
        else:
            for name in args.only:
                results[name] = run_case(name, bed)
                backend_alive()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: stopping the processes started", file=sys.stderr, flush=True)
        raise
    finally:
        procs.stop_all()
        remove_workdir(workdir, args.keep_temp)

    wrk_cmd = shlex.join(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            f"http://{LOCALHOST}:PORT/",
        ]
    )
    interpreter = interpreter_of(args.apimgw_cmd)
    gateway_python = (
        python_build(interpreter) if interpreter is not None else f"unknown ({args.apimgw_cmd})"
    )
    print_table(results, plan, wrk_cmd, args.interleave, gateway_python)
    report = {
        "timestamp": stamp,
        "environment": environment(nginx, wrk_path, gateway_python),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeat": args.repeat,
            "connections": args.connections,
            "threads": args.threads,
            "wrk": wrk_cmd,
            "pinning": plan,
            "load_cpu": load_cpu,
            "proxy_cpu": proxy_cpu,
            "backend_body_bytes": len(BODY),
            "apimgw_cmd": args.apimgw_cmd,
            "apimgw_from": args.apimgw_from,
            "workers": args.workers,
            "interleave": args.interleave,
        },
        "cases": {name: asdict(r) for name, r in results.items()},
        "ratios": ratios(results, args.interleave),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    out = save_report(args.out_dir, "proxy", stamp, report)
    print(f"\nresults: {out} ({report['elapsed_s']} s)")
    return 1 if any(r.error for r in results.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
