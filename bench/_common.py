"""
What the benchmarks in bench/ share: the child processes and their
cleanup by PID, free ports, polling over HTTP until ready, the two test
backends, a gateway started with its log as JSON, py-spy, statistics and
number formatting, the machine's description and CPU load, result files.

Imported as ``_common``: bench/ is ``sys.path[0]`` when a benchmark runs as
``python bench/<name>.py``, and is on the PYTHONPATH of the gateways they
start (whose ``--logger`` reads ``json_log_observer`` from here through the
benchmark's module). So this module imports only the standard library at
its top.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOCALHOST = "127.0.0.1"
#: The environment variable naming the file json_log_observer writes to.
LOG_ENV = "APIMGW_BENCH_JSON_LOG"


class BenchError(Exception):
    """The run (or one case of it) cannot go on; the message says why."""


# --- processes --------------------------------------------------------------


class Processes:
    """
    Every process a benchmark starts, each stopped by its own PID: SIGTERM,
    then SIGKILL after ``stop_timeout`` seconds. Each runs in ``cwd`` (None:
    this process's). Safe to use from two threads.
    """

    def __init__(self, stop_timeout: float = 10.0, cwd: Path | None = None) -> None:
        self._running: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self.stop_timeout = stop_timeout
        self.cwd = cwd

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None,
              stdout: IO[bytes] | int | None = None,
              stderr: IO[bytes] | int | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` (stdin from /dev/null) and remember it."""
        with self._lock:
            proc = subprocess.Popen(list(argv), env=env, cwd=self.cwd,
                                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
            self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop ``proc`` by its PID (when still running) and forget it."""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"  pid {proc.pid} still running after SIGTERM; SIGKILL", flush=True)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        with self._lock:
            if proc in self._running:
                self._running.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still remembered, the last started first."""
        with self._lock:
            running = list(self._running)
        for proc in reversed(running):
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError) as e:  # stop the others too
                print(f"  could not stop pid {proc.pid}: {e}", file=sys.stderr)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def tail(path: Path, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a log file as text ("" when unreadable)."""
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


def twistd_command() -> list[str]:
    """The twistd next to this Python, or twistd run through this Python."""
    twistd = Path(sys.executable).parent / "twistd"
    if twistd.exists():
        return [str(twistd)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def child_env(source_dir: Path, **extra: str) -> dict[str, str]:
    """
    This environment without any gateway setting (so only what the script
    sets applies), ``source_dir`` and bench/ first on PYTHONPATH, plus
    ``extra``.
    """
    prefixes = ("CONFIG_", "GATEWAY_", "K8S_", "TELEMETRY_", "NET_")
    env = {k: v for k, v in os.environ.items()
           if not k.upper().replace(".", "_").startswith(prefixes)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(source_dir), str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def rss_kib(pid: int | str = "self") -> int | None:
    """The resident set size of process ``pid`` in KiB (None when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# --- HTTP -------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port (reopened when it breaks)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.port = port
        self.headers = headers or {}
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """
        Send ``body`` (when not None) as JSON with this client's headers and
        ``headers``; returns (status, payload). A broken connection is
        retried once on a new one.
        """
        data = None if body is None else json.dumps(body).encode()
        sent = {**self.headers, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=sent)
                response = self._conn.getresponse()
                payload = response.read()
                if response.will_close:
                    self.close()
                return response.status, payload
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        """GET ``path``, with ``host`` as the Host header when given."""
        return self.request("GET", path, headers={"Host": host} if host else None)


def get_status(port: int, path: str) -> int:
    """The status of GET ``path`` on 127.0.0.1:port, on a connection of its own."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05,
               proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> float:
    """
    Poll ``check()`` until true; returns time.monotonic() then. Fails after
    ``timeout``, or when ``proc`` exits (with the end of ``log``).
    """
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while True:
        if proc is not None and proc.poll() is not None:
            detail = f"\n{tail(log, 3000)}" if log else ""
            raise BenchError(f"{what}: the process exited with status {proc.returncode}{detail}")
        try:
            if check():
                return time.monotonic()
        except (OSError, http.client.HTTPException) as e:
            last = str(e) or type(e).__name__
        if time.monotonic() > deadline:
            detail = f"\n{tail(log, 3000)}" if log else ""
            raise BenchError(f"{what}: not within {timeout:g} s (last: {last}){detail}")
        time.sleep(interval)


class Poller:
    """GET a gateway path every ``interval`` seconds until ``check(status, body)``."""

    def __init__(self, port: int, interval: float, timeout: float) -> None:
        self.client = Client(port, timeout=5.0)
        self.interval = interval
        self.timeout = timeout

    def until(self, path: str, check: Callable[[int, bytes], bool],
              host: str | None = None) -> tuple[float, int]:
        """Returns (monotonic time of the matching answer, requests sent)."""
        deadline = time.monotonic() + self.timeout
        polls = 0
        last: Any = None
        while True:
            polls += 1
            try:
                status, body = self.client.get(path, host)
                last = (status, body[:120])
                if check(status, body):
                    return time.monotonic(), polls
            except (OSError, http.client.HTTPException) as e:
                last = e
            if time.monotonic() > deadline:
                raise BenchError(f"GET {path}: not as expected within {self.timeout:g} s "
                                 f"(last answer: {last!r})")
            time.sleep(self.interval)


def served_by(name: str) -> Callable[[int, bytes], bool]:
    """A Poller check: answered 200 by backend ``name`` (see serve_backends)."""
    prefix = f"{name} ".encode()
    return lambda status, body: status == 200 and body.startswith(prefix)


def is_404(status: int, body: bytes) -> bool:
    """A Poller check: answered 404."""
    return status == 404


# --- the backends -----------------------------------------------------------


def serve_backends(spec: str) -> int:
    """
    Serve ``NAME=PORT,...``: each a site answering every request with
    ``<NAME> <request URI>``. Stops on SIGTERM (the reactor's handler). Run
    in a child process (a benchmark's hidden ``--serve-backends`` option).
    """
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Named(Resource):
        isLeaf = True

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name.encode()

        def render(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            return self.name + b" " + request.uri

    for item in spec.split(","):
        name, port = item.split("=")
        site = Site(Named(name))
        site.log = lambda request: None  # type: ignore[method-assign]
        reactor.listenTCP(int(port), site, interface=LOCALHOST)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


class Backends:
    """
    Backend A and backend B, one child process: ``script --serve-backends``
    (which calls serve_backends) with environment ``env``.
    """

    def __init__(self, procs: Processes, workdir: Path, script: Path,
                 env: dict[str, str]) -> None:
        self.ports = {"A": free_port(), "B": free_port()}
        spec = ",".join(f"{k}={v}" for k, v in self.ports.items())
        log = workdir / "backends.log"
        with open(log, "wb") as out:
            self.proc = procs.start(
                [sys.executable, str(script), "--serve-backends", spec],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        for port in self.ports.values():
            wait_until("the backends", lambda p=port: get_status(p, "/") == 200, 20,
                       proc=self.proc, log=log)

    def url(self, name: str) -> str:
        return f"http://{LOCALHOST}:{self.ports[name]}"


# --- the gateway and its JSON log -------------------------------------------


def json_log_observer() -> Any:
    """
    A twistd ``--logger`` factory: every log event as JSON, with its
    ``log_time`` at full precision, to the file named by $APIMGW_BENCH_JSON_LOG.
    (twistd's text log has whole seconds.) Imported in the gateway process.
    """
    from twisted.logger import jsonFileLogObserver

    return jsonFileLogObserver(open(os.environ[LOG_ENV], "a", encoding="utf-8"))


def read_json_log(path: Path) -> list[dict[str, Any]]:
    """The events json_log_observer wrote to ``path`` so far."""
    from twisted.logger import eventsFromJSONLogFile

    try:
        with open(path, encoding="utf-8") as f:
            return list(eventsFromJSONLogFile(f))
    except OSError:
        return []


class GatewayProcess:
    """
    ``twistd -n apimgw`` on free ports of 127.0.0.1, its files in
    ``workdir/name``: the log as JSON lines (microsecond times) in
    gateway.json, standard output and error in gateway.out. A subclass
    builds the command with ``twistd_argv`` and starts it with ``launch``;
    then ``started`` is time.time() and ``started_mono`` time.monotonic()
    just before the process was created.
    """

    def __init__(self, procs: Processes, workdir: Path, name: str) -> None:
        self.procs = procs
        self.http_port, self.https_port, self.admin_port = free_port(), free_port(), free_port()
        self.dir = workdir / name
        self.dir.mkdir()
        self.json_log = self.dir / "gateway.json"
        self.out = self.dir / "gateway.out"

    def twistd_argv(self, logger: str, *options: str) -> list[str]:
        """
        The command: ``logger`` is the twistd ``--logger`` (a module's
        json_log_observer), ``options`` go after the listeners.
        """
        return [
            *twistd_command(), "-n", "--pidfile=", "--logger", logger,
            "apimgw",
            "--http", f"tcp:{self.http_port}:interface={LOCALHOST}",
            "--https", f"tcp:{self.https_port}:interface={LOCALHOST}",
            "--admin", f"tcp:{self.admin_port}:interface={LOCALHOST}",
            *options,
            "--grace", "2",
            "--drain-delay", "0",
        ]

    def launch(self, argv: Sequence[str], env: dict[str, str]) -> None:
        """
        Start ``argv`` with ``env`` (plus the JSON log's file name). One
        process unless ``env`` or ``argv`` says otherwise: ``gateway.workers``
        defaults to the machine's CPUs, and these benches measure one
        gateway process (``workers_bench.py`` passes ``--workers``).
        """
        env = {"GATEWAY_WORKERS": "1", **env, LOG_ENV: str(self.json_log)}
        with open(self.out, "wb") as out:
            self.started = time.time()
            self.started_mono = time.monotonic()
            self.proc = self.procs.start(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float, interval: float = 0.005) -> float:
        """Poll /readyz until 200; returns the monotonic time of the 200."""
        return wait_until(
            "gateway /readyz", lambda: get_status(self.admin_port, "/readyz") == 200,
            timeout, interval=interval, proc=self.proc, log=self.out,
        )

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid)

    def stop(self) -> None:
        self.procs.stop(self.proc)

    def events(self) -> list[dict[str, Any]]:
        return read_json_log(self.json_log)


# --- a gateway in this process ------------------------------------------------


def gateway_in_process(config_text: str, *, log: str = "none", stdout_writer: bool = False) -> Any:
    """
    A gateway built and started in this process (no listening of interest:
    the benches drive its protocols and resource directly) from the
    configuration ``config_text``, once its first generation is live.

    :param log: ``telemetry.logs.std``.
    :param stdout_writer: as under ``twistd -n``: the access log takes the
        buffered stdout writer, as in production.
    """
    from twisted.internet import reactor

    from gateway.tap import Options, build_gateway

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config_text)
    try:
        options = Options(environ={"TELEMETRY_LOGS_STD": log})
        options.parseOptions(["--http", "tcp:0:interface=127.0.0.1", "--https", "",
                              "--admin", "tcp:0:interface=127.0.0.1", "--config", f.name])
        if stdout_writer:
            options.parent = {"nodaemon": True}  # type: ignore[attr-defined]
        gateway = build_gateway(options, reactor)
        gateway.startService()
        live: list[Any] = []
        gateway.reconciler.when_live().addCallback(live.append)
        while not live:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
    finally:
        os.unlink(f.name)
    return gateway


# --- py-spy -----------------------------------------------------------------


def find_py_spy() -> str:
    """The py-spy next to this Python or on PATH."""
    for candidate in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise BenchError("--profile needs py-spy (pip install py-spy)")


@contextmanager
def py_spy_attached(procs: Processes, pid: int, out: Path) -> Iterator[None]:
    """
    py-spy attached to process ``pid`` (raw stacks, 250 Hz, to ``out``)
    while the block runs: started 1 s before it, stopped after it with
    SIGINT, on which py-spy writes its output and exits.
    """
    spy = procs.start(
        [find_py_spy(), "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
         "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    time.sleep(1.0)
    yield
    os.kill(spy.pid, signal.SIGINT)  # py-spy writes its output and exits
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    procs.stop(spy)


def summarize_profile(path: Path, mine: Sequence[str] = ("(gateway/",),
                      mine_label: str = "the gateway's own functions",
                      top: int = 15) -> list[str]:
    """
    The functions with the most samples in py-spy's raw output (collapsed
    stacks: ``frame;frame;... count``): inclusive (only the frames that
    contain one of ``mine``, described as ``mine_label``; the rest is the
    reactor's and twistd's frames around them) and self. Time in the cyclic
    garbage collector shows as self time of the line whose allocation
    triggered it.
    """
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return []
    out = [f"{total} samples (250 Hz)", f"inclusive ({mine_label}):"]
    kept = {f: c for f, c in inclusive.items() if any(m in f for m in mine)}
    for frame, count in sorted(kept.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {count / total:6.1%}  {frame}")
    out.append("self:")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {count / total:6.1%}  {frame}")
    return out


# --- statistics and formatting ----------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (NaN of nothing)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    """``value`` with thousands separators and ``digits`` decimals; "–" for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def spread(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """
    The median of the values that are not None, times ``scale``, followed
    by "(min–max)" when there are several; "–" when there are none.
    """
    found = [v * scale for v in values if v is not None]
    if not found:
        return "–"
    median = statistics.median(found)
    if len(found) == 1:
        return fmt(median, digits)
    return f"{fmt(median, digits)} ({fmt(min(found), digits)}–{fmt(max(found), digits)})"


# --- the machine ------------------------------------------------------------


def cpu_times() -> tuple[int, int] | None:
    """All CPUs' (total, idle + iowait) time so far from /proc/stat, in ticks."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]), fields[3] + (fields[4] if len(fields) > 4 else 0)


def steal_ticks() -> tuple[int, int] | None:
    """
    All CPUs' (total, steal) time so far from /proc/stat, in ticks: steal
    is time the hypervisor gave another guest while this one wanted to
    run. A measurement with more than a few percent of it is not this
    machine's speed.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen between two :func:`steal_ticks` readings."""
    if before is None or after is None or after[0] == before[0]:
        return None
    return round((after[1] - before[1]) / (after[0] - before[0]), 3)


def cpu_busy(interval: float = 0.5) -> float | None:
    """
    The share of all CPUs busy during ``interval`` seconds, taken while the
    benchmark runs nothing: other work on the machine that would skew the
    figures. (The load average would count the benchmark's own past load.)
    """
    before = cpu_times()
    time.sleep(interval)
    after = cpu_times()
    if before is None or after is None or after[0] == before[0]:
        return None
    return round(1.0 - (after[1] - before[1]) / (after[0] - before[0]), 3)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" when not found)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def twisted_version() -> str:
    """The version of the Twisted this Python imports ("not installed" when none)."""
    try:
        import twisted
    except ImportError:
        return "not installed"
    return twisted.__version__


#: What :func:`python_build` runs in another interpreter.
_BUILD_PROBE = (
    "import os, platform, sys\n"
    "try:\n"
    "    shared = 'libpython' in open('/proc/self/maps').read()\n"
    "except OSError:\n"
    "    shared = None\n"
    "print(platform.python_version(), os.path.realpath(sys.executable), shared)\n"
)

_LINKED = {True: "libpython shared", False: "libpython static", None: "linking unknown"}


def python_build(python: str | None = None) -> str:
    """
    The interpreter that runs the gateway in a benchmark: version, real
    path, and whether its core is a shared libpython. The same code costs
    different CPU on different builds of one version (an unoptimized,
    ``--enable-shared`` pyenv build took 13% more CPU per proxied request
    than Debian's PGO/LTO, statically linked python3.11: docs/benchmarks.md),
    so a report names the build it ran on.

    :param python: another interpreter (the one ``--apimgw-cmd`` runs),
        asked in a subprocess; default: this one.
    """
    if python is not None:
        try:
            out = subprocess.run(
                [python, "-c", _BUILD_PROBE], capture_output=True, text=True, timeout=30,
                check=True,
            ).stdout.split()
            version, path, shared = out[0], out[1], {"True": True, "False": False}.get(out[2])
        except (OSError, subprocess.SubprocessError, IndexError):
            return f"{python} (could not be asked)"
        return f"{version} {path} ({_LINKED[shared]})"
    try:
        with open("/proc/self/maps") as f:
            shared = "libpython" in f.read()
    except OSError:
        shared = None
    return f"{platform.python_version()} {os.path.realpath(sys.executable)} ({_LINKED[shared]})"


def interpreter_of(command: str) -> str | None:
    """
    The Python a gateway command runs on: the interpreter named by the
    ``#!`` line of its first word (a ``twistd`` script), that word itself
    when it is a ``python`` (``{python}`` is this one), else ``None``.
    """
    words = shlex.split(command.replace("{python}", sys.executable))
    if not words:
        return None
    first = shutil.which(words[0]) or words[0]
    if os.path.basename(first).startswith("python"):
        return first
    try:
        with open(first, "rb") as f:
            head = f.readline(512)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    parts = head[2:].decode("utf-8", "replace").split()
    if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if parts else None


def machine() -> dict[str, Any]:
    """The machine for a report: CPU count and model, kernel, Python version."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def machine_line(env: dict[str, Any]) -> str:
    """
    One line for a report's ``environment`` (machine() plus "twisted",
    "revision" and "cpu_busy_before").
    """
    busy = env.get("cpu_busy_before")
    return (f"machine: {env['cpu_count']} CPUs ({env['cpu_model']}), Linux {env['kernel']}, "
            f"Python {env['python']}, Twisted {env['twisted']}, revision {env['revision']}"
            + ("" if busy is None else f"; CPUs {busy:.0%} busy with other work before the run"))


def environment_of(source_dir: Path) -> dict[str, Any]:
    """
    For a report's ``environment``: the machine, Twisted, the revision of
    ``source_dir`` (with "+ uncommitted changes") and the CPU load before
    the run.
    """
    try:
        done = subprocess.run(["git", "-C", str(source_dir), "rev-parse", "--short", "HEAD"],
                              capture_output=True, timeout=10, check=False)
        revision = done.stdout.decode().strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(source_dir), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, timeout=10, check=False)
        if dirty.stdout.strip():
            revision += " + uncommitted changes"
    except (OSError, subprocess.TimeoutExpired):
        revision = "unknown"
    if not (source_dir / ".git").exists():
        revision = f"the tree in {source_dir} (not a git checkout)"
    return {**machine(), "twisted": twisted_version(), "revision": revision,
            "cpu_busy_before": cpu_busy()}


# --- the run and its results ------------------------------------------------


def timestamp() -> str:
    """Now, as in the result files' names: 20260131-235959."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How to run ``script`` (bench/<name>.py) again with ``argv`` (None: this process's)."""
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def remove_workdir(workdir: Path, keep: bool) -> None:
    """Delete the temporary directory, or say where it is kept (``keep``)."""
    if keep:
        print(f"temporary files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def save_report(out_dir: Path, kind: str, stamp: str, report: dict[str, Any]) -> Path:
    """Write ``report`` as JSON to ``out_dir/<kind>-<stamp>.json``; returns the path."""
    out = out_dir / f"{kind}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


# --- a fake API server in the reactor, measurements in a thread --------------


def run_with_fake_kube(measure: Callable[[Any, Any, Processes, Path], None], *,
                       source_dir: Path, time_limit: float, keep_temp: bool,
                       prefix: str) -> list[BaseException]:
    """
    Run gateway.testing.fakekube's server in the reactor (this process's
    main thread) and ``measure(server, reactor, procs, workdir)`` in a
    thread that drives it with blockingCallFromThread; the children it
    starts through ``procs`` are stopped by PID at the end, and the
    temporary ``workdir`` removed unless ``keep_temp``. Returns the errors
    (empty: it worked). The reactor stops when ``measure`` returns, on a
    signal, or after ``time_limit`` seconds.
    """
    from twisted.internet import reactor

    from gateway.testing.fakekube import FakeKubeServer

    procs = Processes(cwd=source_dir)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = FakeKubeServer(reactor=reactor, bookmark_interval=5.0)
    failed: list[BaseException] = []
    finished = threading.Event()

    def run() -> None:
        try:
            measure(server, reactor, procs, workdir)
        except BaseException as e:  # noqa: BLE001 (reported by the caller, after the reactor)
            failed.append(e)
        finally:
            finished.set()
            reactor.callFromThread(stop)  # type: ignore[attr-defined]

    def stop() -> None:
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]

    def begin() -> None:
        server.start()
        print(f"fake API server: {server.url} (in this process)", flush=True)
        threading.Thread(target=run, name="measure", daemon=True).start()

    def time_up() -> None:
        failed.append(BenchError(f"the time limit ({time_limit:g} s) was reached"))
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    limit = reactor.callLater(max(1.0, time_limit), time_up)  # type: ignore[attr-defined]
    try:
        reactor.run()  # type: ignore[attr-defined]  # SIGTERM/SIGINT stop it too
    finally:
        if limit.active():
            limit.cancel()
        procs.stop_all()
        remove_workdir(workdir, keep_temp)
    if not failed and not finished.is_set():
        failed.append(BenchError("interrupted (a signal stopped the reactor): the figures "
                                 "above are incomplete"))
    return failed
