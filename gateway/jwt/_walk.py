"""
Which ``openid-config`` URLs a configuration uses: every ``validate-jwt``
step of every served pipeline, at any depth of ``choose`` and ``retry``.
The key cache fetches exactly these and forgets the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gateway.translate import GatewayConfig
from gateway.translate.policy import Choose, Pipeline, Retry, Step, ValidateJwt

__all__ = ["jwt_steps", "openid_urls"]


def _steps(steps: Iterable[Step]) -> Iterator[ValidateJwt]:
    for step in steps:
        if isinstance(step, ValidateJwt):
            yield step
        elif isinstance(step, Choose):
            for branch in step.branches:
                yield from _steps(branch.steps)
            yield from _steps(step.otherwise)
        elif isinstance(step, Retry):
            yield from _steps(step.steps)


def _pipelines(config: GatewayConfig) -> Iterator[Pipeline]:
    for route in config.routes:
        if route.pipelines is not None:
            yield from route.pipelines.values()
        for operation in route.operations or ():
            if operation.pipelines is not None:
                yield from operation.pipelines.values()


def jwt_steps(config: GatewayConfig) -> Iterator[ValidateJwt]:
    """Every ``validate-jwt`` step of the configuration (a step shared by pipelines: once each)."""
    seen: set[int] = set()
    for pipeline in _pipelines(config):
        if id(pipeline) in seen:
            continue
        seen.add(id(pipeline))
        for section in (pipeline.inbound, pipeline.backend, pipeline.outbound, pipeline.on_error):
            yield from _steps(section)


def openid_urls(config: GatewayConfig) -> frozenset[str]:
    """The distinct ``openid-config`` URLs of the configuration."""
    return frozenset(url for step in jwt_steps(config) for url in step.openid_config_urls)
