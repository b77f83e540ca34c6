"""Tests for the listening sockets the workers share."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from gateway.workers import (
    AddressInUse,
    ListenAddress,
    UnsupportedListener,
    bind_group,
    parse_listen,
)


class ParseListenTests(SynchronousTestCase):
    def test_tcp_descriptions(self) -> None:
        """Port, interface and backlog are read from tcp: and tcp6: descriptions, positional or named."""
        self.assertEqual(parse_listen("tcp:8080"), ListenAddress(socket.AF_INET, "", 8080))
        self.assertEqual(
            parse_listen("tcp:8080:interface=127.0.0.1:backlog=10"),
            ListenAddress(socket.AF_INET, "127.0.0.1", 8080, 10),
        )
        self.assertEqual(parse_listen("tcp:port=81"), ListenAddress(socket.AF_INET, "", 81))
        self.assertEqual(
            parse_listen(r"tcp6:8080:interface=\:\:1"), ListenAddress(socket.AF_INET6, "::1", 8080)
        )

    def test_other_kinds_refused(self) -> None:
        """A unix:, ssl: or systemd: description cannot be shared by workers: refused with its text."""
        for description in ("unix:/tmp/s", "ssl:443", "systemd:domain=INET:index=0"):
            e = self.assertRaises(UnsupportedListener, parse_listen, description)
            self.assertIn(description, str(e))


class BindGroupTests(SynchronousTestCase):
    def test_one_port_several_sockets(self) -> None:
        """Port 0: the first socket picks a port and the others join it, each listening, non-blocking, SO_REUSEPORT."""
        group = bind_group(ListenAddress(socket.AF_INET, "127.0.0.1", 0), 3)
        for s in group:
            self.addCleanup(s.close)
        ports = {s.getsockname()[1] for s in group}
        self.assertEqual(len(ports), 1)
        for s in group:
            self.assertEqual(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1)
            self.assertEqual(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
            self.assertFalse(s.getblocking())
            self.assertTrue(s.get_inheritable())
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass

    def test_a_port_in_use_without_reuseport_fails_cleanly(self) -> None:
        """A port held by a socket outside the group cannot be joined: OSError, nothing left open."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        e = self.assertRaises(AddressInUse, bind_group, ListenAddress(socket.AF_INET, "127.0.0.1", port), 2)
        self.assertIn(f"127.0.0.1:{port} is already in use", str(e))

    def test_a_reuseport_listener_of_the_same_user_is_not_joined(self) -> None:
        """
        A listener that set SO_REUSEPORT itself (another gateway, any
        process of our uid) would let the group join it and share its
        connections: the probe refuses the start instead.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        e = self.assertRaises(AddressInUse, bind_group, ListenAddress(socket.AF_INET, "127.0.0.1", port), 2)
        self.assertIn("not joining it", str(e))
        # The holder alone still accepts (no socket of ours joined it).
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = holder.accept()
            conn.close()

    def test_a_port_freed_by_a_previous_group_is_bound_again(self) -> None:
        """A group closed (a previous run) leaves the port bindable: the probe does not refuse it."""
        first = bind_group(ListenAddress(socket.AF_INET, "127.0.0.1", 0), 2)
        port = first[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        for s in first:
            s.close()
        again = bind_group(ListenAddress(socket.AF_INET, "127.0.0.1", port), 2)
        for s in again:
            self.addCleanup(s.close)
        self.assertEqual({s.getsockname()[1] for s in again}, {port})
