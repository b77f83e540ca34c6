"""
Where Redis is: ``redis://[[user]:password@]host[:port][/db]`` or
``rediss://`` for TLS, the forms Redis clients everywhere accept, so an
operator can paste the URL their Redis provider gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["RedisAddress", "parse_redis_url"]


@dataclass(frozen=True)
class RedisAddress:
    """
    :ivar tls: ``rediss://``.
    :ivar username: for Redis 6 ACLs; ``None`` means the default user.
    :ivar password: ``None`` when Redis needs none.
    """

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str, password: str | None = None) -> RedisAddress:
    """
    Parse ``url``; ``password``, when given, overrides the URL's (so the
    secret can live in its own setting, outside the URL).

    :raises ValueError: a scheme other than ``redis``/``rediss``, no host,
        or a database that is not a number.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"Redis URL must start with redis:// or rediss://, not {url.split(':')[0]!r}")
    if not parts.hostname:
        raise ValueError("Redis URL has no host")
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"Redis URL: bad port or database in {parts.netloc.rsplit('@', 1)[-1]}{parts.path}") from None
    url_password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=db,
        tls=parts.scheme == "rediss",
        username=username,
        password=password if password is not None else (url_password or None),
    )
