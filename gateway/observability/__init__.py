"""
Metrics, the access log, health/readiness and the effective-config dump:
beside every stage of the pipeline, imported by ``tap`` and ``proxy``'s
owner, never importing the pipeline itself.
"""

from ._accesslog import FORMATS as ACCESS_LOG_FORMATS
from ._accesslog import AccessLog
from ._admin import AdminListener, AdminResource, AdminToken
from ._configdump import describe_generation
from ._health import Health
from ._metrics import GatewayMetrics
from ._observer import RequestObserver
from ._redact import DEFAULT_REDACTED_PARAMETERS, REDACTED, QueryRedactor

__all__ = [
    "ACCESS_LOG_FORMATS",
    "DEFAULT_REDACTED_PARAMETERS",
    "REDACTED",
    "AccessLog",
    "AdminListener",
    "AdminResource",
    "AdminToken",
    "GatewayMetrics",
    "Health",
    "QueryRedactor",
    "RequestObserver",
    "describe_generation",
]
