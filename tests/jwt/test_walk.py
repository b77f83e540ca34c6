"""
:func:`gateway.jwt.openid_urls`: the URLs a configuration's
``validate-jwt`` steps use, wherever the steps stand.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.jwt import openid_urls
from gateway.model import ObjectRef
from gateway.translate import (
    KIND_API,
    PREFIX,
    GatewayConfig,
    OperationSpec,
    RouteEntry,
    parse_backend,
)
from gateway.translate.policy import Choose, Pipeline, Retry, SetVariable, ValidateJwt, When


def jwt(*urls: str) -> ValidateJwt:
    return ValidateJwt(header_name="Authorization", openid_config_urls=urls)


def route(name: str, pipelines: object = None, operations: object = None) -> RouteEntry:
    return RouteEntry(
        host="", path=f"/{name}", match=PREFIX, kind=KIND_API,
        backend=parse_backend("http://127.0.0.1:9/"), origin=ObjectRef("file", "api", name),
        modified=0.0, label=name, pipelines=pipelines, operations=operations,  # type: ignore[arg-type]
    )


class OpenIdUrlsTests(SynchronousTestCase):
    """Walking every pipeline of a configuration."""

    def test_every_place(self) -> None:
        """
        API pipelines, operation pipelines, every product context, every
        section, and steps nested in choose (when and otherwise) and retry.
        """
        nested = Choose(
            branches=(When(True, (jwt("https://a/cfg"),)),),
            otherwise=(Retry(True, 1, 0, steps=(Choose((When(False, (jwt("https://b/cfg"),)),)),)),),
        )
        api = route("api", {None: Pipeline(inbound=(SetVariable("x", "1"), nested)),
                            "gold": Pipeline(inbound=(jwt("https://c/cfg", "https://a/cfg"),))})
        operation = OperationSpec("op", "GET", "/x", ("x",),
                                  pipelines={None: Pipeline(on_error=(jwt("https://d/cfg"),))})
        with_ops = route("ops", operations=(operation, OperationSpec("plain", "GET", "/y", ("y",))))
        config = GatewayConfig(routes=(api, with_ops, route("none")))
        self.assertEqual(openid_urls(config),
                         {"https://a/cfg", "https://b/cfg", "https://c/cfg", "https://d/cfg"})

    def test_nothing(self) -> None:
        """A configuration without validate-jwt uses no URL."""
        self.assertEqual(openid_urls(GatewayConfig()), frozenset())
