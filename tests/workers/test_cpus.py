"""Tests for the default worker count: the CPUs the container may use."""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from gateway.workers import available_cpus


class AvailableCpusTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.proc = os.path.join(self.root, "self-cgroup")
        self.write("self-cgroup", "0::/\n")

    def write(self, relative: str, text: str) -> None:
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def cpus(self, affinity: int = 8) -> int:
        return available_cpus(self.root, proc_cgroup=self.proc, affinity=lambda: affinity)

    def test_no_quota_is_the_affinity(self) -> None:
        """Without a cgroup quota (v2 ``max``, or no files at all) the scheduler's CPUs count."""
        self.assertEqual(self.cpus(6), 6)
        self.write("cpu.max", "max 100000\n")
        self.assertEqual(self.cpus(6), 6)

    def test_v2_quota_rounds_up(self) -> None:
        """cgroup v2 ``cpu.max`` 150000/100000 (1.5 CPUs) gives 2 workers; 200000/100000 gives 2."""
        self.write("cpu.max", "150000 100000\n")
        self.assertEqual(self.cpus(), 2)
        self.write("cpu.max", "200000 100000\n")
        self.assertEqual(self.cpus(), 2)

    def test_v2_nested_group_tightest_wins(self) -> None:
        """The process's own cgroup (from /proc/self/cgroup) and its ancestors: the smallest quota counts."""
        self.write("self-cgroup", "0::/kubepods/pod1\n")
        self.write("cpu.max", "400000 100000\n")
        self.write("kubepods/pod1/cpu.max", "100000 100000\n")
        self.assertEqual(self.cpus(), 1)

    def test_v1_quota(self) -> None:
        """cgroup v1: ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``; -1 is no quota."""
        self.write("cpu/cpu.cfs_quota_us", "300000\n")
        self.write("cpu/cpu.cfs_period_us", "100000\n")
        self.assertEqual(self.cpus(), 3)
        self.write("cpu/cpu.cfs_quota_us", "-1\n")
        self.assertEqual(self.cpus(5), 5)

    def test_affinity_caps_the_quota_and_one_is_the_least(self) -> None:
        """A quota above the CPUs we may run on does not add workers; a tiny quota still gives one."""
        self.write("cpu.max", "800000 100000\n")
        self.assertEqual(self.cpus(2), 2)
        self.write("cpu.max", "10000 100000\n")
        self.assertEqual(self.cpus(), 1)

    def test_default_setting_is_the_cgroup_count(self) -> None:
        """
        gateway.workers unset (the default, auto) resolves through the
        cgroup: cpu.max 250000/100000 on 8 CPUs is 3 workers; 100000/100000
        (a 1-CPU limit) is 1, one process; no quota is the 8 CPUs.
        """
        from gateway.settings import GatewaySettings
        from gateway.tap import worker_count

        default = GatewaySettings.parse({}).workers
        self.write("cpu.max", "250000 100000\n")
        self.assertEqual(worker_count(default, self.cpus), 3)
        self.write("cpu.max", "100000 100000\n")
        self.assertEqual(worker_count(default, self.cpus), 1)
        self.write("cpu.max", "max 100000\n")
        self.assertEqual(worker_count(default, self.cpus), 8)
        # An explicit count is not the cgroup's.
        self.assertEqual(worker_count(GatewaySettings.parse({"gateway.workers": "2"}).workers, self.cpus), 2)

    def test_this_machine(self) -> None:
        """On the real file system the answer is between 1 and the machine's CPU count."""
        self.assertTrue(1 <= available_cpus() <= (os.cpu_count() or 1))
