"""
Header rules of a reverse proxy (RFC 9110 §7.6.1): what is forwarded, what
is dropped, what is added.

Hop-by-hop headers belong to one connection and are never forwarded, in
either direction; neither are the headers a ``Connection`` header names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from twisted.web.http_headers import _nameEncoder

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: ``Connection`` values that name no other header (the common case).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})

#: Request headers the proxy replaces or recomputes itself.
_REPLACED_ON_REQUEST = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
}


#: :data:`_REPLACED_ON_REQUEST` as twisted.web's ``Headers`` names them
#: (its storage is keyed by canonical name: one set lookup per header).
_REPLACED_CANONICAL = frozenset(_nameEncoder.encode(name) for name in _REPLACED_ON_REQUEST)

_NONE: frozenset[bytes] = frozenset()


def connection_tokens(values: Iterable[bytes] | None) -> frozenset[bytes]:
    """The header names listed in ``Connection`` header values, lower case."""
    if not values:
        return frozenset()
    if len(values) == 1 and values[0].lower() in _PLAIN_CONNECTION:
        return frozenset()
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",") if token.strip()
    )


def forward_request_headers(
    raw: Mapping[bytes, list[bytes]],
    *,
    host: bytes,
    forwarded_for: bytes,
    forwarded_proto: bytes,
    forwarded_host: bytes,
    request_id: bytes,
    drop: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """
    The header list to send to the backend.

    :param raw: the client's headers by canonical name, as twisted.web's
        ``Headers`` keeps them (``Headers._rawHeaders``: ``Content-Type``,
        ``ETag``); repeated values are kept, each as its own header line,
        in order.
    :param drop: one more header name (lower case) not to forward: the
        subscription key's, which the backend must never see.
    :param host: the ``Host`` to send (the backend's authority, or the
        client's when the route preserves it).
    :param forwarded_for: the complete ``X-Forwarded-For`` value (any
        incoming value with the client address appended).
    """
    headers: list[tuple[bytes, bytes]] = [(b"Host", host)]
    append = headers.append
    connection = raw.get(b"Connection")
    named = connection_tokens(connection) if connection else _NONE
    checked = named or drop
    for name, values in raw.items():
        if name in _REPLACED_CANONICAL:
            continue
        if checked and ((lower := name.lower()) in named or lower == drop):
            continue
        for value in values:
            append((name, value))
    append((b"X-Forwarded-For", forwarded_for))
    append((b"X-Forwarded-Proto", forwarded_proto))
    append((b"X-Forwarded-Host", forwarded_host))
    append((b"x-request-id", request_id))
    return headers


def text_bytes(text: str, what: str = "a header") -> bytes:
    """
    Text a policy put in a header or the status line, as bytes (Latin-1,
    else UTF-8).

    :raises ValueError: it holds CR, LF or NUL (it would split the
        message); the message names ``what``, never the text (which may
        hold a secret).
    """
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"{what} holds a line break or NUL")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


#: The request headers the proxy replaces, as the policy view's text names.
_REPLACED_TEXT = frozenset(name.decode("ascii") for name in _REPLACED_ON_REQUEST)


def forward_view_headers(
    pairs: list[tuple[str, str]],
    *,
    host: bytes,
    forwarded_for: bytes,
    forwarded_proto: bytes,
    forwarded_host: bytes,
    request_id: bytes,
) -> list[tuple[bytes, bytes]]:
    """
    :func:`forward_request_headers` for the policy view's headers:
    ``(lower-case name, value)`` text pairs, as policies left them, in one
    pass (the same rules: hop-by-hop and ``Connection``-named headers
    dropped, ``Host`` and ``X-Forwarded-*`` set by the proxy).

    :raises ValueError: a value holds CR, LF or NUL (a policy put it there:
        sending it would split the message).
    """
    named: set[str] = set()
    for name, value in pairs:
        if name == "connection":
            for token in value.split(","):
                token = token.strip().lower()
                if token and token not in ("keep-alive", "close"):
                    named.add(token)
    headers: list[tuple[bytes, bytes]] = [(b"Host", host)]
    append = headers.append
    for name, value in pairs:
        if name in _REPLACED_TEXT or name in named:
            continue
        append((text_bytes(name), text_bytes(value)))
    append((b"X-Forwarded-For", forwarded_for))
    append((b"X-Forwarded-Proto", forwarded_proto))
    append((b"X-Forwarded-Host", forwarded_host))
    append((b"x-request-id", request_id))
    return headers


def response_headers_to_forward(
    headers: list[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The backend's response headers minus hop-by-hop ones, order kept."""
    kept = []
    named: frozenset[bytes] = _NONE
    for pair in headers:
        lower = pair[0].lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection" and pair[1].lower() not in _PLAIN_CONNECTION:
                named = named | connection_tokens([pair[1]])
            continue
        kept.append(pair)
    if named:
        # Named by Connection: hop-by-hop too (before or after it).
        kept = [pair for pair in kept if pair[0].lower() not in named]
    return kept


def upgrade_request_headers(
    headers: list[tuple[bytes, bytes]], upgrade: bytes
) -> list[tuple[bytes, bytes]]:
    """
    ``headers`` (from :func:`forward_request_headers`, which drops
    ``Connection`` and ``Upgrade`` as hop-by-hop) with the two put back for
    a request that asks to switch protocols (RFC 9110 §7.8): the backend is
    asked for the same upgrade. ``Sec-WebSocket-*`` are ordinary headers and
    went through already.
    """
    return [*headers, (b"Connection", b"Upgrade"), (b"Upgrade", upgrade)]


def switching_response_headers(
    headers: list[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """
    A backend's ``101 Switching Protocols`` headers for the client: the
    hop-by-hop ones dropped, except ``Upgrade`` (the protocol switched to);
    the caller adds ``Connection: Upgrade``. A 101 has no body: no framing
    headers either.
    """
    named: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            named = named | connection_tokens([value])
    named = named - {b"upgrade"}
    return [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) == b"upgrade"
        or (lower not in HOP_BY_HOP and lower not in named and lower != b"content-length")
    ]
