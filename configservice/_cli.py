"""
``python -m configservice token``: issue a gateway token from the command
line, reading the gateway's key from the database (no running service
needed; the service may be running: SQLite in WAL mode lets this read
while it writes).

Synchronous on purpose: no reactor, one short read.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

from twisted.python import usage

from ._schema import connect, schema_version
from ._times import parse_expiry
from ._tokens import KEY_TYPES, issue, token_expiry

__all__ = ["main"]


class TokenOptions(usage.Options):
    """``token``: print a ``GatewayKey ...`` token for one gateway."""

    synopsis = "--gateway ID [--expiry 30d] [--key-type primary|secondary] [--db FILE]"
    longdesc = (
        "Print the Authorization value a gateway uses (config.service.auth): "
        "GatewayKey <id>&<yyyyMMddHHmm>&<signature>. --expiry is a duration (30d, 12h, P29D) "
        "or an ISO 8601 date-time, at most 30 days ahead; it is rounded down to the minute."
    )
    optParameters = [
        ["gateway", "g", None, "The gateway id."],
        ["expiry", "e", "30d", "When the token expires: a duration or a date-time."],
        ["key-type", "k", "primary", "The key that signs it: primary or secondary."],
        ["db", None, "apimgw-config.db", "The service's SQLite database."],
    ]

    def postOptions(self) -> None:
        if not self["gateway"]:
            raise usage.UsageError("--gateway is required")
        if self["key-type"] not in KEY_TYPES:
            raise usage.UsageError("--key-type must be primary or secondary")


class CommandOptions(usage.Options):
    synopsis = "token [options]"
    longdesc = (
        "Commands of the apimgw configuration service "
        "(the service itself runs as: twistd -n apimgw-config)."
    )
    subCommands = [["token", None, TokenOptions, "Print a gateway token."]]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required: token")


def _token(options: TokenOptions, now: float) -> str:
    path = options["db"]
    if not os.path.exists(path):
        raise usage.UsageError(f"no database at {path} (give --db; the service creates it)")
    try:
        stamp = token_expiry(parse_expiry(options["expiry"], now), now)
    except ValueError as e:
        raise usage.UsageError(f"--expiry: {e}") from None
    connection = connect(path)
    try:
        if schema_version(connection) < 1:
            raise usage.UsageError(f"{path} is not an apimgw-config database")
        found = connection.execute(
            "SELECT primary_key, secondary_key FROM gateway_keys WHERE gateway_id = ?",
            (options["gateway"],),
        ).fetchone()
    finally:
        connection.close()
    if found is None:
        raise usage.UsageError(f"no gateway {options['gateway']!r} in {path}")
    key = found[0] if options["key-type"] == "primary" else found[1]
    return issue(options["gateway"], key, stamp)


def main(
    argv: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run a command; returns the exit status (0, or 2 for a usage error)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    options = CommandOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
        token = _token(options.subOptions, clock())
    except usage.UsageError as e:
        err.write(f"apimgw-config: {e}\n")
        return 2
    out.write(token + "\n")
    return 0
