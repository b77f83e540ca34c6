"""
The local configuration file source (``--config FILE``).

The file is the clusterless way to run the gateway: it is read at start,
re-read when it or a certificate file it names changes (polled: no inotify
dependency, and it works on Kubernetes ConfigMap and Secret mounts, whose
updates swap a symlink) or when the operator asks (``SIGHUP``, wired by
``gateway.tap``). A file that does not parse never replaces a configuration
that does: the previous objects keep serving and the error is logged with
its line.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.model import RouteSet, SourceObject, Store
from gateway.ready import OneShot

from ._decode import ConfigFileError, parse_config

__all__ = ["FileSource"]

#: What identifies one version of the file without reading it: device and
#: inode (replaced by an editor's rename or a ConfigMap symlink swap), size,
#: and modification and change times in nanoseconds.
_Signature = tuple[int, int, int, int, int]

#: The file changed while it was read: the next poll reads it again.
_UNSETTLED: _Signature = (-1, -1, -1, -1, -1)

#: Reads of a file that changes while it is read, before giving up until the
#: next poll.
_READ_ATTEMPTS = 3


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat(path: str) -> _Signature | None:
    try:
        return _signature(os.stat(path))
    except OSError:
        return None


def _read_noted(path: str, noted: dict[str, _Signature | None]) -> str:
    """
    Read a certificate file named by the configuration, noting its version
    first: a change after that point makes the next poll read it again.
    """
    noted[path] = _stat(path)
    with open(path, encoding="utf-8") as f:
        return f.read()


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigFileError("not UTF-8 text", path=path, line=line) from None


class FileSource(Service):
    """
    Keeps the objects of one configuration file in the store, under one
    source name.

    :ivar path: the configuration file.
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        path: str,
        *,
        reactor: IReactorTime,
        poll_interval: float = 1.0,
        source: str = "file",
        on_reload_failed: Callable[[ConfigFileError], None] | None = None,
    ) -> None:
        """
        :param store: where the file's objects go.
        :param path: the configuration file; relative ``certFile``/``keyFile``
            names in it are relative to its directory.
        :param reactor: the clock polling runs on.
        :param poll_interval: seconds between checks for a changed file.
        :param source: the source name of the objects (their refs' source).
        :param on_reload_failed: told about every load that failed, so that a
            metric or a readiness check can count it.
        """
        self.path = path
        self._store = store
        self._reactor = reactor
        self._poll_interval = poll_interval
        self._source = source
        self._on_reload_failed = on_reload_failed
        self._loop: LoopingCall | None = None
        #: The file version last read (successfully or not); polling reloads
        #: when the file is no longer that version.
        self._seen: _Signature | None = None
        #: The certificate files the last read named, each with its version
        #: as it was just before being read (``None``: it could not be
        #: stat'ed); polling reloads when one of them changes.
        self._included: dict[str, _Signature | None] = {}
        self._synced: OneShot[None] = OneShot()

    def startService(self) -> None:
        """Load the file now, then watch it for changes."""
        super().startService()
        self.reload()
        self._loop = LoopingCall(self._poll)
        self._loop.clock = self._reactor
        self._loop.start(self._poll_interval, now=False)

    def stopService(self) -> None:
        """Stop watching the file; the store keeps the objects last loaded."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def when_synced(self) -> Deferred[None]:
        """
        A new Deferred that fires with ``None`` once the file has been
        loaded successfully (at once if it already has), so that readiness
        can wait for the first configuration.
        """
        return self._synced.when()

    def reload(self) -> bool:
        """
        Read and parse the file now and make its objects the source's
        complete set in the store.

        :return: ``True`` if the file was loaded; ``False`` if it could not
            be read or parsed, in which case the error has been logged and
            passed to ``on_reload_failed`` and the store is unchanged.
        """
        try:
            objects = self._load()
        except ConfigFileError as error:
            self._failed(error)
            return False
        self._store.replace_source(self._source, objects)
        self._log_loaded(objects)
        self._synced.fire(None)
        return True

    def _load(self) -> list[SourceObject]:
        for _ in range(_READ_ATTEMPTS):
            self._seen = _stat(self.path)
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    data = f.read()
            except OSError as e:
                message = f"cannot read the configuration file: {e.strerror or e}"
                raise ConfigFileError(message, path=self.path) from None
            # Compared with the path's state before and after the read, so a
            # half-written version (an editor writing in place) is not served.
            if _signature(st) == self._seen == _stat(self.path):
                included: dict[str, _Signature | None] = {}
                try:
                    return parse_config(
                        _decode(data, self.path),
                        path=self.path,
                        modified=st.st_mtime,
                        source=self._source,
                        base_dir=os.path.dirname(os.path.abspath(self.path)),
                        read_file=lambda name: _read_noted(name, included),
                    )
                finally:
                    # Also after a failure: a missing certificate file is
                    # retried when it appears, not on every poll.
                    self._included = included
        self._seen = _UNSETTLED
        message = "the configuration file kept changing while being read"
        raise ConfigFileError(message, path=self.path)

    def _poll(self) -> None:
        # Never raises: an exception would stop the LoopingCall for good and
        # the file would silently no longer be watched.
        try:
            if _stat(self.path) != self._seen:
                self.reload()
                return
            for name, seen in self._included.items():
                if _stat(name) != seen:
                    self._log.info(
                        "File {file}, named by the configuration, changed: reloading {path}",
                        file=name,
                        path=self.path,
                    )
                    self.reload()
                    return
        except Exception:
            self._log.failure("Checking configuration file {path} failed", path=self.path)

    def _failed(self, error: ConfigFileError) -> None:
        if self._synced.done:
            self._log.error(
                "Configuration not reloaded, the previous one stays in service: {error}",
                error=str(error),
                path=error.path,
                line=error.line,
            )
        else:
            self._log.error(
                "Configuration not loaded, nothing from it is served until it is fixed: {error}",
                error=str(error),
                path=error.path,
                line=error.line,
            )
        if self._on_reload_failed is not None:
            try:
                self._on_reload_failed(error)
            except Exception:
                self._log.failure("on_reload_failed raised for {path}", path=self.path)

    def _log_loaded(self, objects: list[SourceObject]) -> None:
        kinds = [obj.ref.kind for obj in objects]
        routes = sum(len(obj.body.routes) for obj in objects if isinstance(obj.body, RouteSet))
        self._log.info(
            "Loaded configuration {path}: {apis} APIs, {routes} routes, "
            "{certificates} certificates",
            path=self.path,
            apis=kinds.count("api"),
            routes=routes,
            certificates=kinds.count("certificate"),
        )
