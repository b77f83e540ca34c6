"""
Metrics, the access log, health/readiness and the effective-config dump:
beside every stage of the pipeline, imported by ``tap`` and ``proxy``'s
owner, never importing the pipeline itself.
"""

from ._accesslog import FORMATS as ACCESS_LOG_FORMATS
from ._accesslog import AccessLog, build_access_log
from ._admin import AdminListener, AdminResource, AdminToken
from ._configdump import describe_generation
from ._health import Health
from ._logwriter import DEFAULT_BUFFER as ACCESS_LOG_BUFFER
from ._logwriter import LogWriter, LogWriterService, open_sink, twistd_logs_to_stdout
from ._metrics import GatewayMetrics
from ._observer import RequestObserver
from ._redact import DEFAULT_REDACTED_PARAMETERS, REDACTED, QueryRedactor

__all__ = [
    "ACCESS_LOG_BUFFER",
    "ACCESS_LOG_FORMATS",
    "DEFAULT_REDACTED_PARAMETERS",
    "REDACTED",
    "AccessLog",
    "AdminListener",
    "AdminResource",
    "AdminToken",
    "GatewayMetrics",
    "Health",
    "LogWriter",
    "LogWriterService",
    "QueryRedactor",
    "RequestObserver",
    "build_access_log",
    "describe_generation",
    "open_sink",
    "twistd_logs_to_stdout",
]
