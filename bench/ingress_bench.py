"""
Kubernetes Ingress benchmark: what one Ingress change costs the gateway,
and how long it takes to be served.

Part 1, translate and swap, in this process (no network, no reactor):
``--ingresses`` Ingresses (2 paths each: ``Prefix /ing-N/api`` and ``Exact
/ing-N/health``; 200 hosts, one in ten without a host; backends on 50
Services, the port by number or by name; the class by ``ingressClassName``,
1 in 25 by the annotation), the Services and our IngressClass, as the
informers hold them (with ``managedFields``). Measured twice: without TLS,
and with ``--tls-share`` (default 1 in 5) of the Ingresses carrying a TLS
entry on a host of their own and a ``kubernetes.io/tls`` Secret of their
own (all holding one EC certificate for ``*.tls.bench.example``).
``--repeat`` times:

  translate        translate_ingresses() of everything (no memo)
  first load       Store.replace_source("ingress", objects) + Reconciler.rebuild()
                   on an empty store (translate, route table, SNI map, swap)
  one change       one Ingress changed (another path, a newer managedFields
                   time): translate_ingresses() again (with the source's
                   IngressMemo when the tree has one, primed by the previous
                   translation) + replace_source + rebuild: all a change costs
                   the gateway's reactor thread besides the source's 10 ms and
                   the reconciler's 20 ms delays

The reconciler is the gateway's own (``twisted.internet.task.Clock``, an
SNI map builder as with the HTTPS listener), started and rebuilt directly.
The cyclic garbage collector runs as in the gateway (``gc.freeze()`` before
the objects arrive); the time spent in it is measured with ``gc.callbacks``
and each figure is also given without it.

Part 2, change to served, real processes on 127.0.0.1:

  fake API  gateway.testing.fakekube.FakeKubeServer in this process: the
            reactor runs in the main thread, the measurements in a thread
            that changes objects with blockingCallFromThread and polls the
            gateway with blocking HTTP
  backends  two twisted.web sites in one child process ("A" and "B"), each
            answering "<name> <path received>"; reached through Services of
            type ExternalName (externalName 127.0.0.1), so no cluster DNS
  gateway   twistd -n apimgw with k8s.ingress.enabled=true,
            k8s.ingress.namespace=default and k8s.ingress.config.path=<the
            fake's kubeconfig>, its log as JSON (microsecond times)

``--iterations`` rounds with no other Ingress, then ``--large-iterations``
rounds with ``--ingresses`` Ingresses (no TLS) present. Each round: create
an Ingress with a new path on Service A until that path is answered 200 by
A; update it to another path on Service B until that path is answered by B;
delete it until the path answers 404. Each is timed from just before the
write to the fake until the gateway answers as expected (polled every
``--poll-ms`` over one keep-alive connection, at most ``--change-timeout``
per change). The gateway's log gives, per change, the time to
"Configuration generation N live". Before the large rounds, a fresh gateway
is started ``--starts`` times with the Ingresses present and timed from
process creation to /readyz 200 and to the first request served, with the
phases from its log. Last, the same Ingresses with ``--tls-share`` TLS
entries and Secrets go into namespace bench-tls, and one more gateway
reading that namespace is started: the same figures, plus how many
certificates generation 1 holds, when all of them are live (waiting at most
``--cert-timeout``) and the requests the gateway made to the API server.

``--profile``: cProfile of the one-change case (part 1, collector off), and
py-spy attached to the large gateway during extra change rounds (part 2);
not part of the figures. ``--source DIR`` imports and runs the gateway from
another tree (e.g. a commit exported with ``git archive``). Every child
process is stopped by its PID (SIGTERM, then SIGKILL) in a ``finally``;
every wait has a timeout and part 2 a time limit (``--time-limit``). A
Markdown table goes to standard output and the figures as JSON to
bench/out/ingress-<timestamp>.json.

Run: python bench/ingress_bench.py [--quick] [--ingresses 5000] [--repeat 5]
     [--iterations 30] [--large-iterations 20] [--starts 3] [--tls-share 0.2]
     [--profile] [--skip swap|live|tls-start] [--source DIR]
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from _common import (
    BENCH_DIR,
    LOCALHOST,
    REPO_DIR,
    Backends,
    BenchError,
    GatewayProcess,
    Poller,
    Processes,
    child_env,
    command_line,
    environment_of,
    fmt,
    is_404,
    json_log_observer,  # noqa: F401  (the gateway's twistd --logger, see LOGGER)
    machine_line,
    percentile,
    py_spy_attached,
    rss_kib,
    run_with_fake_kube,
    save_report,
    serve_backends,
    served_by,
    spread,
    summarize_profile,
    timestamp,
)

#: Where the gateway runs from and is imported from (--source; default this checkout).
SOURCE_DIR = REPO_DIR
#: The gateway's twistd --logger: _common's, imported above (bench/ is on its PYTHONPATH).
LOGGER = "ingress_bench.json_log_observer"

CLASS_NAME = "azure-api-management"
CONTROLLER = "azure-api-management/gateway"
NETWORKING = "networking.k8s.io/v1"
NAMESPACE = "default"
#: The namespace of the start with TLS Ingresses (a gateway of its own reads it).
TLS_NAMESPACE = "bench-tls"
SERVICES = 50
HOSTS = 200
TLS_DOMAIN = "tls.bench.example"

# Gateway log lines (their log_format prefixes) the phases are read from.
LOG_STARTING = "twistd {version}"
LOG_LISTED = "Informer {informer}: listed {count} objects"
LOG_SERVED = "Kubernetes Ingress source: {count} Ingresses of class"
LOG_LIVE = "Configuration generation {number} live"


# --- the gateway's log ------------------------------------------------------


def _events(events: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [e for e in events if str(e.get("log_format", "")).startswith(prefix)]


# --- the Kubernetes objects -------------------------------------------------


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": NETWORKING,
        "kind": "IngressClass",
        "metadata": {"name": CLASS_NAME},
        "spec": {"controller": CONTROLLER},
    }


def cluster_service(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def external_service(name: str, port: int) -> dict[str, Any]:
    """A Service whose backend URL translates to http://127.0.0.1:<port>."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "ExternalName",
            "externalName": LOCALHOST,
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    }


def tls_secret(name: str, cert_pem: str, key_pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {
            "tls.crt": base64.b64encode(cert_pem.encode()).decode(),
            "tls.key": base64.b64encode(key_pem.encode()).decode(),
        },
    }


def simple_ingress(name: str, path: str, service: str, port: int) -> dict[str, Any]:
    """An Ingress with one Prefix path on any host (the change rounds)."""
    return {
        "apiVersion": NETWORKING,
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "ingressClassName": CLASS_NAME,
            "rules": [{"http": {"paths": [{
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": port}}},
            }]}}],
        },
    }


def _tls_every(share: float) -> int:
    return 0 if share <= 0 else max(1, round(1 / share))


def host_of(i: int, tls_every: int) -> str | None:
    """The host of Ingress ``i``: its own under TLS_DOMAIN with TLS, none for 1 in 10."""
    if tls_every and i % tls_every == 0:
        return f"ing-{i:05d}.{TLS_DOMAIN}"
    if i % 10 == 9:
        return None
    return f"app-{i % HOSTS:03d}.bench.example"


def bench_ingress(i: int, port: int, tls_every: int) -> dict[str, Any]:
    """
    Ingress ``i`` of the population: ``Prefix /ing-i/api`` and ``Exact
    /ing-i/health`` on Service ``svc-(i % 50)``, the port by number (even
    ``i``) or by name (odd); the class by ``ingressClassName``, 1 in 25 by
    the annotation.
    """
    name = f"ing-{i:05d}"
    service = f"svc-{i % SERVICES:02d}"
    backend_port = {"number": port} if i % 2 == 0 else {"name": "http"}
    backend = {"service": {"name": service, "port": backend_port}}
    rule: dict[str, Any] = {"http": {"paths": [
        {"path": f"/{name}/api", "pathType": "Prefix", "backend": backend},
        {"path": f"/{name}/health", "pathType": "Exact", "backend": copy.deepcopy(backend)},
    ]}}
    host = host_of(i, tls_every)
    if host:
        rule["host"] = host
    spec: dict[str, Any] = {"rules": [rule]}
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if i % 25 == 24:
        metadata["annotations"] = {"kubernetes.io/ingress.class": CONTROLLER}
    else:
        spec["ingressClassName"] = CLASS_NAME
    if tls_every and i % tls_every == 0:
        spec["tls"] = [{"hosts": [host], "secretName": f"tls-{name}"}]
    return {"apiVersion": NETWORKING, "kind": "Ingress", "metadata": metadata, "spec": spec}


def population(count: int, port: int, tls_every: int, cert: tuple[str, str] | None,
               service: Callable[[str, int], dict[str, Any]],
               namespace: str = NAMESPACE) -> dict[str, list[dict[str, Any]]]:
    """The Ingresses, the Services they use and their TLS Secrets, in ``namespace``."""
    ingresses = [bench_ingress(i, port, tls_every) for i in range(count)]
    services = [service(f"svc-{k:02d}", port) for k in range(SERVICES)]
    secrets = []
    if tls_every and cert is not None:
        secrets = [tls_secret(f"tls-ing-{i:05d}", *cert) for i in range(0, count, tls_every)]
    for obj in (*ingresses, *services, *secrets):
        obj["metadata"]["namespace"] = namespace
    return {"ingresses": ingresses, "services": services, "secrets": secrets}


def as_served(obj: dict[str, Any], rv: int, when: float) -> dict[str, Any]:
    """``obj`` with the metadata the API server adds (what an informer holds)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.update({
        "uid": f"00000000-0000-4000-8000-{rv:012d}",
        "resourceVersion": str(rv),
        "creationTimestamp": _rfc3339(when),
        "managedFields": [{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": out["apiVersion"],
            "time": _rfc3339(when),
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {}},
        }],
    })
    if out["kind"] in ("Ingress", "IngressClass"):
        meta["generation"] = 1
    return out


def wildcard_certificate() -> tuple[str, str]:
    """One EC certificate for ``*.TLS_DOMAIN`` (every TLS Secret holds it)."""
    from gateway.testing.certs import self_signed

    issued = self_signed(f"*.{TLS_DOMAIN}")
    return issued.chain_pem, issued.key_pem


# --- statistics -------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    vals = list(values)
    return {
        "n": len(vals),
        "median": round(statistics.median(vals), 2) if vals else None,
        "p50": round(percentile(vals, 50), 2) if vals else None,
        "p95": round(percentile(vals, 95), 2) if vals else None,
        "max": round(max(vals), 2) if vals else None,
        "min": round(min(vals), 2) if vals else None,
        "values": [round(v, 2) for v in vals],
    }


class GCTimer:
    """Time spent in the cyclic garbage collector (gc.callbacks), in seconds."""

    def __init__(self) -> None:
        import gc

        self._gc = gc
        self.total = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start
            self.collections[info["generation"]] += 1

    def __enter__(self) -> Self:
        self._gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._gc.callbacks.remove(self)


class Timed:
    """``with Timed(gc_timer) as t:`` → ``t.ms`` and ``t.gc_ms`` of the block."""

    def __init__(self, gc_timer: GCTimer) -> None:
        self.gc_timer = gc_timer
        self.ms = 0.0
        self.gc_ms = 0.0

    def __enter__(self) -> Self:
        self._gc0 = self.gc_timer.total
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.perf_counter() - self._t0) * 1000
        self.gc_ms = (self.gc_timer.total - self._gc0) * 1000


# --- part 1: translate and swap, in process ---------------------------------


def measure_swap(count: int, repeat: int, tls_share: float, profile_out: Path | None
                 ) -> dict[str, Any]:
    """Part 1 (see the module docstring). Returns the timings in ms."""
    import gc
    import resource
    from dataclasses import replace

    from twisted.internet.task import Clock

    from gateway.model import Store
    from gateway.reconcile import Reconciler
    from gateway.routing import RouteTable
    from gateway.tls import SNIMapBuilder, TLSSettings, generate_default_certificate
    from gateway.translate import translate
    try:  # since issue 12 the decoder lives in the Ingress source's package
        from gateway.sources.ingress import SOURCE, IngressInputs, IngressMemo, IngressSettings
        from gateway.sources.ingress import decode_ingresses as translate_ingresses
    except ImportError:
        from gateway.translate.ingress import (
            SOURCE,
            IngressInputs,
            IngressSettings,
            translate_ingresses,
        )

        try:  # since 51d3caf the source keeps an IngressMemo from one translation to the next
            from gateway.translate.ingress import IngressMemo
        except ImportError:
            IngressMemo = None

    def new_memo() -> Any:
        return IngressMemo() if IngressMemo is not None else None

    def translate_with(inputs: Any, memo: Any) -> Any:
        """translate_ingresses as the source calls it (with its memo, when it has one)."""
        return translate_ingresses(inputs) if memo is None else translate_ingresses(inputs, memo)

    tls_every = _tls_every(tls_share)
    cert = wildcard_certificate() if tls_every else None
    # As Gateway.startService: what exists at start is frozen; the
    # Kubernetes objects arrive later and stay in the collector's view.
    gc.collect()
    gc.freeze()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss0 = rss_kib()
    now = time.time()
    objs = population(count, 8080, tls_every, cert, cluster_service)
    rv = iter(range(1000, 10**9))
    served = {k: [as_served(o, next(rv), now - 3600) for o in v] for k, v in objs.items()}
    settings = IngressSettings()
    inputs = IngressInputs(
        ingresses=tuple(served["ingresses"]),
        ingress_classes=(as_served(ingress_class(), next(rv), now - 3600),),
        services=tuple(served["services"]),
        secrets=tuple(served["secrets"]),
        settings=settings,
    )
    builder = SNIMapBuilder(TLSSettings(), generate_default_certificate(now))
    names = ("translate", "first_load", "change", "change_translate", "change_replace",
             "change_rebuild", "rebuild_translate", "rebuild_route_table", "rebuild_sni")
    ms: dict[str, list[float]] = {n: [] for n in names}
    gc_ms: dict[str, list[float]] = {n: [] for n in names}
    counts: dict[str, int] = {}
    gct = GCTimer()

    def record(name: str, t: Timed) -> None:
        ms[name].append(t.ms)
        gc_ms[name].append(t.gc_ms)

    with gct:
        for r in range(repeat):
            with Timed(gct) as t:
                result = translate_ingresses(inputs)  # everything, no memo
            record("translate", t)
            counts["objects"] = len(result.objects)
            counts["problems"] = len(result.problems)
            counts["served"] = len(result.served)

            clock = Clock()
            clock.advance(now)
            store = Store()
            reconciler = Reconciler(store, clock, sni=builder)
            reconciler.startService()  # no sources to wait for: generation 1, empty
            with Timed(gct) as t:
                store.replace_source(SOURCE, result.objects)
                generation = reconciler.rebuild()
            record("first_load", t)
            _cancel_pending(clock)  # the reconciler's own delayed rebuild: done directly
            if generation is None:
                raise BenchError("the first rebuild failed")
            counts["routes"] = len(generation.config.routes)
            counts["certificates"] = len(generation.config.certificates)
            counts["config_problems"] = len(generation.config.problems)

            # The source's memo, as after its previous translation (untimed).
            memo = new_memo()
            if memo is not None:
                translate_with(inputs, memo)
            # One Ingress changed: another path, a newer write.
            k = (r * 7919) % count
            changed = copy.deepcopy(served["ingresses"][k])
            changed["spec"]["rules"][0]["http"]["paths"][0]["path"] = f"/changed-{r}/api"
            changed["metadata"]["managedFields"][0]["time"] = _rfc3339(now + r)
            changed["metadata"]["resourceVersion"] = str(next(rv))
            ingresses = list(inputs.ingresses)
            ingresses[k] = changed
            changed_inputs = replace(inputs, ingresses=tuple(ingresses))
            clock.advance(1.0)
            with Timed(gct) as t:
                with Timed(gct) as t1:
                    result2 = translate_with(changed_inputs, memo)
                with Timed(gct) as t2:
                    store.replace_source(SOURCE, result2.objects)
                with Timed(gct) as t3:
                    generation2 = reconciler.rebuild()
            _cancel_pending(clock)
            record("change", t)
            record("change_translate", t1)
            record("change_replace", t2)
            record("change_rebuild", t3)
            if generation2 is None or generation2.number != generation.number + 1:
                raise BenchError("the rebuild after one change failed")
            if not any(e.path == f"/changed-{r}/api" for e in generation2.config.routes):
                raise BenchError("the changed Ingress is not in the new generation")

            # The rebuild's parts, separately (what Reconciler.rebuild does).
            with Timed(gct) as t:
                config = translate(store.objects(), now=clock.seconds(),
                                   previous=generation2.config)
            record("rebuild_translate", t)
            with Timed(gct) as t:
                RouteTable.build(config.routes)
            record("rebuild_route_table", t)
            with Timed(gct) as t:
                builder.build(config, generation2.sni)
            record("rebuild_sni", t)
            reconciler.stopService()
            print(f"  repeat {r + 1}/{repeat}: translate {ms['translate'][-1]:.0f} ms, first "
                  f"load {ms['first_load'][-1]:.0f} ms, one change {ms['change'][-1]:.0f} ms "
                  f"(GC {gc_ms['change'][-1]:.0f} ms)", flush=True)

    profile_lines: list[str] = []
    if profile_out is not None:
        import cProfile
        import pstats

        # With the collector off: its pauses would be charged to whichever
        # function allocated last (the table above has the GC's share).
        gc.disable()
        profiler = cProfile.Profile()
        profiler.enable()
        for r in range(3):
            ingresses = list(changed_inputs.ingresses)
            ingresses[0] = copy.deepcopy(ingresses[0])
            ingresses[0]["spec"]["rules"][0]["http"]["paths"][0]["path"] = f"/profiled-{r}/api"
            changed_inputs = replace(changed_inputs, ingresses=tuple(ingresses))
            result3 = translate_with(changed_inputs, memo)
            store.replace_source(SOURCE, result3.objects)
            clock.advance(1.0)
            reconciler.rebuild()
            _cancel_pending(clock)
        profiler.disable()
        gc.enable()
        profiler.dump_stats(str(profile_out))
        stream = _Lines()
        stats = pstats.Stats(profiler, stream=stream)  # type: ignore[arg-type]
        stats.sort_stats("cumulative").print_stats(r"gateway/", 30)
        stats.sort_stats("tottime").print_stats(25)
        profile_lines = stream.lines

    maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss1 = rss_kib()
    return {
        "ingresses": count,
        "paths": 2 * count,
        "services": len(served["services"]),
        "secrets": len(served["secrets"]),
        "tls_share": tls_share,
        "counts": counts,
        "ingress_memo": IngressMemo is not None,
        "ms": {n: summary(v) for n, v in ms.items()},
        "gc_ms": {n: summary(v) for n, v in gc_ms.items()},
        "ms_without_gc": {n: summary([a - b for a, b in zip(ms[n], gc_ms[n])]) for n in ms},
        "gc_collections": gct.collections,
        "gc_total_ms": round(gct.total * 1000, 1),
        "peak_rss_delta_mib": round((maxrss1 - maxrss0) / 1024, 1),
        "rss_delta_mib": None if rss0 is None or rss1 is None else round((rss1 - rss0) / 1024, 1),
        "profile": profile_lines,
    }


def _cancel_pending(clock: Any) -> None:
    for call in clock.getDelayedCalls():
        if call.active():
            call.cancel()


class _Lines:
    """A file-like sink collecting pstats' output lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        text = self._partial + text
        *full, self._partial = text.split("\n")
        self.lines.extend(line.rstrip() for line in full)
        return len(text)

    def flush(self) -> None:
        pass


# --- part 2: the backends, the gateway, the changes --------------------------


class Gateway(GatewayProcess):
    """``twistd -n apimgw`` with the Ingress source only (see GatewayProcess)."""

    def __init__(self, procs: Processes, workdir: Path, name: str, kubeconfig: str,
                 namespace: str = NAMESPACE) -> None:
        super().__init__(procs, workdir, name)
        self.argv = self.twistd_argv(LOGGER)
        env = child_env(SOURCE_DIR, **{
            "k8s.ingress.enabled": "true",
            "k8s.ingress.namespace": namespace,
            "k8s.ingress.config.path": kubeconfig,
            "telemetry.logs.std": "none",
            "POD_NAME": name,
            "POD_NAMESPACE": namespace,
        })
        self.launch(self.argv, env)


class Kube:
    """
    The fake API server, driven from the measuring thread: every call runs
    in the reactor thread (blockingCallFromThread) and returns once done.
    """

    def __init__(self, server: Any, reactor: Any) -> None:
        from twisted.internet.threads import blockingCallFromThread

        self.server = server
        self._call = lambda f, *a: blockingCallFromThread(reactor, f, *a)

    def set(self, obj: dict[str, Any]) -> None:
        self._call(self.server.set_object, obj)

    def delete_ingress(self, name: str) -> None:
        self._call(self.server.delete_object, NETWORKING, "Ingress", NAMESPACE, name)

    def set_many(self, objects: Sequence[dict[str, Any]], chunk: int = 250) -> None:
        def put(batch: Sequence[dict[str, Any]]) -> None:
            for obj in batch:
                self.server.set_object(obj)

        for start in range(0, len(objects), chunk):
            self._call(put, objects[start:start + chunk])

    def request_counts(self) -> dict[str, int]:
        """The fake's request log so far, counted by ``verb plural``."""
        def count() -> dict[str, int]:
            out: dict[str, int] = {}
            for r in self.server.requests:
                key = f"{r.verb} {r.plural}".strip()
                out[key] = out.get(key, 0) + 1
            return out

        return self._call(count)


def measure_changes(kube: Kube, gateway: Gateway, ports: dict[str, int], rounds: int,
                    poll: float, timeout: float, prefix: str, label: str) -> dict[str, Any]:
    """
    ``rounds`` × (create on A, update to another path on B, delete → 404),
    each timed from just before the write to the fake until the gateway
    answers as expected. Also the time from the write to the gateway's
    "Configuration generation N live" line, from its log.
    """
    poller = Poller(gateway.http_port, poll, timeout)
    kinds = ("create", "update", "delete")
    latency: dict[str, list[float]] = {k: [] for k in kinds}
    write_ms: dict[str, list[float]] = {k: [] for k in kinds}
    polls: dict[str, list[int]] = {k: [] for k in kinds}
    stamps: list[tuple[str, float, float]] = []  # kind, wall time of the write, served (wall)
    for n in range(rounds):
        name = f"{prefix}-{n:04d}"
        path_a, path_b = f"/{name}", f"/{name}-v2"
        steps = (
            ("create", simple_ingress(name, path_a, "svc-a", ports["A"]), path_a + "/x",
             served_by("A")),
            ("update", simple_ingress(name, path_b, "svc-b", ports["B"]), path_b + "/x",
             served_by("B")),
            ("delete", None, path_b + "/x", is_404),
        )
        for kind, obj, probe, check in steps:
            wall = time.time()
            t0 = time.monotonic()
            if obj is None:
                kube.delete_ingress(name)
            else:
                kube.set(obj)
            t1 = time.monotonic()
            done, count = poller.until(probe, check)
            latency[kind].append((done - t0) * 1000)
            write_ms[kind].append((t1 - t0) * 1000)
            polls[kind].append(count)
            stamps.append((kind, wall, wall + (done - t0)))
        if (n + 1) % 10 == 0 or n + 1 == rounds:
            print(f"  {label}: {n + 1}/{rounds} rounds, last create "
                  f"{latency['create'][-1]:.1f} ms, update {latency['update'][-1]:.1f} ms, "
                  f"delete {latency['delete'][-1]:.1f} ms", flush=True)
    poller.client.close()
    # The gateway's side: the first "generation live" after each write.
    time.sleep(0.2)  # the log is written by the gateway process; let it flush
    lives = sorted(e["log_time"] for e in _events(gateway.events(), LOG_LIVE))
    to_live: dict[str, list[float]] = {k: [] for k in kinds}
    for kind, wall, served_wall in stamps:
        after = [t for t in lives if t >= wall]
        if after and after[0] <= served_wall + 0.05:
            to_live[kind].append((after[0] - wall) * 1000)
    out: dict[str, Any] = {"label": label, "rounds": rounds}
    for kind in kinds:
        out[kind] = {
            "latency_ms": summary(latency[kind]),
            "write_ms": summary(write_ms[kind]),
            "polls": summary(polls[kind]),
            "to_generation_live_ms": summary(to_live[kind]),
        }
    return out


def wait_certificates(gateway: Gateway, expected: int, timeout: float
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """
    Wait (reading the gateway's log every 100 ms) for the first "generation
    live" line with ``expected`` certificates. Returns (that event or None
    after ``timeout`` seconds, the last "generation live" event).
    """
    deadline = time.monotonic() + timeout
    while True:
        lives = _events(gateway.events(), LOG_LIVE)
        for event in lives:
            if event.get("certificates") == expected:
                return event, lives[-1]
        if time.monotonic() > deadline or gateway.proc.poll() is not None:
            return None, lives[-1] if lives else None
        time.sleep(0.1)


def measure_start(procs: Processes, workdir: Path, name: str, kubeconfig: str, kube: Kube,
                  probe: tuple[str | None, str], certificates: int, timeout: float,
                  cert_timeout: float, keep: bool, namespace: str = NAMESPACE
                  ) -> tuple[dict[str, Any], Gateway | None]:
    """
    A fresh gateway with the Ingresses present: process start → /readyz
    200, → first request served (``probe``: host, path), → the first
    generation with all ``certificates``; the phases from its log; the
    requests it made to the API server meanwhile.
    """
    before = kube.request_counts()
    gateway = Gateway(procs, workdir, name, kubeconfig, namespace)
    try:
        ready = gateway.wait_ready(timeout)
        host, path = probe
        served, _ = Poller(gateway.http_port, 0.002, timeout).until(path, served_by("A"), host)
        complete = last_live = None
        if certificates:
            complete, last_live = wait_certificates(gateway, certificates, cert_timeout)
        time.sleep(0.3)
        events = gateway.events()
        after = kube.request_counts()
        t0 = gateway.started
        lives = _events(events, LOG_LIVE)
        figures: dict[str, Any] = {
            "ready_s": round(ready - gateway.started_mono, 3),
            "served_s": round(served - gateway.started_mono, 3),
            "rss_mib": round((gateway.rss_kib() or 0) / 1024, 1),
            "certificates_expected": certificates,
            "generation1_certificates": lives[0].get("certificates") if lives else None,
            "generation1_routes": lives[0].get("routes") if lives else None,
            "api_requests": {k: after.get(k, 0) - before.get(k, 0)
                             for k in sorted(set(after) | set(before))
                             if after.get(k, 0) != before.get(k, 0)},
            # Ingress problems are logged once each by the reconciler.
            "warnings_logged": sum(1 for e in events
                                   if str(e.get("log_format", "")).startswith("Configuration problem in")
                                   and str(e.get("object", "")).startswith("ingress:")),
        }
        if certificates:
            figures["all_certificates_s"] = (
                None if complete is None else round(complete["log_time"] - t0, 3))
            figures["generations_until_certificates"] = (
                None if complete is None else complete.get("number"))
            figures["certificates_waited_s"] = cert_timeout
            if last_live is not None:
                figures["certificates_at_end"] = last_live.get("certificates")
                figures["last_generation"] = last_live.get("number")
                figures["last_generation_s"] = round(last_live["log_time"] - t0, 3)
            figures["fetch_failures_logged"] = sum(
                1 for e in events if str(e.get("log_format", "")).startswith(
                    "Informer {informer}: could not fetch"))
        starting = _events(events, LOG_STARTING)
        listed = [e for e in _events(events, LOG_LISTED)
                  if "Ingress" in str(e.get("informer")) and "IngressClass" not in
                  str(e.get("informer"))]
        all_listed = _events(events, LOG_LISTED)
        translated = _events(events, LOG_SERVED)
        live = [e for e in _events(events, LOG_LIVE) if e.get("number") == 1]
        if starting and translated and live:
            t_start = starting[0]["log_time"]
            t_trans = translated[0]["log_time"]
            t_live = live[0]["log_time"]
            before = [e["log_time"] for e in all_listed if e["log_time"] <= t_trans]
            t_listed = max(before) if before else None
            figures.update({
                "to_twistd_s": round(t_start - t0, 3),
                "twistd_to_listed_s": None if t_listed is None else round(t_listed - t_start, 3),
                "ingresses_listed": listed[0].get("count") if listed else None,
                "listed_to_translated_s": None if t_listed is None
                else round(t_trans - t_listed, 3),
                "translated_to_live_s": round(t_live - t_trans, 3),
                "live_to_ready_ms": round((ready - gateway.started_mono
                                           - (t_live - t0)) * 1000, 1),
                "ingresses_served": translated[0].get("count"),
            })
        tls = (f"generation 1 with {figures['generation1_certificates']} of {certificates} "
               f"certificates, all after {figures.get('all_certificates_s')} s (generation "
               f"{figures.get('generations_until_certificates')}), " if certificates else "")
        print(f"  {name}: pid {gateway.pid}, ready {figures['ready_s']:.2f} s, served "
              f"{figures['served_s']:.2f} s, {tls}RSS {figures['rss_mib']} MiB; "
              f"API requests {figures['api_requests']}", flush=True)
    except BaseException:
        gateway.stop()
        raise
    if keep:
        return figures, gateway
    gateway.stop()
    return figures, None


def run_live(args: argparse.Namespace, procs: Processes, workdir: Path, server: Any,
             reactor: Any, report: dict[str, Any]) -> None:
    """Part 2, in the measuring thread (the reactor runs the fake in the main thread)."""
    kube = Kube(server, reactor)
    poll = args.poll_ms / 1000
    backends = Backends(procs, workdir, Path(__file__).resolve(), child_env(SOURCE_DIR))
    ports = backends.ports
    print(f"backends: pid {backends.proc.pid}, A 127.0.0.1:{ports['A']}, "
          f"B 127.0.0.1:{ports['B']}", flush=True)
    kubeconfig = str(workdir / "kubeconfig")
    kube._call(server.kubeconfig, kubeconfig)
    kube.set(ingress_class())
    kube.set(external_service("svc-a", ports["A"]))
    kube.set(external_service("svc-b", ports["B"]))

    if args.iterations:
        print(f"[live] change to served, no other Ingress ({args.iterations} rounds)",
              flush=True)
        gateway = Gateway(procs, workdir, "gateway-small", kubeconfig)
        try:
            ready = gateway.wait_ready(args.ready_timeout)
            report["small_ready_s"] = round(ready - gateway.started_mono, 3)
            print(f"  gateway pid {gateway.pid} ready after {report['small_ready_s']:.2f} s",
                  flush=True)
            report["changes_small"] = measure_changes(
                kube, gateway, ports, args.iterations, poll, args.change_timeout, "chg",
                "no other Ingress")
        finally:
            gateway.stop()

    n = args.ingresses
    if args.large_iterations or args.starts:
        run_large(args, procs, workdir, kube, kubeconfig, ports, report)
    tls_every = _tls_every(args.tls_share)
    if not tls_every or "tls-start" in args.skip:
        return
    # The same Ingresses with TLS entries and Secrets, in a namespace of their
    # own, read by one more fresh gateway.
    objs = population(n, ports["A"], tls_every, wildcard_certificate(), external_service,
                      TLS_NAMESPACE)
    t0 = time.monotonic()
    kube.set_many(objs["services"] + objs["secrets"] + objs["ingresses"])
    print(f"[live] {n:,} Ingresses, {len(objs['secrets']):,} of them with TLS and a Secret, "
          f"in namespace {TLS_NAMESPACE}: written in {time.monotonic() - t0:.1f} s", flush=True)
    last = n - 1
    probe = (host_of(last, tls_every), f"/ing-{last:05d}/api/x")
    figures, _ = measure_start(procs, workdir, "gateway-tls", kubeconfig, kube, probe,
                               len(objs["secrets"]), args.load_timeout, args.cert_timeout,
                               False, TLS_NAMESPACE)
    report["tls_start"] = figures


def run_large(args: argparse.Namespace, procs: Processes, workdir: Path, kube: Kube,
              kubeconfig: str, ports: dict[str, int], report: dict[str, Any]) -> None:
    """``--ingresses`` in namespace default (no TLS): starts, then change rounds."""
    n = args.ingresses
    poll = args.poll_ms / 1000
    objs = population(n, ports["A"], 0, None, external_service)
    t0 = time.monotonic()
    kube.set_many(objs["services"] + objs["ingresses"])
    print(f"[live] {n:,} Ingresses ({2 * n:,} paths) and {len(objs['services'])} Services "
          f"written to the fake in {time.monotonic() - t0:.1f} s", flush=True)
    last = n - 1
    probe = (host_of(last, 0), f"/ing-{last:05d}/api/x")
    starts = []
    large: Gateway | None = None
    try:
        for run in range(1, max(1, args.starts) + 1):
            keep = run == max(1, args.starts) and args.large_iterations > 0
            figures, kept = measure_start(procs, workdir, f"gateway-large-{run}", kubeconfig,
                                          kube, probe, 0, args.load_timeout, 0, keep)
            starts.append(figures)
            if kept is not None:
                large = kept
        report["starts"] = starts
        if large is not None:
            print(f"[live] change to served with {n:,} Ingresses present "
                  f"({args.large_iterations} rounds)", flush=True)
            report["changes_large"] = measure_changes(
                kube, large, ports, args.large_iterations, poll, args.change_timeout, "big",
                f"{n:,} Ingresses")
            if args.profile:
                out = args.out_dir / f"ingress-{args.stamp}-changes.pyspy.txt"
                print(f"[profile] the changes again, py-spy attached → {out}", flush=True)
                with py_spy_attached(procs, large.pid, out):
                    measure_changes(kube, large, ports, args.large_iterations, poll,
                                    args.change_timeout, "spy", "profiled, not reported")
                report["live_profile"] = summarize_profile(out)
                print("\n".join(f"  {line}" for line in report["live_profile"]), flush=True)
    finally:
        if large is not None:
            large.stop()


# --- report -----------------------------------------------------------------


def environment() -> dict[str, Any]:
    return environment_of(SOURCE_DIR)


def print_report(report: dict[str, Any]) -> None:
    env = report["environment"]
    s = report["settings"]
    print()
    print(machine_line(env))
    swaps = report.get("swap") or []
    if swaps:
        first = swaps[0]
        print()
        print(f"### Translate and swap, in process: {first['ingresses']:,} Ingresses "
              f"({first['paths']:,} paths), {first['services']} Services; "
              f"{first['ms']['translate']['n']} repeats (ms: median, max, and the median "
              "without the time spent in the cyclic garbage collector); the one-change "
              + ("translation with the source's IngressMemo" if first.get("ingress_memo")
                 else "translation without a memo (this tree has none)"))
        print()
        head = " | ".join(
            f"{'no TLS' if not w['secrets'] else format(w['secrets'], ',') + ' with TLS'}: "
            "median | max | without GC" for w in swaps)
        print(f"| step | {head} |")
        print("|---|" + "---:|---:|---:|" * len(swaps))
        rows = (
            ("translate_ingresses (all Ingresses)", "translate"),
            ("first load: replace_source + rebuild (empty store)", "first_load"),
            ("one Ingress changed: translate_ingresses + replace_source + rebuild", "change"),
            ("… of which translate_ingresses", "change_translate"),
            ("… of which Store.replace_source", "change_replace"),
            ("… of which Reconciler.rebuild", "change_rebuild"),
            ("a full rebuild's parts (no memo): translate()", "rebuild_translate"),
            ("… RouteTable.build", "rebuild_route_table"),
            ("… SNI map (OpenSSL contexts reused)", "rebuild_sni"),
        )
        for label, key in rows:
            cells = " | ".join(
                f"{fmt(w['ms'][key]['median'])} | {fmt(w['ms'][key]['max'])} | "
                f"{fmt(w['ms_without_gc'][key]['median'])}" for w in swaps)
            print(f"| {label} | {cells} |")
        print()
        for w in swaps:
            c = w["counts"]
            print(f"{'No TLS' if not w['secrets'] else format(w['secrets'], ',') + ' with TLS'}: "
                  f"{c.get('routes', 0):,} routes, {c.get('certificates', 0):,} certificates, "
                  f"{c.get('config_problems', 0)} problems per generation; peak RSS of this "
                  f"process +{w['peak_rss_delta_mib']} MiB, current RSS +{w['rss_delta_mib']} "
                  f"MiB; collections (gen 0/1/2) {'/'.join(map(str, w['gc_collections']))}, "
                  f"{w['gc_total_ms']:,.0f} ms in the collector over the repeats "
                  f"(one change: GC {'/'.join(fmt(v, 0) for v in w['gc_ms']['change']['values'])}"
                  " ms).")
    rows2 = [("no other Ingress", report.get("changes_small")),
             (f"{s['ingresses']:,} Ingresses present", report.get("changes_large"))]
    if any(r for _, r in rows2):
        print()
        print(f"### Change to served (poll every {s['poll_ms']:g} ms; ms from just before "
              "the write to the fake API server)")
        print()
        print("| Ingresses | change | n | p50 ms | p95 ms | max ms | "
              "write → generation live, p50 ms |")
        print("|---|---|---:|---:|---:|---:|---:|")
        labels = {"create": "create → served by A", "update": "update (path, Service B) → "
                  "served by B", "delete": "delete → 404"}
        for label, data in rows2:
            if not data:
                continue
            for kind in ("create", "update", "delete"):
                lat = data[kind]["latency_ms"]
                live = data[kind]["to_generation_live_ms"]
                print(f"| {label} | {labels[kind]} | {lat['n']} | {fmt(lat['p50'])} | "
                      f"{fmt(lat['p95'])} | {fmt(lat['max'])} | {fmt(live['p50'])} |")
    columns = []
    if report.get("starts"):
        columns.append(("no TLS", report["starts"]))
    if report.get("tls_start"):
        tls = report["tls_start"]
        columns.append((f"{tls['certificates_expected']:,} with TLS", [tls]))
    if columns:
        print()
        print(f"### Start with {s['ingresses']:,} Ingresses present (median of the starts, "
              "min–max in brackets)")
        print()
        print("| measurement | " + " | ".join(f"{t} ({len(r)} start{'s' * (len(r) > 1)})"
                                             for t, r in columns) + " |")
        print("|---|" + "---:|" * len(columns))

        def row(label: str, key: str, digits: int = 2) -> None:
            cells = (spread([run.get(key) for run in runs], digits=digits) for _, runs in columns)
            print(f"| {label} | " + " | ".join(cells) + " |")

        row("process start → /readyz 200, s", "ready_s")
        row("process start → first request served, s", "served_s")
        row("log: start → twistd starting up, s", "to_twistd_s")
        row("log: starting up → last informer list done, s", "twistd_to_listed_s")
        row("log: listed → Ingresses translated, reported, in the store, s",
            "listed_to_translated_s")
        row("log: translated → generation 1 live (rebuild), s", "translated_to_live_s")
        row("generation 1 live → /readyz 200 seen, ms", "live_to_ready_ms", 1)
        row("gateway RSS after ready, MiB", "rss_mib", 0)
        row("Ingress problems logged", "warnings_logged", 0)
        if report.get("tls_start"):
            row("TLS certificates in generation 1", "generation1_certificates", 0)
            row("process start → every certificate live, s", "all_certificates_s")
            row("certificates live at the end of the wait", "certificates_at_end", 0)
            row("… in generation number", "last_generation", 0)
            row("… live at, s after process start", "last_generation_s")
            row("Secret GETs that failed (logged)", "fetch_failures_logged", 0)
        print()
        for title, runs in columns:
            requests = runs[0].get("api_requests") or {}
            text = ", ".join(f"{k} {v:,}" for k, v in sorted(requests.items()))
            print(f"API server requests during the first start, {title}: {text}")
        if report.get("small_ready_s") is not None:
            print(f"For comparison: start → /readyz 200 with no Ingress: "
                  f"{report['small_ready_s']:.2f} s.")
    for title, key in (("cProfile, one change (part 1)", "swap_profile"),
                       ("py-spy, changes on the large gateway", "live_profile")):
        lines = report.get(key)
        if lines:
            print()
            print(f"{title}:")
            for line in lines:
                print(f"  {line}")


# --- main -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Kubernetes Ingress: translate and swap in process; change to served "
                    "through a real gateway and a fake API server.")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 1,000 Ingresses, 2 repeats, 10 + 5 rounds, 1 start")
    parser.add_argument("--ingresses", type=int, default=None,
                        help="Ingresses (2 paths each) of the large case (default 5000, "
                             "--quick 1000)")
    parser.add_argument("--tls-share", type=float, default=0.2,
                        help="share of the Ingresses with a TLS entry and Secret (default 0.2)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="repeats of part 1 (default 5, --quick 2)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="change rounds with no other Ingress (default 30, --quick 10)")
    parser.add_argument("--large-iterations", type=int, default=None,
                        help="change rounds with the Ingresses present (default 20, --quick 5)")
    parser.add_argument("--starts", type=int, default=None,
                        help="fresh gateway starts with the Ingresses present (default 3, "
                             "--quick 1)")
    parser.add_argument("--poll-ms", type=float, default=2.0,
                        help="interval between gateway requests while waiting for a change")
    parser.add_argument("--change-timeout", type=float, default=15.0,
                        help="seconds one change may take to be served")
    parser.add_argument("--ready-timeout", type=float, default=30.0,
                        help="seconds a gateway with no Ingress may take to be ready")
    parser.add_argument("--load-timeout", type=float, default=120.0,
                        help="seconds a gateway may take to be ready with the Ingresses")
    parser.add_argument("--time-limit", type=float, default=1200.0,
                        help="seconds the whole run may take")
    parser.add_argument("--cert-timeout", type=float, default=45.0,
                        help="seconds to wait, after the start with TLS Ingresses, for every "
                             "certificate to be live (default 45: past the API client's 30 s "
                             "request timeout)")
    parser.add_argument("--skip", choices=("swap", "live", "tls-start"), action="append",
                        default=[], help="leave out part 1 (swap), part 2 (live) or part 2's "
                                         "start with TLS Ingresses (tls-start)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile (not part of the figures): cProfile of the "
                             "one-change case, py-spy attached to the large gateway during "
                             "extra change rounds; files to bench/out/")
    parser.add_argument("--source", type=Path, default=REPO_DIR,
                        help="the tree to import and run the gateway from (default this "
                             "checkout), e.g. a commit exported with git archive")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out",
                        help="where the JSON (and --profile's files) go (default: %(default)s)")
    parser.add_argument("--keep-temp", action="store_true",
                        help="keep the temporary directory (logs, kubeconfig)")
    parser.add_argument("--serve-backends", metavar="NAME=PORT,...", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_backends:
        return serve_backends(args.serve_backends)

    global SOURCE_DIR
    SOURCE_DIR = args.source.resolve()
    if not (SOURCE_DIR / "gateway" / "sources" / "ingress").exists():
        parser.error(f"--source {SOURCE_DIR}: no apimgw tree with the Ingress source there")
    sys.path.insert(0, str(SOURCE_DIR))
    quick = args.quick
    args.ingresses = args.ingresses if args.ingresses is not None else (1000 if quick else 5000)
    args.repeat = args.repeat if args.repeat is not None else (2 if quick else 5)
    args.iterations = args.iterations if args.iterations is not None else (10 if quick else 30)
    args.large_iterations = (args.large_iterations if args.large_iterations is not None
                             else (5 if quick else 20))
    args.starts = args.starts if args.starts is not None else (1 if quick else 3)
    if not (1 <= args.ingresses <= 50000 and 1 <= args.repeat <= 50):
        parser.error("--ingresses 1..50000, --repeat 1..50")
    if not (0 <= args.iterations <= 500 and 0 <= args.large_iterations <= 500
            and 0 <= args.starts <= 10):
        parser.error("--iterations 0..500, --large-iterations 0..500, --starts 0..10")
    if not (0 <= args.tls_share <= 1 and args.poll_ms > 0):
        parser.error("--tls-share 0..1, --poll-ms > 0")

    args.stamp = timestamp()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "timestamp": args.stamp,
        "command": command_line("bench/ingress_bench.py", argv),
        "environment": environment(),
        "settings": {
            "ingresses": args.ingresses, "tls_share": args.tls_share, "repeat": args.repeat,
            "iterations": args.iterations, "large_iterations": args.large_iterations,
            "starts": args.starts, "poll_ms": args.poll_ms,
            "change_timeout_s": args.change_timeout, "source": str(SOURCE_DIR),
        },
    }
    print(f"{report['environment']['cpu_count']} CPUs; source {SOURCE_DIR}", flush=True)

    if "swap" not in args.skip:
        shares = [0.0] + ([args.tls_share] if args.tls_share > 0 else [])
        report["swap"] = []
        for share in shares:
            print(f"[swap] translate and swap in process: {args.ingresses:,} Ingresses, "
                  f"{share:.0%} with TLS, {args.repeat} repeats", flush=True)
            profile_out = (args.out_dir / f"ingress-{args.stamp}-change-tls{share:g}.cprofile"
                           if args.profile else None)
            try:
                swap = measure_swap(args.ingresses, args.repeat, share, profile_out)
            except BenchError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            report.setdefault("swap_profile", []).extend(
                [f"--- {share:.0%} with TLS ---", *swap.pop("profile")]
                if profile_out is not None else [])
            report["swap"].append(swap)
            import gc

            gc.collect()

    failed: list[BaseException] = []
    if "live" not in args.skip:
        failed = run_reactor_part(args, report, started)

    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print_report(report)
    out = save_report(args.out_dir, "ingress", args.stamp, report)
    print(f"\ncommand: {report['command']}")
    print(f"results: {out} ({report['elapsed_s']} s)")
    if failed:
        print(f"error: {failed[0]}", file=sys.stderr)
        return 1
    return 0


def run_reactor_part(args: argparse.Namespace, report: dict[str, Any],
                     started: float) -> list[BaseException]:
    """
    Part 2: the fake API server in the reactor (main thread), the
    measurements in a thread; children stopped by PID at the end.
    Returns the errors (empty: it worked).
    """
    return run_with_fake_kube(
        lambda server, reactor, procs, workdir: run_live(
            args, procs, workdir, server, reactor, report),
        source_dir=SOURCE_DIR,
        time_limit=args.time_limit - (time.monotonic() - started),
        keep_temp=args.keep_temp,
        prefix="apimgw-ingress-bench-",
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
