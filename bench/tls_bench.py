"""
Side-by-side TLS termination benchmark: apimgw against nginx, both
terminating HTTPS in front of the same backend, in one run, on one machine.

The setup and the discipline are those of ``bench/proxy_bench.py`` (whose
helpers this script reuses): an nginx backend returning a fixed ~100-byte
body; wrk, the backend and the TLS clients pinned to one CPU, the proxy
under test pinned to the other; every proxy started, polled until it
answers over HTTPS, warmed up, measured and stopped by its PID. Both proxies
serve the same EC P-256 certificate, generated for the run, with TLS 1.2
and 1.3 and the same TLS 1.2 cipher list.

Three measurements per proxy:

  keepalive   wrk -t1 -c50 -d10s --latency https://127.0.0.1:PORT/
              (50 keep-alive connections: the TLS record layer's cost)
  close       the same with -H "Connection: close": every request on a new
              TCP and TLS connection. wrk keeps each connection's TLS session
              and resumes it (an abbreviated TLS 1.2 handshake, no
              certificate signature), so this is "new connections per
              second with session resumption"
  handshake   N parallel "openssl s_time -new -tls1_3" processes (default
              4): full TLS 1.3 handshakes (ECDHE + a certificate signature),
              no HTTP request, no resumption: new handshakes per second

Each prints req/s (or handshakes/s), wrk's latency percentiles where there
are some, the share of one CPU the proxy used and its CPU time per request
or handshake: near 100% the proxy is the bottleneck; well below it, the load
side is and the rate is a floor. Results go to bench/out/tls-<stamp>.json.

Run: python bench/tls_bench.py [--duration 10] [--connections 50]
     [--s-time-clients 4] [--only nginx,apimgw]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO_DIR)]

import proxy_bench as pb  # noqa: E402  (the shared helpers)

from gateway.testing.certs import self_signed  # noqa: E402
from gateway.tls import MODERN_CIPHERS  # noqa: E402

CASES = ("nginx", "apimgw")
LABELS = {"nginx": "nginx terminating TLS", "apimgw": "apimgw (access log none)"}
MODES = ("keepalive", "close", "handshake")
MODE_LABELS = {
    "keepalive": "keep-alive req/s",
    "close": "new conn. req/s (resumed)",
    "handshake": "full handshakes/s",
}
SERVER_NAME = "bench.apimgw.test"


@dataclass
class Measurement:
    """One measurement of one proxy."""

    mode: str
    command: list[str] = field(default_factory=list)
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    count: int | None = None
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    cpu_share: float | None = None
    cpu_us_per_unit: float | None = None
    error: str | None = None
    output: str = ""


@dataclass
class CaseResult:
    name: str
    label: str
    command: list[str] = field(default_factory=list)
    measurements: dict[str, Measurement] = field(default_factory=dict)
    error: str | None = None
    cpu_busy_before: float | None = None


def wait_ready_tls(
    proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path | None = None
) -> None:
    """Poll ``GET /`` over HTTPS until it answers 200 with the backend's body."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = f"\n{pb.tail(log)}" if log else ""
            raise pb.BenchError(f"exited with status {proc.returncode} before answering{detail}")
        try:
            conn = http.client.HTTPSConnection(pb.LOCALHOST, port, timeout=1.0, context=context)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                data = response.read()
            finally:
                conn.close()
            if response.status == 200 and data == pb.BODY.encode():
                return
            last = f"GET / answered {response.status}: {data[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = str(e) or type(e).__name__
        time.sleep(0.1)
    detail = f"\n{pb.tail(log)}" if log else ""
    raise pb.BenchError(f"not answering over HTTPS after {timeout:.0f} s (last: {last}){detail}")


class Load:
    """The load commands (wrk and openssl s_time), pinned to the load CPU."""

    def __init__(
        self,
        wrk: str,
        openssl: str,
        threads: int,
        connections: int,
        s_time_clients: int,
        cpu: int | None,
        procs: pb.Processes,
    ) -> None:
        self.wrk = wrk
        self.openssl = openssl
        self.threads = threads
        self.connections = connections
        self.s_time_clients = s_time_clients
        self.cpu = cpu
        self.procs = procs

    def wrk_argv(self, port: int, seconds: int, close: bool) -> list[str]:
        argv = [self.wrk, f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s", "--latency"]
        if close:
            argv += ["-H", "Connection: close"]
        return [*argv, f"https://{pb.LOCALHOST}:{port}/"]

    def s_time_argv(self, port: int, seconds: int) -> list[str]:
        return [self.openssl, "s_time", "-connect", f"{pb.LOCALHOST}:{port}", "-new",
                "-tls1_3", "-time", str(seconds)]

    def run_wrk(self, port: int, seconds: int, close: bool) -> str:
        proc = self.procs.start(
            pb.pinned(self.wrk_argv(port, seconds, close), self.cpu),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            out, _ = proc.communicate(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            raise pb.BenchError(f"wrk did not finish within {seconds + 15} s") from None
        finally:
            self.procs.stop(proc)
        text = out.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise pb.BenchError(f"wrk exited with status {proc.returncode}:\n{text}")
        return text

    def run_s_time(self, port: int, seconds: int) -> tuple[int, str]:
        """Run the s_time clients in parallel; the total of their connections."""
        procs = [
            self.procs.start(
                pb.pinned(self.s_time_argv(port, seconds), self.cpu),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            for _ in range(self.s_time_clients)
        ]
        outputs = []
        try:
            for proc in procs:
                out, _ = proc.communicate(timeout=seconds + 30)
                outputs.append(out.decode("utf-8", "replace"))
        except subprocess.TimeoutExpired:
            raise pb.BenchError(f"openssl s_time did not finish within {seconds + 30} s") from None
        finally:
            for proc in procs:
                self.procs.stop(proc)
        total = 0
        for text in outputs:
            # "1579 connections in 3 real seconds, ..." (the wall-clock line)
            m = re.search(r"^(\d+) connections in \d+ real seconds", text, re.MULTILINE)
            if m is None:
                raise pb.BenchError(f"could not read openssl s_time's output:\n{text}")
            total += int(m.group(1))
        return total, "\n".join(outputs)


def measure(
    load: Load, mode: str, port: int, pid: int, duration: int, warmup: int
) -> Measurement:
    """Warm up, then measure ``mode`` once, with the proxy's CPU time."""
    result = Measurement(mode)
    close = mode == "close"
    if mode == "handshake":
        result.command = load.s_time_argv(port, duration)
        if warmup > 0:
            load.run_s_time(port, warmup)
    else:
        result.command = load.wrk_argv(port, duration, close)
        if warmup > 0:
            load.run_wrk(port, warmup, close)
    before = pb._cpu_seconds(pid)
    started = time.monotonic()
    if mode == "handshake":
        count, text = load.run_s_time(port, duration)
        elapsed = time.monotonic() - started
        result.count, result.output = count, text
        result.rate = round(count / elapsed, 1)
    else:
        text = load.run_wrk(port, duration, close)
        elapsed = time.monotonic() - started
        parsed = pb.parse_wrk(text)
        if parsed["requests_per_sec"] is None:
            raise pb.BenchError(f"could not read wrk's output:\n{text}")
        result.output = text
        result.rate = parsed["requests_per_sec"]
        result.p50_ms, result.p99_ms = parsed["p50_ms"], parsed["p99_ms"]
        result.count = parsed["requests"]
        result.non_2xx_3xx = parsed["non_2xx_3xx"]
        result.socket_errors = parsed["socket_errors"]
    after = pb._cpu_seconds(pid)
    if before is not None and after is not None:
        used = after - before
        result.cpu_share = round(used / elapsed, 3)
        if result.count:
            result.cpu_us_per_unit = round(used / result.count * 1e6, 1)
    return result


def start_apimgw(
    procs: pb.Processes,
    workdir: Path,
    port: int,
    backend_port: int,
    cert: Path,
    key: Path,
    cpu: int | None,
    twistd: str,
) -> tuple[subprocess.Popen[bytes], Path, list[str]]:
    config = workdir / "apimgw.yaml"
    config.write_text(
        "routes:\n"
        "  - path: /\n"
        "    pathType: Prefix\n"
        f"    backend: http://{pb.LOCALHOST}:{backend_port}\n"
        "certificates:\n"
        f"  - {{name: bench, hosts: [{SERVER_NAME}], certFile: '{cert}', keyFile: '{key}'}}\n"
        "defaultCertificate: bench\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k.upper().replace(".", "_") != "TELEMETRY_LOGS_STD"}
    env["TELEMETRY_LOGS_STD"] = "none"
    env["GATEWAY_SHUTDOWN_DELAY"] = "0"
    env["GATEWAY_SHUTDOWN_GRACE"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_DIR), env.get("PYTHONPATH", "")) if p)
    argv = pb.pinned(
        [
            *shlex.split(twistd), "-n", "--pidfile=", "apimgw",
            "--http", f"tcp:{pb.free_port()}:interface={pb.LOCALHOST}",
            "--https", f"tcp:{port}:interface={pb.LOCALHOST}",
            "--admin", f"tcp:{pb.free_port()}:interface={pb.LOCALHOST}",
            "--config", str(config),
        ],
        cpu,
    )
    log = workdir / "apimgw.log"
    with open(log, "wb") as out:
        proc = procs.start(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log, argv


def run_case(
    name: str,
    procs: pb.Processes,
    load: Load,
    args: argparse.Namespace,
    nginx: str,
    workdir: Path,
    backend_port: int,
    cert: Path,
    key: Path,
    cpu: int | None,
) -> CaseResult:
    result = CaseResult(name=name, label=LABELS[name])
    print(f"[{name}] {LABELS[name]}", flush=True)
    result.cpu_busy_before = busy = pb.cpu_busy()
    if busy is not None and busy > 0.1:
        print(f"  warning: the CPUs are {busy:.0%} busy with other work before this case", flush=True)
    port = pb.free_port()
    proc = None
    try:
        if name == "nginx":
            proc, log, result.command = pb.start_nginx(
                procs, nginx, workdir, "nginx-tls", "nginx-tls.conf.in", cpu,
                port=port, backend_port=backend_port, cert=cert, key=key,
                ciphers=MODERN_CIPHERS,
            )
        else:
            proc, log, result.command = start_apimgw(
                procs, workdir, port, backend_port, cert, key, cpu, args.apimgw_cmd
            )
        print(f"  pid {proc.pid}: {shlex.join(result.command)}", flush=True)
        wait_ready_tls(proc, port, args.ready_timeout, log)
        for mode in args.modes:
            m = measure(load, mode, port, proc.pid, args.duration, args.warmup)
            result.measurements[mode] = m
            latency = "" if m.p99_ms is None else f", p50 {m.p50_ms:.2f} ms, p99 {m.p99_ms:.2f} ms"
            errors = sum(m.socket_errors.values())
            print(f"  {MODE_LABELS[mode]}: {m.rate:,.0f}{latency}, proxy CPU "
                  f"{m.cpu_share if m.cpu_share is None else f'{m.cpu_share:.0%}'}, "
                  f"non-2xx/3xx {m.non_2xx_3xx}, socket errors {errors}", flush=True)
    except pb.BenchError as e:
        result.error = str(e)
        print(f"  FAILED: {e}", flush=True)
    finally:
        if proc is not None:
            procs.stop(proc)
    return result


def print_table(results: dict[str, CaseResult], plan: str, load: Load, args: argparse.Namespace) -> None:
    print()
    print(f"wrk: {shlex.join(['wrk', *load.wrk_argv(0, args.duration, False)[1:]])} "
          "(close: + -H 'Connection: close')")
    print(f"handshakes: {args.s_time_clients} x {shlex.join(['openssl', *load.s_time_argv(0, args.duration)[1:]])}")
    print(f"pinning: {plan}")
    print()
    header = ("| case | measurement | rate/s | p50 ms | p99 ms | proxy CPU | CPU us/unit | errors |")
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in CASES:
        r = results.get(name)
        if r is None:
            continue
        if r.error and not r.measurements:
            print(f"| {r.label} | failed | | | | | | |")
            continue
        for mode, m in r.measurements.items():
            print(
                f"| {r.label} | {MODE_LABELS[mode]} | {m.rate:,.0f} | "
                f"{'' if m.p50_ms is None else f'{m.p50_ms:.2f}'} | "
                f"{'' if m.p99_ms is None else f'{m.p99_ms:.2f}'} | "
                f"{'' if m.cpu_share is None else f'{m.cpu_share:.0%}'} | "
                f"{'' if m.cpu_us_per_unit is None else f'{m.cpu_us_per_unit:.1f}'} | "
                f"{m.non_2xx_3xx + sum(m.socket_errors.values())} |"
            )
    mine, other = results.get("apimgw"), results.get("nginx")
    if mine and other:
        print()
        for mode in MODES:
            a, b = mine.measurements.get(mode), other.measurements.get(mode)
            if a and b and a.rate and b.rate:
                cpu = ""
                if a.cpu_us_per_unit and b.cpu_us_per_unit:
                    cpu = f", {a.cpu_us_per_unit / b.cpu_us_per_unit:.1f}x CPU per unit"
                print(f"apimgw / nginx, {MODE_LABELS[mode]}: {a.rate / b.rate:.2f}x{cpu}")
    for r in results.values():
        if r.error:
            print(f"\n{r.name} failed: {r.error}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare apimgw's TLS termination with nginx's.")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--s-time-clients", type=int, default=4,
                        help="parallel openssl s_time processes for full handshakes")
    parser.add_argument("--only", default=",".join(CASES), help="cases: nginx,apimgw")
    parser.add_argument("--modes", default=",".join(MODES), help="keepalive,close,handshake")
    parser.add_argument("--apimgw-cmd", default=str(Path(sys.executable).parent / "twistd"),
                        help="the twistd to run apimgw with")
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    args = parser.parse_args(argv)
    args.only = [c for c in args.only.split(",") if c]
    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.only) - set(CASES) or set(args.modes) - set(MODES) or not args.only or not args.modes:
        parser.error(f"cases are {', '.join(CASES)}; modes are {', '.join(MODES)}")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, pb._on_sigterm)
    procs = pb.Processes(stop_timeout=pb.STOP_TIMEOUT)
    workdir = Path(tempfile.mkdtemp(prefix="apimgw-tls-bench-"))
    os.chmod(workdir, 0o755)
    results: dict[str, CaseResult] = {}
    started = time.monotonic()
    try:
        nginx, wrk = pb.ensure_tools()
        openssl = pb._which("openssl")
        if openssl is None:
            raise pb.BenchError("the openssl command is needed (Debian package openssl)")
        load_cpu, proxy_cpu, plan = pb.cpu_plan()
        print(f"pinning: {plan}", flush=True)
        load = Load(wrk, openssl, args.threads, args.connections, args.s_time_clients,
                    load_cpu, procs)

        issued = self_signed(SERVER_NAME)
        cert, key = workdir / "bench.pem", workdir / "bench.key"
        cert.write_text(issued.chain_pem)
        key.write_text(issued.key_pem)
        os.chmod(key, 0o644)  # nginx's worker runs as another user when started as root

        backend_port = pb.free_port()
        backend, backend_log, _ = pb.start_nginx(
            procs, nginx, workdir, "nginx-backend", "nginx-backend.conf.in", load_cpu,
            port=backend_port,
        )
        print(f"backend: pid {backend.pid} on {pb.LOCALHOST}:{backend_port}", flush=True)
        pb.wait_ready(backend, backend_port, 10.0, "/", backend_log)
        for name in args.only:
            results[name] = run_case(name, procs, load, args, nginx, workdir, backend_port,
                                     cert, key, proxy_cpu)
            if backend.poll() is not None:
                raise pb.BenchError(f"the backend exited:\n{pb.tail(backend_log)}")
    except pb.BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(results, plan, load, args)
    report = {
        "timestamp": stamp,
        "environment": {**pb.environment(nginx, wrk), "openssl": pb._version([openssl, "version"])},
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup,
            "connections": args.connections, "threads": args.threads,
            "s_time_clients": args.s_time_clients, "pinning": plan,
            "certificate": "EC P-256, self-signed",
        },
        "cases": {name: asdict(r) for name, r in results.items()},
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    out = args.out_dir / f"tls-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {out} ({report['elapsed_s']} s)")
    return 1 if any(r.error for r in results.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
