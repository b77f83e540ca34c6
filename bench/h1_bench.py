"""
Micro benchmark of the HTTP/1.1 server side alone (issue 11, part 1):
twisted.web's ``HTTPChannel`` (as the gateway runs it: ``GatewaySite`` and
its caching channel) against our httptools-based ``H1Server``, both serving
the same trivial in-process resource (a fixed 100-byte body, no backend).

wrk loads each over loopback with keep-alive connections; the server is
pinned to one CPU and wrk to the other when two are usable. The cases run
in turn, ``--rounds`` times, so a neighbour's load shows up as spread
rather than as a bias for one case. Every process is stopped by its PID.

::

    python bench/h1_bench.py                 # 2 rounds x 10 s per case, ~1 min
    python bench/h1_bench.py --seconds 5 --rounds 1 --connections 50
    python bench/h1_bench.py --tls           # the HTTPS listener's way

``--tls``: both servers behind the HTTPS listener's TLS (``TLSServerFactory``
with the generated self-signed certificate through an ``SNIMap``, ALPN
offering h2 and http/1.1): ``twisted`` is ``GatewaySite`` as the listener
served before (twisted.web's ALPN switch), ``h1`` is ``ALPNServer`` (our
switch, then ``H1Server``). wrk sends no ALPN, so both serve HTTP/1.1;
its keep-alive connections make the handshakes a small part of the cost.

The server side is this script itself, run as ``--serve twisted|h1 PORT``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO_DIR,
    BenchError,
    Processes,
    cpu_busy,
    free_port,
    machine,
    machine_line,
    twisted_version,
    wait_until,
)
from proxy_bench import _which, cpu_plan, parse_wrk, pinned

BODY = b"x" * 99 + b"\n"
CASES = ("twisted", "h1")


def _tls_wrapped(factory: Any) -> Any:
    """``factory`` behind TLS as the HTTPS listener has it (the fallback map, no generations)."""
    from types import SimpleNamespace

    from gateway.tls import (
        SNIConnectionCreator,
        SNIMapBuilder,
        TLSServerFactory,
        TLSSettings,
        generate_default_certificate,
    )
    from gateway.translate import GatewayConfig

    builder = SNIMapBuilder(TLSSettings(), generate_default_certificate(time.time()))
    fallback, _ = builder.build(GatewayConfig())
    creator = SNIConnectionCreator(SimpleNamespace(current=None), fallback)  # type: ignore[arg-type]
    return TLSServerFactory(creator, factory)


def serve(kind: str, port: int, tls: bool = False) -> None:
    """Run one server (the child process of a case) until SIGTERM."""
    sys.path.insert(0, str(REPO_DIR))
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.web.resource import Resource

    class Fixed(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            return BODY

    from gateway.proxy import listener_factory

    factory: Any = listener_factory(Fixed(), reactor, strict=kind == "h1", tls=tls)
    if tls:
        factory = _tls_wrapped(factory)
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(port: int, tls: bool = False) -> bool:
    import http.client
    import ssl

    conn: http.client.HTTPConnection
    if tls:
        context = ssl._create_unverified_context()  # the generated self-signed certificate
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=1, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status == 200 and response.read() == BODY
    finally:
        conn.close()


def run_case(
    procs: Processes, kind: str, wrk: str, args: argparse.Namespace, cpus: tuple[Any, Any]
) -> dict[str, Any]:
    load_cpu, server_cpu = cpus
    port = free_port()
    server = procs.start(
        pinned(
            [sys.executable, __file__, "--serve", kind, str(port), *(["--tls"] if args.tls else [])],
            server_cpu,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(f"{kind} server", lambda: _ready(port, args.tls), 15, proc=server)
        argv = [
            wrk,
            f"-t{args.threads}",
            f"-c{args.connections}",
            "--latency",
            f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/",
        ]
        # Warm up (connections, caches), then measure.
        for seconds in (2, args.seconds):
            cpu_before = cpu_seconds(server.pid)
            proc = procs.start(
                pinned([*argv[:3], f"-d{seconds}s", *argv[3:]], load_cpu),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                out, _ = proc.communicate(timeout=seconds + 15)
            finally:
                procs.stop(proc)
            if proc.returncode != 0:
                raise BenchError(f"wrk failed: {out.decode(errors='replace')}")
        cpu = cpu_seconds(server.pid) - cpu_before
        result = parse_wrk(out.decode("utf-8", "replace"))
        # CPU per request: less sensitive than req/s to other load on the
        # machine (a neighbour slows the server down, not its work).
        result["cpu_us_per_request"] = (
            cpu / result["requests"] * 1e6 if result["requests"] else None
        )
        result["alive"] = server.poll() is None
        return result
    finally:
        procs.stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per case")
    parser.add_argument("--rounds", type=int, default=2, help="cases run in turn this many times")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tls", action="store_true", help="both servers behind TLS (HTTPS listener)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.tls)
        return 0
    wrk = _which("wrk")
    if wrk is None:
        raise BenchError("wrk is needed (apt-get install wrk)")
    load_cpu, server_cpu, plan = cpu_plan()
    env = machine()
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    env.update(twisted=twisted_version(), revision=revision or "?", cpu_busy_before=cpu_busy())
    print(machine_line(env), flush=True)
    print(plan, flush=True)
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, "
        f"{args.rounds} round(s), GET / answered with a {len(BODY)}-byte body in process"
        f"{', over TLS (no ALPN: HTTP/1.1)' if args.tls else ''}",
        flush=True,
    )
    procs = Processes()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CASES}
    try:
        for round_ in range(args.rounds):
            for kind in CASES:
                result = run_case(procs, kind, wrk, args, (load_cpu, server_cpu))
                results[kind].append(result)
                print(
                    f"  round {round_ + 1} {kind:8} {result['requests_per_sec'] or 0:10,.0f} req/s  "
                    f"p50 {result['p50_ms'] or 0:.2f} ms  p99 {result['p99_ms'] or 0:.2f} ms  "
                    f"server CPU {result['cpu_us_per_request'] or 0:.1f} us/req  "
                    f"errors {sum(result['socket_errors'].values())} "
                    f"non-2xx {result['non_2xx_3xx']}",
                    flush=True,
                )
                time.sleep(0.5)
    finally:
        procs.stop_all()
    print("\ncase      median req/s   median p99   median server CPU per request")
    medians = {}
    cpus = {}
    for kind in CASES:
        rps = statistics.median(r["requests_per_sec"] or 0 for r in results[kind])
        p99 = statistics.median(r["p99_ms"] or 0 for r in results[kind])
        cpu = statistics.median(r["cpu_us_per_request"] or 0 for r in results[kind])
        medians[kind], cpus[kind] = rps, cpu
        print(f"{kind:8} {rps:14,.0f} {p99:10.2f} ms {cpu:12.1f} us")
    if medians["twisted"] and cpus["h1"]:
        print(
            f"\nh1 / twisted: {medians['h1'] / medians['twisted']:.2f}x req/s, "
            f"{cpus['twisted'] / cpus['h1']:.2f}x less server CPU per request"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"h1_bench: {e}", file=sys.stderr)
        sys.exit(1)
