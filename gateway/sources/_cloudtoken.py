"""
The gateway's token for the configuration service: parsing, expiry, and a
token file that is re-read when it changes.

``config.service.auth`` is either the token itself
(``GatewayKey <gateway-id>&<yyyyMMddHHmm>&<signature>``, the scheme word
optional) or the path of a file holding it: a mounted Kubernetes Secret,
which the kubelet updates in place (a symlink swap), so a rotated token is
picked up at the next request without a restart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["GatewayToken", "TokenError", "TokenProvider", "parse_token"]

_TOKEN_RE = re.compile(r"^(?:GatewayKey\s+)?([^&\s]+)&(\d{12})&(\S+)$")


class TokenError(Exception):
    """The token (or its file) cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class GatewayToken:
    """
    One parsed token.

    :ivar gateway_id: the gateway it was issued for (the id in the URLs).
    :ivar expiry: when it expires, seconds since the epoch (UTC minute).
    :ivar value: the ``Authorization`` header value.
    """

    gateway_id: str
    expiry: float
    value: str


def parse_token(text: str) -> GatewayToken:
    """
    Parse ``GatewayKey <id>&<yyyyMMddHHmm>&<signature>`` (the scheme word
    may be left out). The signature is not checked here: only the service
    holds the keys.

    :raises TokenError: not of that shape, or an impossible date.
    """
    text = text.strip()
    match = _TOKEN_RE.match(text)
    if match is None:
        raise TokenError("not a GatewayKey token (expected GatewayKey <id>&<yyyyMMddHHmm>&<signature>)")
    gateway_id, stamp, signature = match.groups()
    try:
        expiry = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=timezone.utc)
    except ValueError:
        raise TokenError(f"the token's expiry {stamp!r} is not a date") from None
    return GatewayToken(gateway_id, expiry.timestamp(), f"GatewayKey {gateway_id}&{stamp}&{signature}")


def _looks_like_token(value: str) -> bool:
    return value.strip().startswith("GatewayKey ") or "&" in value


class TokenProvider:
    """
    The current token, from the setting's text or from a file.

    A file is checked (``stat``) at every :meth:`current` call and read
    again when its device, inode, size or modification time changed. A file
    that cannot be read or does not hold a token raises :class:`TokenError`
    while it stays so; the last good token is not reused then, because the
    operator replaced it on purpose.
    """

    def __init__(self, setting: str) -> None:
        """
        :param setting: the value of ``config.service.auth``: a token, or
            the path of a file holding one.
        """
        self.path: str | None = None
        self._token: GatewayToken | None = None
        self._error: TokenError | None = None
        self._seen: tuple[int, int, int, int] | None = None
        if _looks_like_token(setting):
            self._token = parse_token(setting)
        else:
            self.path = setting

    def current(self) -> GatewayToken:
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
