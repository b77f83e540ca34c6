"""
The streamed request body's buffers as settings
(``net.server.body-buffer-bytes``, ``net.server.body-replay-bytes``):
parsed and bounded, carried by ``H1Limits`` to each body the channel
creates, and changing what is held and what is retried: on the channel
(``StringTransport``), and through the whole in-process gateway to a
backend that drops a reused connection mid-body (real sockets).
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from gateway.proxy._body import HIGH_WATER, REPLAY_LIMIT, StreamedBody
from gateway.proxy._h1limits import H1Limits
from gateway.settings import GatewaySettings, SettingError, read_environment
from tests.integration.test_upload import MiB, UploadTestCase, body_digest, upload

from .test_h1 import Connected
from .test_h1_stream import Collect, Streaming, _post, _res


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """The defaults are the former constants: 64 KiB each, 300 s idle."""
        proxy = GatewaySettings.parse({}).proxy
        self.assertEqual(
            (proxy.body_buffer, proxy.body_replay, proxy.upgrade_idle_timeout),
            (HIGH_WATER, REPLAY_LIMIT, 300.0),
        )
        limits = H1Limits()
        self.assertEqual((limits.body_buffer, limits.body_replay), (HIGH_WATER, REPLAY_LIMIT))

    def test_values(self) -> None:
        """Dotted and shell-safe names; a replay buffer of 0 (never resend a byte) is allowed."""
        values, unknown = read_environment(
            {
                "NET_SERVER_BODY_BUFFER_BYTES": "1024",
                "net.server.body-replay-bytes": "0",
                "NET_SERVER_UPGRADE_IDLE_TIMEOUT": "2.5",
            }
        )
        self.assertEqual(unknown, [])
        proxy = GatewaySettings.parse(values).proxy
        self.assertEqual(
            (proxy.body_buffer, proxy.body_replay, proxy.upgrade_idle_timeout), (1024, 0, 2.5)
        )

    def test_refused_values_name_the_setting(self) -> None:
        cases = {
            ("net.server.body-buffer-bytes", "512"): "between 1024 and 67108864 bytes, not 512",
            ("net.server.body-buffer-bytes", str(65 * MiB)): "between 1024 and 67108864",
            ("net.server.body-replay-bytes", str(257 * MiB)): "between 0 and 268435456",
            ("net.server.body-replay-bytes", "-1"): "zero or more",
            ("net.server.body-replay-bytes", "64k"): "must be a number",
            ("net.server.upgrade-idle-timeout", "0"): "must be positive",
            ("net.server.upgrade-idle-timeout", "never"): "must be a number",
        }
        for (name, value), message in cases.items():
            with self.assertRaises(SettingError) as caught:
                GatewaySettings.parse({name: value})
            self.assertIn(name, str(caught.exception))
            self.assertIn(message, str(caught.exception))


class OnTheChannelTests(SynchronousTestCase):
    def test_buffer_bytes_pause_the_client(self) -> None:
        """A body nobody takes stops the client's reads at the configured mark, not the default."""
        c = Connected(H1Limits(body_buffer=4096), resource=Streaming(wait=True))
        c.send(_post(10 * 4096) + b"x" * 4095)
        self.assertEqual(c.transport.producerState, "producing")
        c.send(b"x")
        self.assertEqual(c.transport.producerState, "paused")

    def test_replay_bytes_bound_the_rewind(self) -> None:
        """The channel's bodies keep what its limits say for a retry: within it, a rewind; past it, none."""
        c = Connected(H1Limits(body_replay=100_000), resource=Streaming(wait=True))
        c.send(_post(300_000) + b"a" * 90_000)
        [source] = _res(c).sources
        source.start(Collect())
        self.assertTrue(source.rewind())
        source.start(Collect())
        c.send(b"b" * 20_000)
        self.assertFalse(source.rewind())

    def test_parameters(self) -> None:
        """``StreamedBody``'s own parameters: the same two bounds."""
        source = StreamedBody(10**9, None, replay_limit=10)
        source.start(Collect())
        source.write(b"x" * 10)
        self.assertTrue(source.rewind())
        source.start(Collect())
        source.write(b"x" * 11)
        self.assertFalse(source.rewind())


class _ReplayCase(UploadTestCase):
    """
    A pooled connection the backend drops once 1 MiB of a 4 MiB PUT
    arrived (``late-stale``): retried on a new connection only while what
    was sent is within the replay buffer.
    """

    @inlineCallbacks
    def stale_upload(self) -> Any:
        status, _, _ = yield deferToThread(upload, self.port, "/plain/warm", 10, method="PUT")
        self.assertEqual(status, 200)
        retries = self.gateway.pool.retries
        answer = yield deferToThread(
            upload, self.port, "/plain/late-stale", 4 * MiB, method="PUT", pause_after_head=0.2
        )
        return answer, self.gateway.pool.retries - retries


class LargeReplayTests(_ReplayCase):
    environ: ClassVar[dict[str, str]] = {"net.server.body-replay-bytes": str(8 * MiB)}

    @inlineCallbacks
    def test_retried_within_the_replay_buffer(self) -> Any:
        """8 MiB kept: the 4 MiB body is sent again whole on a new connection."""
        (status, _, body), retried = yield self.stale_upload()
        self.assertEqual((status, retried), (200, 1), body)
        self.assertIn(body_digest(4 * MiB).encode(), body)
        self.assertEqual(len([s for s in self.counting.seen if "late-stale" in s.path]), 2)


class SmallReplayTests(_ReplayCase):
    environ: ClassVar[dict[str, str]] = {"net.server.body-replay-bytes": str(512 * 1024)}

    @inlineCallbacks
    def test_not_retried_past_the_replay_buffer(self) -> Any:
        """512 KiB kept, more than 1 MiB sent: the failure is the answer, no second attempt."""
        (status, _, body), retried = yield self.stale_upload()
        self.assertEqual((status, retried), (500, 0), body)
        self.assertEqual(len([s for s in self.counting.seen if "late-stale" in s.path]), 1)
