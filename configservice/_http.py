"""
A small JSON-over-HTTP layer: a route table and one leaf resource in front
of it (no framework).

Routes are ``(method, "/apis/{apiId}/operations/{operationId}")`` with
async handlers. The leaf resource parses the path into segments (each
percent-decoded on its own, so ``%2F`` stays inside a segment), resolves
the route (404 for no path, 405 with ``Allow`` for a wrong method), runs
the authentication hook, parses a JSON body, and writes the answer. When
the client goes away, the handler's Deferred is cancelled, so a long poll
stops waiting at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ._errors import ApiError

__all__ = ["Call", "JsonResource", "Router", "client_address"]

#: Largest accepted request body (a certificate chain or a policy fits easily).
MAX_BODY = 4 * 1024 * 1024


@dataclass
class Call:
    """One routed request: its path parameters and its parsed JSON body."""

    request: Request
    params: dict[str, str]
    body: Any

    def arg(self, name: str) -> str | None:
        values = self.request.args.get(name.encode("ascii")) if self.request.args else None
        return values[-1].decode("utf-8", "replace") if values else None


Handler = Callable[[Call], Awaitable[tuple[int, Any]]]
Authenticate = Callable[[Request, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class _Route:
    method: str
    template: tuple[str, ...]
    handler: Handler

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.template):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(self.template, segments):
            if pattern.startswith("{"):
                if not segment:
                    return None
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


class Router:
    """An ordered route table (a literal segment is listed before a parameter where both match)."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        self._routes.append(_Route(method, tuple(template.strip("/").split("/")), handler))

    def resolve(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str]]:
        allowed: list[str] = []
        for route in self._routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return route.handler, params
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, f"method {method} not allowed here",
                           headers={"Allow": ", ".join(sorted(set(allowed)))})
        raise ApiError(404, "Resource not found")


def client_address(request: Request) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))


def _segments(path: bytes) -> list[str]:
    parts = path.split(b"/")[1:]
    if len(parts) > 1 and parts[-1] == b"":
        parts = parts[:-1]
    try:
        return [unquote(part.decode("ascii"), errors="strict") for part in parts]
    except (UnicodeDecodeError, ValueError):
        raise ApiError(404, "Resource not found") from None


class JsonResource(Resource):
    """
    The one resource of a listener.

    :param authenticate: awaited before the handler, with the request and
        the path parameters; raises :class:`ApiError` (401/403) to refuse.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, router: Router, authenticate: Authenticate, name: str) -> None:
        super().__init__()
        self._router = router
        self._authenticate = authenticate
        self._name = name

    def render(self, request: Request) -> Any:
        gone: list[bool] = []
        d = Deferred.fromCoroutine(self._serve(request, gone))

        def disconnected(_: Any) -> None:
            gone.append(True)
            d.cancel()

        request.notifyFinish().addErrback(disconnected)
        d.addErrback(self._unexpected, request)
        return NOT_DONE_YET

    def _unexpected(self, failure: Any, request: Request) -> None:
        self._log.failure("Unexpected error answering {method} {path}", failure,
                          method=request.method, path=request.path)

    async def _serve(self, request: Request, gone: list[bool]) -> None:
        headers: dict[str, str] = {}
        try:
            method = request.method.decode("ascii")
            handler, params = self._router.resolve(method, _segments(request.path))
            await self._authenticate(request, params)
            body = self._body(request) if method in ("PUT", "POST", "PATCH") else None
            status, payload = await handler(Call(request, params, body))
        except ApiError as error:
            status, payload, headers = error.status, error.payload(), error.headers
        except CancelledError:
            return
        except Exception:
            self._log.failure(
                "{listener}: error answering {method} {path}",
                listener=self._name, method=request.method, path=request.path,
            )
            status, payload = 500, {"statusCode": 500, "message": "Internal server error"}
        if gone:
            return
        request.setResponseCode(status)
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in headers.items():
            request.setHeader(name.encode("ascii"), value.encode("utf-8"))
        if status == 204 or payload is None:
            request.finish()
            return
        request.setHeader(b"Content-Type", b"application/json")
        request.write(json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n")
        request.finish()

    def _body(self, request: Request) -> Any:
        content = request.content
        if content is None:
            return None
        content.seek(0)
        data = content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise ApiError(413, f"the request body exceeds {MAX_BODY} bytes")
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError as e:
            raise ApiError(400, f"body: not valid JSON ({e})", field="body") from None
