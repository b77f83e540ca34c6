"""
The route table: one immutable lookup structure per configuration.

Built from the translated route entries once per configuration change and
swapped whole by the reconciler inside a :class:`Generation`; the proxy calls
:meth:`RouteTable.lookup` once per request. The matching rules (host tiers,
Ingress path semantics, API operations) are documented in
:mod:`gateway.routing._trie` and :mod:`gateway.routing._operations`.
"""

from ._facts import RequestFacts
from ._trie import Match, RouteTable
from .generation import CertificateMap, Generation, LiveGeneration

__all__ = ["CertificateMap", "Generation", "LiveGeneration", "Match", "RequestFacts", "RouteTable"]
