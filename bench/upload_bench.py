"""
Upload throughput and memory of the gateway (issue 11, streamed request
bodies): a generated body (never on disk) sent through a child gateway
process (``gateway.testing.process.GatewayProcess``, access log off) to a
backend process that reads and counts it; the time from the first byte
sent to the response, and the gateway process's peak RSS (VmHWM) before
and after.

Run: python bench/upload_bench.py [--size-mb 1024] [--rounds 3] [--chunked]

The backend is a plain blocking socket loop in its own process (so neither
it nor this client shares the gateway's CPU time slice more than the
machine forces); on a 2-CPU machine the three processes share 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.testing.process import GatewayProcess, free_port

BLOCK = memoryview(bytes(range(256)) * 4096)  # 1 MiB


def _backend(port: int) -> None:
    """Answer each request with the number of body bytes read (Content-Length or chunked)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    buf = bytearray(1 << 20)
    while True:
        conn, _ = server.accept()
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        raise ConnectionError
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                fields = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    fields[name.strip().lower()] = value.strip()
                received = 0
                if b"content-length" in fields:
                    left = int(fields[b"content-length"]) - len(pending)
                    received = len(pending)
                    pending = b""
                    view = memoryview(buf)
                    while left > 0:
                        n = conn.recv_into(view[: min(len(buf), left)])
                        if not n:
                            raise ConnectionError
                        left -= n
                        received += n
                else:  # chunked
                    while True:
                        while b"\r\n" not in pending:
                            pending += conn.recv(65536)
                        size_line, _, pending = pending.partition(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        while len(pending) < size + 2:
                            data = conn.recv(max(65536, size + 2 - len(pending)))
                            if not data:
                                raise ConnectionError
                            pending += data
                        pending = pending[size + 2 :]
                        received += size
                        if size == 0:
                            break
                body = b"%d" % received
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (ConnectionError, OSError):
            conn.close()


def _upload(port: int, size: int, chunked: bool) -> tuple[float, bytes]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        started = time.perf_counter()
        sock.sendall(b"POST /up/x HTTP/1.1\r\nHost: bench\r\n%s\r\n\r\n" % framing)
        left = size
        while left > 0:
            piece = BLOCK[: min(len(BLOCK), left)]
            if chunked:
                sock.sendall(b"%x\r\n" % len(piece))
                sock.sendall(piece)
                sock.sendall(b"\r\n")
            else:
                sock.sendall(piece)
            left -= len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response or not response.endswith(b"%d" % size):
            data = sock.recv(65536)
            if not data:
                break
            response += data
        return time.perf_counter() - started, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunked", action="store_true")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024

    backend_port = free_port()
    backend = multiprocessing.Process(target=_backend, args=(backend_port,), daemon=True)
    backend.start()
    config = Path(tempfile.mkdtemp()) / "gateway.yaml"
    config.write_text(
        f"routes:\n  - path: /up\n    pathType: Prefix\n    backend: http://127.0.0.1:{backend_port}\n"
    )
    env = dict(os.environ, TELEMETRY_LOGS_STD="none")
    gateway = GatewayProcess(
        ["--config", str(config), "--max-body", str(4 * size)],
        env=env,
        cwd=args.repo,
        logfile=str(config.parent / "gateway.log"),
    )
    gateway.start()
    try:
        _upload(gateway.http_port, 1024, args.chunked)  # warm: a pooled backend connection
        before = gateway.peak_rss_kib()
        print(f"repo {args.repo}; {args.size_mb} MiB {'chunked' if args.chunked else 'Content-Length'}")
        print(f"gateway peak RSS before: {before / 1024:.1f} MiB")
        for n in range(args.rounds):
            seconds, response = _upload(gateway.http_port, size, args.chunked)
            ok = response.startswith(b"HTTP/1.1 200") and response.endswith(b"%d" % size)
            print(
                f"round {n + 1}: {seconds:.2f} s, {size / seconds / 1e6:.0f} MB/s, "
                f"{'ok' if ok else 'FAILED ' + repr(response[:200])}; "
                f"gateway peak RSS {gateway.peak_rss_kib() / 1024:.1f} MiB"
            )
    finally:
        gateway.stop()
        backend.terminate()


if __name__ == "__main__":
    main()
