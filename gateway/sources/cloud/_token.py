"""
The gateway's token for the configuration service: where it comes from
(the setting or a file, re-read when it changes) and when to warn that it
expires.

``config.service.auth`` is either the token itself
(``GatewayKey <gateway-id>&<yyyyMMddHHmm>&<signature>``, the scheme word
optional) or the path of a file holding it: a mounted Kubernetes Secret,
which the kubelet updates in place (a symlink swap), so a rotated token is
picked up at the next request without a restart. The grammar is
:mod:`cloudproto`'s, the one the service checks with.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from twisted.logger import Logger

from cloudproto import Token, TokenError, looks_like_token, parse_token

__all__ = ["TOKEN_WARNING", "ExpiryWarning", "Token", "TokenError", "TokenProvider", "parse_token"]

#: A token is warned about (daily) from this many seconds before it expires.
TOKEN_WARNING = 7 * 86400.0
_DAY = 86400.0


class TokenProvider:
    """
    The current token, from the setting's text or from a file.

    A file is checked (``stat``) at every :meth:`current` call and read
    again when its device, inode, size or modification time changed. A file
    that cannot be read or does not hold a token raises :class:`TokenError`
    while it stays so; the last good token is not reused then, because the
    operator replaced it on purpose.

    :ivar path: the token file, ``None`` when the setting is the token.
    """

    def __init__(self, setting: str) -> None:
        """
        :param setting: the value of ``config.service.auth``: a token, or
            the path of a file holding one.
        :raises TokenError: the setting is a token, and a malformed one.
        """
        self.path: str | None = None
        self._token: Token | None = None
        self._error: TokenError | None = None
        self._seen: tuple[int, int, int, int] | None = None
        if looks_like_token(setting):
            self._token = parse_token(setting)
        else:
            self.path = setting

    def current(self) -> Token:
        """
        The token to send now.

        :raises TokenError: the file is missing, unreadable or malformed.
        """
        if self.path is not None:
            self._refresh(self.path)
        if self._error is not None:
            raise self._error
        assert self._token is not None
        return self._token

    def _refresh(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError as e:
            self._seen = None
            self._error = TokenError(f"cannot read the token file {path}: {e.strerror or e}")
            return
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._seen:
            return
        self._seen = signature
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            self._error = TokenError(f"cannot read the token file {path}: {e}")
            return
        try:
            self._token = parse_token(text)
        except TokenError as e:
            self._error = TokenError(f"the token file {path}: {e}")
            return
        self._error = None


class ExpiryWarning:
    """
    Warns that the token expires soon: from :data:`TOKEN_WARNING` before
    its expiry, at most once a day (so a log watcher sees it daily, not at
    every heartbeat), and as an error once it has expired.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._warned_at: float | None = None

    def check(self, token: Token, now: float) -> None:
        """Warn about ``token`` if it is time to, at ``now``."""
        left = token.expires - now
        if left > TOKEN_WARNING:
            self._warned_at = None
            return
        if self._warned_at is not None and now - self._warned_at < _DAY:
            return
        self._warned_at = now
        expires = datetime.fromtimestamp(token.expires, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if left <= 0:
            self._log.error(
                "The configuration service token of gateway {gateway} expired at {expiry}: "
                "generate a new one (config.service.auth)",
                gateway=token.gateway_id,
                expiry=expires,
            )
        else:
            self._log.warn(
                "The configuration service token of gateway {gateway} expires in {days:.1f} "
                "days ({expiry}): generate a new one (config.service.auth)",
                gateway=token.gateway_id,
                days=left / _DAY,
                expiry=expires,
            )
