"""
The route table: translated route entries compiled once per configuration
into dictionaries, so that a lookup costs a few dict probes per path segment
whatever the number of routes.

Shape::

    RouteTable
      exact hosts    {"www.example.com": _Tier, ...}
      wildcards      {"example.com": _Tier, ...}       # from "*.example.com"
      any host       _Tier | None
    _Tier
      exact paths    {"/foo": _Target, "/foo/": _Target, ...}   # full path, as configured
      prefix trie    "" -> "/" node -> "aaa" -> "bbb" ...       # one node per segment

Host precedence, one tier after the other:

1. the exact host name (``www.example.com``);
2. the one-label wildcard for it (``a.example.com`` tries ``*.example.com``;
   ``a.b.example.com`` tries ``*.b.example.com`` only, and ``example.com``
   tries ``*.com``);
3. the routes for any host.

The first tier whose paths match the request decides; a tier with no
matching path at all falls through to the next. So a host that has its own
routes still reaches the any-host routes for paths it does not configure,
as an Ingress rule for one host does not hide the default rules.

Path precedence within a tier, Kubernetes Ingress semantics: an Exact path
beats any Prefix path; among Prefix paths the longest, counted in whole
``/``-separated segments, wins. Exact paths compare the whole request path
as configured (``/foo/`` does not match ``/foo``). Prefix paths compare
segment by segment (``/aaa/bbb`` matches ``/aaa/bbb``, ``/aaa/bbb/`` and
``/aaa/bbb/ccc``, never ``/aaa/bbbxyz``); a trailing slash on the configured
Prefix path is ignored, and a trailing slash on the request adds only an empty
last segment, which no Prefix path ends with, so it is ignored too.

An entry with operations owns every path below its own: when its path
matched but none of its operations accepts the method and path, the lookup
returns ``None`` (the gateway answers 404) rather than trying a shorter
prefix or another host tier, so an API's 404 never turns into some other
backend's response.

The request path is matched as sent: no percent-decoding, no collapsing of
``//`` (an empty segment is a segment). A path that does not start with
``/`` (``*``, an absolute URI) matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

from gateway.memo import BuildMemo, remembered
from gateway.translate import (
    DEEP_WILDCARD,
    EXACT,
    KIND_API,
    PREFIX,
    REGEX,
    LinearPattern,
    ListenerClaim,
    OperationSpec,
    RegexError,
    RouteEntry,
    Variant,
    compile_linear,
)

from ._facts import RequestFacts
from ._operations import OperationTrie
from ._variants import Conditions, compile_variants, select

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})

_EMPTY: frozenset[str] = frozenset()


class Match(NamedTuple):
    """
    The result of a successful lookup; immutable. A named tuple rather than
    a frozen dataclass: one is made per request, and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (measured:
    2% of the proxy path's instructions, bench/path_instructions.py).

    :ivar entry: the route entry that matched.
    :ivar rest: for :data:`~gateway.translate.KIND_API`, the request path
        after the entry's path: ``""`` or starting with ``/`` (the whole path
        for an API at ``/``); for :data:`~gateway.translate.KIND_ROUTE`, the
        whole request path, unchanged.
    :ivar operation: the matched operation; ``None`` when the entry has no
        operations, or for an ``OPTIONS`` request to a path of an API whose
        operations list it only for other methods (a possible CORS
        preflight: the proxy answers it at the API level or with 404).
    :ivar params: the captured ``{param}`` values, empty when none.
    :ivar variant: for a Gateway API entry (``entry.variants`` set), the
        variant whose conditions held: what the proxy serves. ``None`` for
        every other entry.
    """

    entry: RouteEntry
    rest: str
    operation: OperationSpec | None
    params: Mapping[str, str]
    variant: Variant | None = None


#: What serving a tier or a target gives: a match, ``None`` (decided: no
#: route, 404), or ``False`` (nothing there holds: try the next candidate).
_Served = Match | None | Literal[False]


class _Target:
    """
    What a trie node or an exact path leads to: one entry and what is
    precomputed for it (where its path ends in the request, its kind, its
    compiled operations).
    """

    __slots__ = ("conditions", "cut", "entry", "is_api", "operations")

    def __init__(self, entry: RouteEntry, cut: int, memo: BuildMemo | None = None) -> None:
        self.entry = entry
        self.cut = cut
        self.is_api = entry.kind == KIND_API
        variants = entry.variants
        self.conditions: tuple[Conditions, ...] | None = (
            None if variants is None else compile_variants(variants)
        )
        operations = entry.operations
        # A trie is never mutated after compile: the same operations (an
        # unchanged API) share one across builds.
        self.operations = (
            None
            if operations is None
            else remembered(memo, operations, "operations", lambda: OperationTrie.compile(operations))
        )

    def match(self, path: str, method: str) -> Match | None:
        """The match for a request whose path led here, or ``None`` when
        the entry's operations accept neither its method nor its path."""
        if self.operations is None:
            rest = path[self.cut :] if self.is_api else path
            return Match(self.entry, rest, None, _NO_PARAMS)
        below = path[self.cut :]
        rest = below if self.is_api else path
        found = self.operations.match(below, method)
        if found is None:
            if method == "OPTIONS" and self.is_api and self.operations.lists_path(below):
                # No operation accepts it, but an operation of another
                # method has this path: it may be a CORS preflight, which
                # APIM answers at the API level; the proxy decides
                # (operation None on an API with operations).
                return Match(self.entry, rest, None, _NO_PARAMS)
            return None
        operation, values = found
        params = dict(zip(operation.names, values, strict=True)) if values else _NO_PARAMS
        return Match(self.entry, rest, operation.spec, params)

    def serve(
        self, path: str, method: str, scheme: bytes, facts: RequestFacts | None
    ) -> _Served:
        """
        As :meth:`match` for a plain entry (its path decides); for an
        entry with variants, the match of the first variant that holds, or
        ``False`` when none does (the lookup tries the next candidate).
        """
        conditions = self.conditions
        if conditions is None:
            return self.match(path, method)
        variant = select(conditions, method, scheme, facts)
        if variant is None:
            return False
        rest = path[self.cut :] if self.is_api else path
        return Match(self.entry, rest, None, _NO_PARAMS, variant)


class _PathNode:
    """One path segment: children by segment, and the Prefix entry whose
    path ends here, if any."""

    __slots__ = ("children", "target")

    def __init__(self) -> None:
        self.children: dict[str, _PathNode] = {}
        self.target: _Target | None = None


class _Tier:
    """
    The paths of one host pattern. The trie's root stands before the path's
    leading ``/``: ``"/aaa/bbb".split("/")`` is ``["", "aaa", "bbb"]``, so
    the split request path walks the trie as it is, with no slicing, and the
    Prefix path ``/`` lives at the root's ``""`` child.
    """

    __slots__ = ("exact", "general", "regex", "root")

    def __init__(self) -> None:
        self.exact: dict[str, _Target] = {}
        self.root = _PathNode()
        #: REGEX entries, longer patterns first (the resolver's order).
        self.regex: list[tuple[LinearPattern, _Target]] = []
        #: Has REGEX entries or entries with variants: lookups walk every
        #: candidate (:meth:`serve`) instead of taking the most specific.
        self.general = False

    def add(self, entry: RouteEntry, memo: BuildMemo | None = None) -> None:
        if entry.variants is not None:
            self.general = True
        if entry.match == EXACT:
            if entry.path in self.exact:
                raise ValueError(f"duplicate route {entry.key!r}")
            self.exact[entry.path] = _Target(entry, len(entry.path), memo)
            return
        if entry.match == REGEX:
            if any(p.pattern == entry.path for p, _ in self.regex):
                raise ValueError(f"duplicate route {entry.key!r}")
            try:
                pattern = compile_linear(entry.path)
            except RegexError as e:
                raise ValueError(f"invalid pattern in {entry.key!r}: {e}") from None
            self.regex.append((pattern, _Target(entry, 0, memo)))
            self.regex.sort(key=lambda pt: (-len(pt[0].pattern), pt[0].pattern))
            self.general = True
            return
        if entry.match != PREFIX:
            raise ValueError(f"unknown match kind {entry.match!r} in {entry.key!r}")
        # translate already normalises Prefix paths; entries built by hand
        # may still end with "/", which Ingress semantics ignore.
        path = entry.path.rstrip("/")
        node = self.root
        for segment in path.split("/") if path else ("",):
            node = node.children.setdefault(segment, _PathNode())
        if node.target is not None:
            raise ValueError(f"duplicate route {entry.key!r}")
        node.target = _Target(entry, len(path), memo)

    def find(self, path: str, segments: list[str]) -> _Target | None:
        target = self.exact.get(path)
        if target is not None:
            return target
        node = self.root
        for segment in segments:
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            if node.target is not None:
                target = node.target
        return target

    def serve(
        self,
        path: str,
        segments: list[str],
        method: str,
        scheme: bytes,
        facts: RequestFacts | None,
    ) -> _Served:
        """
        The tier's answer: the most specific candidate decides as in
        :meth:`find`, except that an entry with variants none of which
        holds passes on to the next candidate (exact, then patterns, then
        shorter prefixes); ``False`` when no candidate is left.
        """
        if not self.general:
            target = self.find(path, segments)
            return False if target is None else target.match(path, method)
        target = self.exact.get(path)
        if target is not None:
            found = target.serve(path, method, scheme, facts)
            if found is not False:
                return found
        for pattern, target in self.regex:
            if pattern.fullmatch(path) is not None:
                found = target.serve(path, method, scheme, facts)
                if found is not False:
                    return found
        chain = []
        node = self.root
        for segment in segments:
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            if node.target is not None:
                chain.append(node.target)
        for target in reversed(chain):
            found = target.serve(path, method, scheme, facts)
            if found is not False:
                return found
        return False


def _hostname(host: str) -> str:
    """
    The Host header value as a lookup key: lower case, without the port and
    without a trailing dot. An IPv6 literal keeps its brackets
    (``[::1]:8080`` → ``[::1]``), so it can never equal a configured name or
    a wildcard suffix.
    """
    name = host.lower()
    if name[:1] == "[":
        end = name.find("]")
        return name[: end + 1] if end > 0 else name
    colon = name.find(":")
    if colon >= 0:
        name = name[:colon]
    if name[-1:] == ".":
        name = name[:-1]
    return name


def _tier(entries: list[RouteEntry], memo: BuildMemo | None) -> _Tier:
    """
    The tier of one host pattern. With ``memo``, a tier whose entries are
    the very same objects as in the last build is reused (tiers are never
    mutated after they are built): a change on one host rebuilds that
    host's tier only. The memo keeps the tier, and with it its entries, so
    the ids in the key stay unique while it lives.
    """

    def build() -> _Tier:
        tier = _Tier()
        for entry in entries:
            tier.add(entry, memo)
        return tier

    if memo is None:
        return build()
    return memo.get(("tier", tuple(map(id, entries))), build)


#: :meth:`RouteTable.lookup` remembers this many answers at most (then
#: starts over), for a Host and path this long at most together: about
#: 1 MB a table at worst.
_RECENT_SIZE = 2048
_RECENT_KEY = 256
_UNKNOWN = object()


class RouteTable:
    """
    All effective routes of one configuration, ready for lookups.

    Built once per configuration change by :meth:`build` and never mutated
    afterwards, so the reconciler can swap the whole table by replacing one
    reference while requests keep looking up the old one.
    """

    __slots__ = (
        "_any",
        "_claims",
        "_count",
        "_deep",
        "_general",
        "_hosts",
        "_recent",
        "_wildcards",
    )

    def __init__(
        self,
        hosts: dict[str, _Tier],
        wildcards: dict[str, _Tier],
        any_host: _Tier | None,
        count: int,
        deep: dict[str, _Tier] | None = None,
        claims: dict[bytes, tuple[frozenset[str], frozenset[str]]] | None = None,
    ) -> None:
        self._hosts = hosts
        self._wildcards = wildcards
        self._any = any_host
        self._count = count
        self._deep = deep or {}
        self._claims = claims or {}
        tiers = [*hosts.values(), *wildcards.values(), *self._deep.values()]
        if any_host is not None:
            tiers.append(any_host)
        #: Any Gateway API feature in this table (deep wildcards, claims,
        #: patterns, variants): lookups take :meth:`_lookup_general`.
        self._general = bool(self._deep or self._claims or any(t.general for t in tiers))
        #: Answers of recent lookups, by (Host, path, method): see :meth:`lookup`.
        self._recent: dict[tuple[str, str, str], Match | None] = {}

    @classmethod
    def build(
        cls,
        routes: Iterable[RouteEntry],
        memo: BuildMemo | None = None,
        claims: Iterable[ListenerClaim] = (),
    ) -> RouteTable:
        """
        Compile route entries (as :func:`gateway.translate.translate` gives
        them) into a table. With ``memo``, the compiled operations of an
        API whose operations did not change since the last build are reused.
        ``claims`` are the Gateway API listeners' hostnames per scheme
        (:attr:`GatewayConfig.claims <gateway.translate.GatewayConfig.claims>`):
        listener isolation.

        :raises ValueError: two entries have the same host, match kind and
            path (translation never produces that), or an unknown match kind.
        """
        groups: dict[str, list[RouteEntry]] = {}
        for entry in routes:
            groups.setdefault(entry.host, []).append(entry)
        hosts: dict[str, _Tier] = {}
        wildcards: dict[str, _Tier] = {}
        deep: dict[str, _Tier] = {}
        any_host: _Tier | None = None
        count = 0
        for host, entries in groups.items():
            tier = _tier(entries, memo)
            if not host:
                any_host = tier
            elif host.startswith(DEEP_WILDCARD):
                deep[host[len(DEEP_WILDCARD) :]] = tier
            elif host.startswith("*."):
                wildcards[host[2:]] = tier
            else:
                hosts[host] = tier
            count += len(entries)
        names: dict[bytes, tuple[set[str], set[str]]] = {}
        for claim in claims:
            if claim.hostname is None:
                continue  # any host: the any-host tier is the last one anyway
            exact, suffixes = names.setdefault(claim.scheme, (set(), set()))
            if claim.hostname.startswith("*."):
                suffixes.add(claim.hostname[2:])
            else:
                exact.add(claim.hostname)
        frozen = {s: (frozenset(e), frozenset(w)) for s, (e, w) in names.items()}
        return cls(hosts, wildcards, any_host, count, deep, frozen)

    def __len__(self) -> int:
        return self._count

    def lookup(
        self,
        host: str,
        path: str,
        method: str,
        scheme: bytes = b"http",
        facts: RequestFacts | None = None,
    ) -> Match | None:
        """
        Find the route for one request.

        :param host: the raw ``Host`` header value (any case, maybe with a
            port or a trailing dot).
        :param path: the raw request path, without the query string.
        :param method: the request method, upper case.
        :param scheme: ``b"http"`` or ``b"https"``: the listener's.
        :param facts: the request's headers and query parameters, asked
            only by entries with variants.
        :return: the match, or ``None`` when no route accepts the request.

        The answer for a Host, path and method is remembered (the table
        never changes, and most requests repeat a path): asked again, it
        costs one dict lookup instead of the host tiers and the trie walk
        (5% of the proxy path's instructions, bench/path_instructions.py).
        Bounded by :data:`_RECENT_SIZE` and :data:`_RECENT_KEY`. A table
        with Gateway API features remembers nothing: its answers may depend
        on headers and the query.
        """
        if path[:1] != "/":
            return None
        if self._general:
            # (An answer may depend on headers and the query: not remembered.)
            return self._lookup_general(
                _hostname(host), path, path.split("/"), method, scheme, facts
            )
        key = (host, path, method)
        recent = self._recent
        found = recent.get(key, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        found = self._lookup_plain(host, path, method)
        if len(host) + len(path) <= _RECENT_KEY:
            if len(recent) >= _RECENT_SIZE:
                recent.clear()
            recent[key] = found
        return found

    def _lookup_plain(self, host: str, path: str, method: str) -> Match | None:
        """:meth:`lookup` in a table with no Gateway API feature."""
        name = _hostname(host)
        segments = path.split("/")
        tier = self._hosts.get(name)
        if tier is not None:
            target = tier.find(path, segments)
            if target is not None:
                return target.match(path, method)
        dot = name.find(".")
        if dot > 0:
            tier = self._wildcards.get(name[dot + 1 :])
            if tier is not None:
                target = tier.find(path, segments)
                if target is not None:
                    return target.match(path, method)
        tier = self._any
        if tier is not None:
            target = tier.find(path, segments)
            if target is not None:
                return target.match(path, method)
        return None

    def _lookup_general(
        self,
        name: str,
        path: str,
        segments: list[str],
        method: str,
        scheme: bytes,
        facts: RequestFacts | None,
    ) -> Match | None:
        """
        :meth:`lookup` with the Gateway API rules: the host tiers in order
        (exact name; one-label wildcard; Gateway API wildcards, longest
        suffix first; any host), each served by :meth:`_Tier.serve`, and
        no fallthrough past the tier of the most specific hostname a
        listener claims for this scheme.
        """
        exact_claims, suffix_claims = self._claims.get(scheme, (_EMPTY, _EMPTY))
        tier = self._hosts.get(name)
        if tier is not None:
            found = tier.serve(path, segments, method, scheme, facts)
            if found is not False:
                return found
        if name in exact_claims:
            return None
        dot = name.find(".")
        if dot > 0:
            suffix = name[dot + 1 :]
            tier = self._wildcards.get(suffix)
            if tier is not None:
                found = tier.serve(path, segments, method, scheme, facts)
                if found is not False:
                    return found
            deep = self._deep
            if deep or suffix_claims:
                while True:
                    tier = deep.get(suffix)
                    if tier is not None:
                        found = tier.serve(path, segments, method, scheme, facts)
                        if found is not False:
                            return found
                    if suffix in suffix_claims:
                        return None
                    dot = suffix.find(".")
                    if dot < 0:
                        break
                    suffix = suffix[dot + 1 :]
        tier = self._any
        if tier is not None:
            found = tier.serve(path, segments, method, scheme, facts)
            if found is not False:
                return found
        return None
