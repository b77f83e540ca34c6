"""
The local file source and the built-in default configuration.

* :mod:`._decode` is pure: YAML text in, model objects out (structure
  errors with their line); it reads the certificate files a configuration
  names only through the function it is given;
* :class:`FileSource` keeps one file's objects in the store, polling it and
  the certificate files it names; :class:`SignalReload` reloads on SIGHUP;
* :class:`DefaultConfigSource` publishes the built-in Echo API when nothing
  else is configured.
"""

from ._decode import ConfigFileError, parse_config
from ._default import DEFAULT_CONFIG_TEMPLATE, DefaultConfigSource, default_objects
from ._reload import SignalReload
from ._source import FileSource

__all__ = [
    "DEFAULT_CONFIG_TEMPLATE",
    "ConfigFileError",
    "DefaultConfigSource",
    "FileSource",
    "SignalReload",
    "default_objects",
    "parse_config",
]
