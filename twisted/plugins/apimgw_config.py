"""
The ``twistd apimgw-config`` plugin: a thin, lazy pointer to
:mod:`configservice.tap`.

Nothing of the service is imported until the plugin is used, so listing
plugins (``twistd --help``) stays fast and cannot fail on our imports.
"""

from twisted.application.service import ServiceMaker

apimgwConfig = ServiceMaker(
    "apimgw-config",
    "configservice.tap",
    "The apimgw configuration service (management API, gateway snapshot and change feed).",
    "apimgw-config",
)
