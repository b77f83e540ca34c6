"""
Instructions per proxied request, counted by valgrind: the proxy path of
``bench/path_bench.py`` (the whole HTTP/1.1 path in process, on in-memory
transports) run for two numbers of requests under ``valgrind --tool=cachegrind
--cache-sim=no``; the difference divided by the extra requests is what one
request costs, start-up and warm-up excluded.

Why: on the shared VM, timings move by a third from run to run with what the
hypervisor's other guests do (``proxy_bench.py`` records the stolen CPU);
an instruction count does not (0.3% run to run), so a change of 1% to the
Python path is visible. It counts instructions, not time: cache misses and
the kernel's work are not in it (``proxy_bench.py`` measures those).

    python bench/path_instructions.py [--log none|text|json] [--connections N]
    python bench/path_instructions.py --tree /tmp/other-checkout    # another revision's gateway,
                                                                    # this checkout's path_bench

Needs valgrind (``apt-get install valgrind``); takes about 30 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

#: Requests of the short and the long run (the warm-up of 300 rounds is in both).
SHORT, LONG = 1000, 4000

_PROGRAM = """
import gc, os, sys
tree, bench, log = sys.argv[1], sys.argv[2], sys.argv[3]
connections, requests = int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, bench)  # this checkout's bench, the other tree's gateway
sys.path.insert(0, tree)
if log != "none":
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
import path_bench
_, one = path_bench.prepare(log, connections)
for _ in range(300):
    one()
gc.collect()
for _ in range(requests // connections):
    one()
"""


def instructions(tree: Path, log: str, connections: int, requests: int) -> int:
    """Instructions valgrind counted for the whole program with ``requests`` requests."""
    with tempfile.TemporaryDirectory(prefix="apimgw-icount-") as work:
        done = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no",
             f"--cachegrind-out-file={work}/out", sys.executable, "-c", _PROGRAM,
             str(tree), str(BENCH_DIR), log, str(connections), str(requests)],
            capture_output=True, text=True, check=False,
        )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", default="none", choices=("none", "text", "json"))
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--tree", type=Path, default=BENCH_DIR.parent,
                        help="the checkout whose gateway package to measure")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    tree = args.tree.resolve()
    if not (tree / "gateway").is_dir():
        raise SystemExit(f"{tree} is not an apimgw checkout")
    short = instructions(tree, args.log, args.connections, SHORT)
    long = instructions(tree, args.log, args.connections, LONG)
    per_request = (long - short) / (LONG - SHORT)
    print(f"{tree}: {per_request:,.0f} instructions per request, access log {args.log}, "
          f"{args.connections} connections ({os.path.basename(sys.executable)}, valgrind)")


if __name__ == "__main__":
    main()
