"""
How many CPUs this process may use: the default number of workers.

``os.cpu_count()`` counts the machine's CPUs, not the container's: a pod
limited to 2 CPUs on a 64-core node would start 64 workers that the CFS
quota then throttles. The limit is the smallest of the cgroup CPU quota
(v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded
up, and the CPUs the scheduler lets us run on (``sched_getaffinity``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

__all__ = ["available_cpus"]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _v2_quota(root: str, group: str) -> float | None:
    """``cpu.max`` of our cgroup and its ancestors (the tightest one), v2."""
    limits: list[float] = []
    parts = [p for p in group.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        text = _read(os.path.join(root, *parts[:depth], "cpu.max"))
        if text is None:
            continue
        fields = text.split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = int(fields[0]), int(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
    return min(limits) if limits else None


def _v1_quota(root: str) -> float | None:
    """``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1; -1: no quota)."""
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        quota = _read(os.path.join(root, folder, "cpu.cfs_quota_us"))
        period = _read(os.path.join(root, folder, "cpu.cfs_period_us"))
        if quota is None or period is None:
            continue
        try:
            q, p = int(quota), int(period)
        except ValueError:
            continue
        if q > 0 and p > 0:
            return q / p
    return None


def _own_v2_group(proc_cgroup: str) -> str:
    """Our cgroup v2 path from ``/proc/self/cgroup`` (``0::/path``); ``/`` if unknown."""
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_cpus(
    root: str = "/sys/fs/cgroup",
    *,
    proc_cgroup: str = "/proc/self/cgroup",
    affinity: Callable[[], int] = _affinity,
) -> int:
    """
    The CPUs this process may use: at least 1, at most the scheduler
    affinity, at most the cgroup quota rounded up (1.5 CPUs: 2 workers,
    each of which may then be throttled a little, rather than 1 that
    leaves half a CPU unused).

    :param root: where the cgroup file system is mounted (tests give a
        directory of their own).
    """
    quota = _v2_quota(root, _own_v2_group(proc_cgroup))
    if quota is None:
        quota = _v1_quota(root)
    cpus = affinity()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
