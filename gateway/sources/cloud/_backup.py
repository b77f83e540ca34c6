"""
The backup of the cloud configuration: one JSON file, written atomically,
owner-only (0600), with its secret fields encrypted.

Blocking file I/O: the cloud source runs these functions in a thread
(``deferToThread``), never on the reactor.

The file holds only what the configuration service sent (the raw snapshot
entities and their revision), never objects of other sources, so loading
it cannot resurrect an Ingress or file object.

Secrets. The snapshot carries subscription keys, secret named values and
certificate private keys (:func:`cloudproto.secret_fields`). In the file
each of them is replaced by ``{"$encrypted": base64(nonce ‖ AES-256-GCM
ciphertext)}``, authenticated with its place (``list/id/field``) so a
ciphertext cannot be moved to another field; the rest stays readable, so an
operator can still see which APIs and revision a backup holds. The 256-bit
key is HKDF-SHA256 over one of two secrets (:class:`BackupKey`):

* ``config.backup.key`` (the key, or a file holding it): stable, so a
  backup stays readable across token rotations and by every replica given
  the same key. The recommended setting: a random value kept in a Secret
  apart from the backup volume (``openssl rand -base64 32``).
* otherwise the gateway token's signature (64 secret bytes nobody without
  the token can know). Nothing else in the token is both secret and
  stable: the signature changes with every token. So the source rewrites
  the backup as soon as it sees a new token, and a backup written under a
  token that was rotated while the gateway was down cannot be read: it is
  reported and ignored (the gateway then waits for the service, as with no
  backup). That is the trade-off of not configuring a key.

A ``keyId`` (a hash of the derived key, which reveals nothing of it) in the
file tells a wrong key apart from a damaged file in the log line.

Integrity. AES-GCM authenticates only the secret fields; the rest (backend
URLs, subscription states, ``subscriptionRequired``, policies, the revision)
would be open to whoever can write the file, and a changed ``serviceUrl``
sends traffic, subscription keys included, elsewhere. So the whole sealed
document carries a MAC: HMAC-SHA256 over its canonical JSON (keys sorted,
no spaces, ASCII; the header's ``mac`` left out), under a second HKDF
subkey of the same secret (``info`` = ``apimgw backup mac`` + gateway id),
stored as ``encryption.mac``. A format-2 file whose MAC is missing or does
not match is refused as altered (or written with another key), like a
corrupt one. A format-1 file (before encryption) has no MAC: it is still
read, so an upgrade keeps its backup, and the source warns when it loads
one; whoever can write the file can also write one of format 1, so the
warning on an unexpected format-1 load matters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from cloudproto import Token, secret_fields

__all__ = ["BACKUP_FILE", "BACKUP_FORMAT", "BackupError", "BackupKey", "BackupLocationNotFound",
           "backup_file", "load_backup", "read_key_setting", "write_backup"]

#: The file name inside ``config.backup.path``.
BACKUP_FILE = "cloud-config.json"

#: The version of the file's layout. Format 1 (secrets in clear, before
#: encryption) is still read, so an upgrade keeps its backup; 2 is written.
BACKUP_FORMAT = 2
_READABLE = (1, 2)

_ALGORITHM = "AES-256-GCM"
_KDF = "HKDF-SHA256"
_SALT = b"apimgw cloud backup v2"
_MAC_INFO = b"apimgw backup mac"
_MARK = "$encrypted"


class BackupError(Exception):
    """The backup cannot be read or used; the message says why."""


class BackupLocationNotFound(BackupError):
    """
    The backup directory does not exist (upstream's
    ``LoadBackupLocationNotFound``): backups are skipped.
    """


def read_key_setting(setting: str) -> str:
    """
    The value of ``config.backup.key``: the key itself, or, when it starts
    with ``/`` or ``.``, the path of a file holding it (a mounted Secret).

    :raises ValueError: the file cannot be read, or the key is shorter than
        16 characters (HKDF does not make a short password strong).
    """
    text = setting.strip()
    if text.startswith(("/", ".")):
        try:
            with open(text, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"config.backup.key: cannot read {setting}: {e}") from None
    if len(text) < 16:
        raise ValueError("config.backup.key must be at least 16 characters (a random value)")
    return text


@dataclass(frozen=True)
class BackupKey:
    """
    The key the secret fields are sealed with, and where it came from.

    :ivar source: ``config.backup.key`` or ``token``.
    :ivar key_id: a public fingerprint of the key (16 hex digits).
    """

    source: str
    key: bytes = field(repr=False)
    key_id: str
    mac_key: bytes = field(repr=False)

    @classmethod
    def derive(cls, material: bytes, gateway_id: str, source: str) -> BackupKey:
        """
        Two HKDF-SHA256 subkeys of ``material`` (32 bytes each): the
        encryption key (info = gateway id) and the MAC key (info =
        ``apimgw backup mac`` + gateway id), so neither use weakens the
        other.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        gateway = gateway_id.encode("utf-8")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                   info=gateway).derive(material)
        mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                       info=_MAC_INFO + gateway).derive(material)
        key_id = hmac.new(key, b"key id", hashlib.sha256).hexdigest()[:16]
        return cls(source, key, key_id, mac_key)

    def mac(self, document: dict[str, Any]) -> str:
        """
        The MAC of a sealed ``document``: HMAC-SHA256 (hex) over its
        canonical JSON, without the header's ``mac`` itself.
        """
        unsigned = dict(document)
        encryption = unsigned.get("encryption")
        if isinstance(encryption, dict):
            unsigned["encryption"] = {k: v for k, v in encryption.items() if k != "mac"}
        return hmac.new(self.mac_key, _canonical(unsigned), hashlib.sha256).hexdigest()

    @classmethod
    def configured(cls, value: str, gateway_id: str) -> BackupKey:
        """The key from ``config.backup.key``'s value (see :func:`read_key_setting`)."""
        return cls.derive(value.encode("utf-8"), gateway_id, "config.backup.key")

    @classmethod
    def from_token(cls, token: Token) -> BackupKey:
        """The key from the token's signature (changes with every token)."""
        return cls.derive(base64.b64decode(token.signature), token.gateway_id, "token")

    def seal(self, plaintext: str, place: str) -> dict[str, str]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        data = AESGCM(self.key).encrypt(nonce, plaintext.encode("utf-8"), place.encode("utf-8"))
        return {_MARK: base64.b64encode(nonce + data).decode("ascii")}

    def open(self, sealed: Any, place: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            raw = base64.b64decode(sealed[_MARK], validate=True)
            return AESGCM(self.key).decrypt(raw[:12], raw[12:], place.encode("utf-8")).decode(
                "utf-8")
        except (InvalidTag, binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise BackupError(f"the secret {place} cannot be decrypted (damaged, or sealed "
                              f"with another key)") from None


def _canonical(document: Any) -> bytes:
    """
    One byte string per JSON value: keys sorted, no spaces, ASCII escapes,
    so the MAC does not depend on how the file was laid out.

    :raises ValueError: a float that JSON cannot hold (NaN, infinity).
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {_MARK}


def _transform(snapshot: dict[str, Any], change: Any, fields: Any) -> dict[str, Any]:
    """A copy of ``snapshot`` with ``change(value, place)`` applied to ``fields(list, entity)``."""
    result = dict(snapshot)
    for name, items in snapshot.items():
        if not isinstance(items, list):
            continue
        copied = []
        for entity in items:
            if isinstance(entity, dict):
                secret = fields(name, entity)
                if secret:
                    entity = dict(entity)
                    for f in secret:
                        entity[f] = change(entity[f], f"{name}/{entity.get('id')}/{f}")
            copied.append(entity)
        result[name] = copied
    return result


def encrypt_document(document: dict[str, Any], key: BackupKey) -> dict[str, Any]:
    """The document to write: secret fields sealed, the key described, the whole MAC'ed."""
    def seal(value: Any, place: str) -> Any:
        return key.seal(json.dumps(value), place)

    sealed = dict(document)
    sealed["format"] = BACKUP_FORMAT
    sealed["encryption"] = {"algorithm": _ALGORITHM, "kdf": _KDF, "key": key.source,
                            "keyId": key.key_id}
    sealed["snapshot"] = _transform(document["snapshot"], seal, secret_fields)
    sealed["encryption"]["mac"] = key.mac(sealed)
    return sealed


def decrypt_document(document: dict[str, Any], key: BackupKey | None) -> dict[str, Any]:
    """
    The document as it was before :func:`encrypt_document` (a format-1
    document as it is: it has nothing sealed, nor a MAC).

    :raises BackupError: no key, another key, a MAC that is missing or does
        not match (the file was altered), or a secret that does not decrypt.
    """
    if document.get("format") == 1:
        return document
    encryption = document.get("encryption")
    if not isinstance(encryption, dict) or encryption.get("algorithm") != _ALGORITHM:
        raise BackupError(f"no {_ALGORITHM} encryption header in it")
    written_with = encryption.get("key")
    if key is None:
        raise BackupError(f"its secrets are encrypted with a key from {written_with}, and "
                          "there is no usable token to derive one from")
    if encryption.get("keyId") != key.key_id:
        raise BackupError(
            f"its secrets are encrypted with another key (from {written_with}, key id "
            f"{encryption.get('keyId')}; the key from {key.source} has id {key.key_id})"
            + ("; a key derived from the token changes with every token: set "
               "config.backup.key to keep backups readable across rotations"
               if written_with == "token" else "")
        )
    given = encryption.get("mac")
    try:
        expected = key.mac(document)
    except ValueError:
        expected = ""
    if not isinstance(given, str) or not expected or not hmac.compare_digest(
        given.encode("ascii", "replace"), expected.encode("ascii")
    ):
        raise BackupError(
            "its MAC " + ("is missing" if given is None else "does not match")
            + ": altered or written with another key"
        )

    def open_(value: Any, place: str) -> Any:
        return json.loads(key.open(value, place))

    def sealed_fields(name: str, entity: dict[str, Any]) -> list[str]:
        return [f for f, v in entity.items() if _sealed(v)]

    plain = dict(document)
    plain["snapshot"] = _transform(document["snapshot"], open_, sealed_fields)
    return plain


def backup_file(directory: str) -> str:
    """The backup file's path in ``directory``."""
    return os.path.join(directory, BACKUP_FILE)


def write_backup(directory: str, document: dict[str, Any], key: BackupKey) -> str:
    """
    Write ``document`` as the backup, its secret fields sealed with
    ``key``, atomically: a temporary file (created 0600 by ``mkstemp``) in
    the same directory, written, flushed and fsync'ed, renamed over the
    backup, then the directory fsync'ed, so a crash at any point leaves
    either the old backup or the new one, never a torn file.

    :return: the backup file's path.
    :raises BackupLocationNotFound: ``directory`` does not exist.
    :raises OSError: the write failed (the old backup is untouched).
    """
    if not os.path.isdir(directory):
        raise BackupLocationNotFound(f"the backup directory {directory} does not exist")
    sealed = encrypt_document(document, key)
    data = json.dumps(sealed, separators=(",", ":"), sort_keys=True).encode("utf-8")
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


def load_backup(
    directory: str, key_for: Callable[[str], BackupKey | None]
) -> dict[str, Any] | None:
    """
    Read the backup and decrypt its secret fields with ``key_for(gateway_id)``
    (the gateway id the backup names: the key is bound to it).

    :return: the document, or ``None`` when there is no backup file.
    :raises BackupLocationNotFound: ``directory`` does not exist.
    :raises BackupError: the file cannot be read, is not JSON, is not a
        backup of a known format, or its secrets cannot be decrypted
        (``key_for`` gave ``None``: no key could be had).
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
    if not isinstance(document, dict) or document.get("format") not in _READABLE:
        raise BackupError(f"not a backup of format {BACKUP_FORMAT}")
    if not isinstance(document.get("revision"), int) or not isinstance(
        document.get("snapshot"), dict
    ):
        raise BackupError("no revision or snapshot in it")
    if not isinstance(document.get("gatewayId"), str):
        raise BackupError("no gatewayId in it")
    return decrypt_document(document, key_for(document["gatewayId"]))
