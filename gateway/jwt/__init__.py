"""
The runtime of ``validate-jwt``: token checks on the request path and the
background cache of OpenID signing keys.

Runtime state that outlives a request (the JWKS cache, its timers) lives
here, beside the proxy, never in pure :mod:`gateway.translate`; the proxy
does not import this package: the composition root builds a
:class:`TokenValidator` and hands it to the policy executor as its
``JwtValidator``, and calls :meth:`OpenIdKeys.watch` at every swap.

* :mod:`._validator`: :class:`TokenValidator`, synchronous and without I/O.
* :mod:`._claims`: lifetime, audiences, issuers, required claims.
* :mod:`._keys`: step keys and JWKS documents as joserfc keys by ``kid``.
* :mod:`._messages`: the refusal messages (IdentityModel's codes).
* :mod:`._openid`: :class:`OpenIdKeys`, fetching and refreshing keys.
* :mod:`._walk`: the ``openid-config`` URLs a configuration uses.
* :mod:`._fetch`: the non-blocking HTTP GET it fetches with.
* :mod:`._service`: stopping the cache with the gateway.
"""

from ._fetch import Fetch, FetchError, http_fetch
from ._keys import KeySet, MalformedDocument, jwks_keys, step_keys
from ._openid import OpenIdKeys
from ._service import OpenIdKeysService
from ._validator import SUPPORTED_ALGORITHMS, KeySource, TokenValidator
from ._walk import jwt_steps, openid_urls

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Fetch",
    "FetchError",
    "KeySet",
    "KeySource",
    "MalformedDocument",
    "OpenIdKeys",
    "OpenIdKeysService",
    "TokenValidator",
    "http_fetch",
    "jwks_keys",
    "jwt_steps",
    "openid_urls",
    "step_keys",
]
