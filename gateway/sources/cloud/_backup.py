"""
The backup of the cloud configuration: one JSON file, written atomically.

Blocking file I/O: the cloud source runs these functions in a thread
(``deferToThread``), never on the reactor.

The file holds only what the configuration service sent (the raw snapshot
entities and their revision), never objects of other sources, so loading
it cannot resurrect an Ingress or file object.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

__all__ = ["BACKUP_FILE", "BACKUP_FORMAT", "BackupError", "BackupLocationNotFound",
           "load_backup", "write_backup"]

#: The file name inside ``config.backup.path``.
BACKUP_FILE = "cloud-config.json"

#: The version of the file's layout; another one is refused on load.
BACKUP_FORMAT = 1


class BackupError(Exception):
    """The backup cannot be read or used; the message says why."""


class BackupLocationNotFound(BackupError):
    """
    The backup directory does not exist (upstream's
    ``LoadBackupLocationNotFound``): backups are skipped.
    """


def backup_file(directory: str) -> str:
    """The backup file's path in ``directory``."""
    return os.path.join(directory, BACKUP_FILE)


def write_backup(directory: str, document: dict[str, Any]) -> str:
    """
    Write ``document`` as the backup, atomically: a temporary file in the
    same directory, written, flushed and fsync'ed, renamed over the backup,
    then the directory fsync'ed, so a crash at any point leaves either the
    old backup or the new one, never a torn file.

    :return: the backup file's path.
    :raises BackupLocationNotFound: ``directory`` does not exist.
    :raises OSError: the write failed (the old backup is untouched).
    """
    if not os.path.isdir(directory):
        raise BackupLocationNotFound(f"the backup directory {directory} does not exist")
    data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
    target = backup_file(directory)
    fd, tmp = tempfile.mkstemp(prefix="." + BACKUP_FILE + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return target


def _fsync_directory(directory: str) -> None:
    # Makes the rename durable. Not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_backup(directory: str) -> dict[str, Any] | None:
    """
    Read the backup.

    :return: the document, or ``None`` when there is no backup file.
    :raises BackupLocationNotFound: ``directory`` does not exist.
    :raises BackupError: the file cannot be read, is not JSON, or is not a
        backup of this format.
    """
    if not os.path.isdir(directory):
        raise BackupLocationNotFound(f"the backup directory {directory} does not exist")
    path = backup_file(directory)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BackupError(f"cannot read it: {e.strerror or e}") from None
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BackupError(f"not valid JSON: {e}") from None
    if not isinstance(document, dict) or document.get("format") != BACKUP_FORMAT:
        raise BackupError(f"not a backup of format {BACKUP_FORMAT}")
    if not isinstance(document.get("revision"), int) or not isinstance(
        document.get("snapshot"), dict
    ):
        raise BackupError("no revision or snapshot in it")
    if not isinstance(document.get("gatewayId"), str):
        raise BackupError("no gatewayId in it")
    return document
