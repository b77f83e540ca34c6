"""
The rules for an API's subscription key names (APIM's
``subscriptionKeyParameterNames: {header, query}``): where a request
carries its subscription key.

One set of rules for every reader: the configuration service (which
refuses a bad name with a 400), the gateway's cloud decoder (which keeps
an API with one out, should an older service deliver it) and the local
file decoder (which refuses the file, naming the line). Written once here,
so a name one of them accepts cannot be one another refuses, or one the
proxy can never match.

* ``header``: an HTTP field name (RFC 9110 ``token``). A header named
  otherwise can never arrive; one outside Latin-1 cannot even be encoded.
* ``query``: RFC 3986 unreserved characters only (letters, digits, ``.``,
  ``_``, ``~``, ``-``). The gateway finds the parameter by its literal
  ``name=`` in the raw query string, so a name a client has to
  percent-encode, or one holding ``&``, ``=``, ``+`` or ``#``, never
  matches.
* each at most :data:`MAX_KEY_NAME` characters, and not empty;
* a part not given (absent or ``null``) is APIM's default,
  :data:`DEFAULT_KEY_NAMES`.

Reading the JSON or YAML around the names (types, unknown parts) stays
with each reader, which reports in its own way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DEFAULT_KEY_NAMES", "KEY_NAME_PARTS", "MAX_KEY_NAME", "key_name_error"]

#: The two parts of ``subscriptionKeyParameterNames``, in this order.
KEY_NAME_PARTS = ("header", "query")

#: APIM's default names (also the gateway's), by part.
DEFAULT_KEY_NAMES: Mapping[str, str] = MappingProxyType(
    {"header": "Ocp-Apim-Subscription-Key", "query": "subscription-key"}
)

#: The longest name accepted for either part, in characters.
MAX_KEY_NAME = 100

_GRAMMARS = {
    # RFC 9110 ``token``.
    "header": (
        re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"),
        "an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)",
    ),
    # RFC 3986 ``unreserved``.
    "query": (
        re.compile(r"[A-Za-z0-9._~-]+"),
        (
            "letters, digits, '.', '_', '~' or '-' (a query parameter name the gateway "
            "can find as written)"
        ),
    ),
}


def key_name_error(part: str, name: object) -> str | None:
    """
    What is wrong with ``name`` as the ``part`` (``"header"`` or
    ``"query"``) of ``subscriptionKeyParameterNames``, or ``None`` if it is
    a good name.

    The text is what follows the field's name in a message
    (``must be ..., not 'X Key'``); the caller names the field, and decides
    what a part not given means (:data:`DEFAULT_KEY_NAMES`).

    :raises ValueError: ``part`` is neither ``"header"`` nor ``"query"``
        (a caller's mistake, not a bad name).
    """
    if part not in _GRAMMARS:
        raise ValueError(f"no such subscription key name part: {part!r}")
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_KEY_NAME:
        return f"must be at most {MAX_KEY_NAME} characters"
    pattern, what = _GRAMMARS[part]
    if not pattern.fullmatch(name):
        return f"must be {what}, not {name!r}"
    return None
