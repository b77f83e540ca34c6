"""
The ``twistd apimgw`` plugin: a thin, lazy pointer to :mod:`gateway.tap`.

Nothing of the gateway is imported until the plugin is used, so listing
plugins (``twistd --help``) stays fast and cannot fail on our imports.
"""

from twisted.application.service import ServiceMaker

apimgw = ServiceMaker(
    "apimgw",
    "gateway.tap",
    "An open, self-hosted API gateway (Kubernetes Ingress, configuration service, local file).",
    "apimgw",
)
