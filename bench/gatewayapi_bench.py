"""
Gateway API benchmark: how long an HTTPRoute change takes to be served by
a real gateway process (issue 13: "a route change is served within
100 ms").

Real processes on 127.0.0.1:

  fake API  gateway.testing.fakekube.FakeKubeServer in this process (the
            reactor in the main thread, the measurements in a thread)
  backends  two twisted.web sites in one child process ("A" and "B"), each
            answering "<name> <request URI>", reached through ExternalName
            Services (externalName 127.0.0.1)
  gateway   twistd -n apimgw with k8s.gateway.enabled=true reading the
            fake's kubeconfig, its log as JSON

Objects: our GatewayClass and one Gateway with an HTTP listener for
``*.bench.example`` (routes from all namespaces), ``--routes`` HTTPRoutes
already present (one host each, two rules), then ``--iterations`` rounds
on a host of their own:

  create   an HTTPRoute → A                  until its host is answered by A
  update   the same route → B                until answered by B
  match    a rule for /m with a header match  until /m with the header → A
  delete   the route                          until 404

each timed from just before the write to the fake until the gateway
answers as expected (polled every ``--poll-ms`` over one keep-alive
connection). The figures include the gateway's deliberate delays: the
source coalesces a burst of changes (10 ms) and the reconciler a burst of
rebuilds (20 ms).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    REPO_DIR,
    Backends,
    GatewayProcess,
    Poller,
    Processes,
    child_env,
    command_line,
    environment_of,
    is_404,
    json_log_observer,  # noqa: F401  (the gateway's twistd --logger, see LOGGER)
    machine_line,
    percentile,
    run_with_fake_kube,
    save_report,
    serve_backends,
    served_by,
    timestamp,
)

SOURCE_DIR = REPO_DIR
LOGGER = "gatewayapi_bench.json_log_observer"
GATEWAY_API = "gateway.networking.k8s.io/v1"
NAMESPACE = "default"
CONTROLLER = "apimgw.io/gateway-controller"
DOMAIN = "bench.example"
KINDS = ("create", "update", "match", "delete")


def gateway_objects(ports: dict[str, int]) -> list[dict[str, Any]]:
    """The class, the Gateway and the two Services."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": GATEWAY_API, "kind": "GatewayClass", "metadata": {"name": "apimgw"},
         "spec": {"controllerName": CONTROLLER}},
        {"apiVersion": GATEWAY_API, "kind": "Gateway",
         "metadata": {"name": "bench", "namespace": NAMESPACE},
         "spec": {"gatewayClassName": "apimgw", "listeners": [
             {"name": "http", "port": 80, "protocol": "HTTP", "hostname": f"*.{DOMAIN}",
              "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
    ]
    for name, port in ports.items():
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": f"svc-{name.lower()}", "namespace": NAMESPACE},
                     "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                              "ports": [{"name": "http", "port": port}]}})
    return objs


def http_route(name: str, backend: str, port: int,
               header_rule: tuple[str, int] | None = None) -> dict[str, Any]:
    """An HTTPRoute for ``<name>.bench.example`` → ``backend``; optionally /m with a header → another."""
    rules: list[dict[str, Any]] = [{"backendRefs": [{"name": backend, "port": port}]}]
    if header_rule is not None:
        rules.insert(0, {
            "matches": [{"path": {"type": "PathPrefix", "value": "/m"},
                         "headers": [{"name": "x-bench", "value": "1"}]}],
            "backendRefs": [{"name": header_rule[0], "port": header_rule[1]}],
        })
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"parentRefs": [{"name": "bench", "sectionName": "http"}],
                     "hostnames": [f"{name}.{DOMAIN}"], "rules": rules}}


class Gateway(GatewayProcess):
    """``twistd -n apimgw`` with the Gateway API source only."""

    def __init__(self, procs: Processes, workdir: Path, kubeconfig: str) -> None:
        super().__init__(procs, workdir, "gateway")
        env = child_env(SOURCE_DIR, **{
            "k8s.gateway.enabled": "true",
            "k8s.gateway.namespace": NAMESPACE,
            "k8s.gateway.config.path": kubeconfig,
            # The backends are ExternalName Services naming 127.0.0.1.
            "k8s.gateway.allow-external-name": "true",
            "telemetry.logs.std": "none",
            "POD_NAME": "bench",
            "POD_NAMESPACE": NAMESPACE,
        })
        self.launch(self.twistd_argv(LOGGER), env)


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 1),
            "p95": round(percentile(values, 95), 1), "max": round(max(values), 1)}


def measure(args: argparse.Namespace, server: Any, reactor: Any, procs: Processes,
            workdir: Path, report: dict[str, Any]) -> None:
    from twisted.internet.threads import blockingCallFromThread

    def call(f: Callable[..., Any], *a: Any) -> Any:
        return blockingCallFromThread(reactor, f, *a)

    backends = Backends(procs, workdir, Path(__file__).resolve(), child_env(SOURCE_DIR))
    ports = backends.ports
    kubeconfig = str(workdir / "kubeconfig")
    call(server.kubeconfig, kubeconfig)
    for obj in gateway_objects(ports):
        call(server.set_object, obj)
    for i in range(args.routes):
        call(server.set_object, http_route(f"present-{i:04d}", "svc-a", ports["A"],
                                           ("svc-b", ports["B"])))
    gateway = Gateway(procs, workdir, kubeconfig)
    gateway.wait_ready(args.ready_timeout)
    poller = Poller(gateway.http_port, args.poll_ms / 1000, args.change_timeout)
    if args.routes:
        poller.until("/", served_by("A"), host=f"present-{args.routes - 1:04d}.{DOMAIN}")
    latency: dict[str, list[float]] = {k: [] for k in KINDS}
    for n in range(args.iterations):
        name = f"chg-{n:04d}"
        host = f"{name}.{DOMAIN}"
        steps: list[tuple[str, dict[str, Any] | None, str, Callable[[int, bytes], bool],
                          str | None]] = [
            ("create", http_route(name, "svc-a", ports["A"]), "/x", served_by("A"), None),
            ("update", http_route(name, "svc-b", ports["B"]), "/x", served_by("B"), None),
            ("match", http_route(name, "svc-b", ports["B"], ("svc-a", ports["A"])), "/m",
             served_by("A"), "1"),
            ("delete", None, "/x", is_404, None),
        ]
        for kind, obj, path, check, header in steps:
            poller.client.headers = {"x-bench": header} if header else {}
            t0 = time.monotonic()
            if obj is None:
                call(server.delete_object, GATEWAY_API, "HTTPRoute", NAMESPACE, name)
            else:
                call(server.set_object, obj)
            done, _ = poller.until(path, check, host=host)
            latency[kind].append((done - t0) * 1000)
        if (n + 1) % 10 == 0 or n + 1 == args.iterations:
            print(f"  {n + 1}/{args.iterations} rounds; last: "
                  + ", ".join(f"{k} {latency[k][-1]:.1f} ms" for k in KINDS), flush=True)
    poller.client.close()
    gateway.stop()
    report["changes"] = {kind: summary(latency[kind]) for kind in KINDS}
    everything = [v for k in KINDS for v in latency[k]]
    report["all"] = summary(everything)
    report["within_100ms"] = sum(1 for v in everything if v <= 100.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="change rounds (default 30)")
    parser.add_argument("--routes", type=int, default=200,
                        help="HTTPRoutes present besides the changing one (default 200)")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--change-timeout", type=float, default=15.0)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="seconds the whole run may take (default 600)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument("--serve-backends", metavar="NAME=PORT,...", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_backends:
        return serve_backends(args.serve_backends)
    if not (1 <= args.iterations <= 500 and 0 <= args.routes <= 5000 and args.poll_ms > 0):
        parser.error("--iterations 1..500, --routes 0..5000, --poll-ms > 0")
    sys.path.insert(0, str(SOURCE_DIR))
    stamp = timestamp()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    env = environment_of(SOURCE_DIR)
    report: dict[str, Any] = {
        "timestamp": stamp,
        "command": command_line("bench/gatewayapi_bench.py", argv),
        "environment": env,
        "settings": {"iterations": args.iterations, "routes": args.routes,
                     "poll_ms": args.poll_ms},
    }
    print(machine_line(env), flush=True)
    failed = run_with_fake_kube(
        lambda server, reactor, procs, workdir: measure(
            args, server, reactor, procs, workdir, report),
        source_dir=SOURCE_DIR, time_limit=args.time_limit, keep_temp=args.keep_temp,
        prefix="apimgw-gatewayapi-bench-",
    )
    if "changes" in report:
        print(f"\nHTTPRoute change → served, ms ({args.routes} other routes present, "
              f"polled every {args.poll_ms:g} ms):")
        for kind, s in report["changes"].items():
            print(f"  {kind:7} n={s['n']:3}  p50 {s.get('p50')}  p95 {s.get('p95')}  "
                  f"max {s.get('max')}")
        total = report["all"]["n"]
        print(f"  within 100 ms: {report['within_100ms']} of {total}")
    out = save_report(args.out_dir, "gatewayapi", stamp, report)
    print(f"\ncommand: {report['command']}\nresults: {out}")
    if failed:
        print(f"error: {failed[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
