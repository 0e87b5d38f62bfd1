"""SMART scopes as data: parse v1 and v2 scope strings and decide what they permit.

Pure (no I/O, no FHIR store, no HTTP): the authorization server uses it to filter and narrow
requested scopes, and the resource server asks it whether a token may perform an
interaction on a type and under which query constraints.

Grammar (SMART App Launch 2.x, "Scopes and Launch Context"):

    (patient|user|system) "/" (ResourceType|"*") "." permissions ["?" query]
    permissions v1: read | write | *          (read = rs, write = cud, * = cruds)
    permissions v2: one or more of c r u d s, in that order

A v2 scope may carry a query (`patient/Observation.rs?category=laboratory`): it permits
only resources that the query would match, as if ANDed into every search. Several scopes
for the same type are alternatives (OR). Strings that are not resource scopes are kept as
"other" scopes (`openid`, `launch/patient`, `offline_access`, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"

# Non-resource scopes this server understands (SMART 2.x, OIDC).
LAUNCH_SCOPES = frozenset({"launch", "launch/patient", "launch/encounter"})
IDENTITY_SCOPES = frozenset({"openid", "fhirUser", "profile"})
ACCESS_SCOPES = frozenset({"offline_access", "online_access"})
# fhirpm's own: the admin API (clients and users). Only admin clients register it, and only
# admin users (never with a patient context) or admin backend clients are granted it.
ADMIN_SCOPE = "fhirpm/admin"
KNOWN_OTHER = LAUNCH_SCOPES | IDENTITY_SCOPES | ACCESS_SCOPES | {ADMIN_SCOPE}

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<ctx>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})"
    r"\.(?P<perm>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>.+))?$")

# Which permission letter an interaction needs (FHIR REST interaction names).
INTERACTION_PERMISSION = {
    "read": "r", "vread": "r", "history-instance": "r",
    "search": "s", "search-type": "s", "search-system": "s", "search-compartment": "s",
    "history-type": "s", "history-system": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}

Query = tuple[tuple[str, str], ...]  # one AND-ed set of search parameters


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One parsed resource scope."""

    context: str  # patient | user | system
    type: str  # a resource type or "*"
    permissions: frozenset[str]  # subset of "cruds"
    query: Query = ()  # v2 constraint; () for none
    text: str = ""  # the scope as written

    def covers_type(self, type: str) -> bool:
        return self.type in ("*", type)


@dataclass(frozen=True, slots=True)
class Reach:
    """The part of a type one context may see: any of `queries` (OR); an empty query
    among them means everything."""

    queries: tuple[Query, ...]

    @property
    def everything(self) -> bool:
        return () in self.queries


@dataclass(frozen=True, slots=True)
class Access:
    """What a scope set permits for one (type, permission).

    `unbounded`: granted by user/ or system/ scopes (limited only by what the user may see).
    `patient`: granted by patient/ scopes, so only inside the launch patient's compartment.
    Both None: not permitted at all.
    """

    unbounded: Reach | None = None
    patient: Reach | None = None

    @property
    def allowed(self) -> bool:
        return self.unbounded is not None or self.patient is not None


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """A parsed `scope` string: resource scopes plus the other (non-resource) scopes."""

    resource: tuple[ResourceScope, ...] = ()
    other: frozenset[str] = field(default_factory=frozenset)
    order: tuple[str, ...] = ()  # every scope as written, for a stable `scope` string

    @classmethod
    def parse(cls, text: str | None) -> ScopeSet:
        seen: dict[str, None] = {}
        for word in (text or "").split():
            seen.setdefault(word, None)
        resource: list[ResourceScope] = []
        other: set[str] = set()
        for word in seen:
            parsed = parse_scope(word)
            if parsed is None:
                other.add(word)
            else:
                resource.append(parsed)
        return cls(tuple(resource), frozenset(other), tuple(seen))

    def __str__(self) -> str:
        return " ".join(self.order)

    def __contains__(self, scope: str) -> bool:
        return scope in self.order

    def __bool__(self) -> bool:
        return bool(self.order)

    @property
    def contexts(self) -> frozenset[str]:
        return frozenset(s.context for s in self.resource)

    def only(self, keep: set[str] | frozenset[str]) -> ScopeSet:
        """The scopes among `keep`, in this set's order."""
        return ScopeSet.parse(" ".join(s for s in self.order if s in keep))

    def access(self, type: str | None, interaction: str) -> Access:
        return access(self, type, interaction)

    def allows(self, type: str | None, interaction: str) -> bool:
        return access(self, type, interaction).allowed

    def covers(self, requested: ScopeSet) -> bool:
        return covers(self, requested)


def parse_scope(text: str) -> ResourceScope | None:
    """A resource scope, or None if `text` is not one (an `openid`, a typo, ...)."""
    m = _SCOPE.match(text)
    if m is None:
        return None
    perm, query_text = m["perm"], m["query"]
    if perm in _V1:
        if query_text is not None:
            return None  # queries exist only in v2 syntax
        letters = _V1[perm]
    else:
        letters = perm
    if not letters:
        return None
    query: Query = ()
    if query_text is not None:
        query = tuple(sorted(parse_qsl(query_text, keep_blank_values=True)))
        if not query:
            return None
    return ResourceScope(m["ctx"], m["type"], frozenset(letters), query, text)


def permission_of(interaction: str) -> str:
    """The permission letter for an interaction name (or the letter itself)."""
    if len(interaction) == 1 and interaction in PERMISSIONS:
        return interaction
    try:
        return INTERACTION_PERMISSION[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction {interaction!r}") from None


def access(scopes: ScopeSet | str, type: str | None, interaction: str) -> Access:
    """What `scopes` permit for `interaction` on `type` (None: a system-level interaction,
    which only wildcard scopes reach)."""
    if isinstance(scopes, str):
        scopes = ScopeSet.parse(scopes)
    letter = permission_of(interaction)
    unbounded: list[Query] = []
    patient: list[Query] = []
    for scope in scopes.resource:
        if letter not in scope.permissions:
            continue
        if not (scope.type == "*" or scope.type == type):
            continue
        (patient if scope.context == "patient" else unbounded).append(scope.query)
    return Access(_reach(unbounded), _reach(patient))


def _reach(queries: list[Query]) -> Reach | None:
    if not queries:
        return None
    if () in queries:
        return Reach(((),))
    return Reach(tuple(dict.fromkeys(queries)))


def allows(scopes: ScopeSet | str, type: str | None, interaction: str) -> bool:
    """True when some scope permits `interaction` on `type` (perhaps under constraints)."""
    return access(scopes, type, interaction).allowed


def _scope_covers(granted: ResourceScope, wanted: ResourceScope, letter: str) -> bool:
    return (granted.context == wanted.context
            and (granted.type == "*" or granted.type == wanted.type)
            and letter in granted.permissions
            # a granted constraint must also be in the request (more constraints = narrower)
            and set(granted.query) <= set(wanted.query))


def covers(granted: ScopeSet, requested: ScopeSet) -> bool:
    """True when every scope in `requested` is within `granted` (refresh narrowing)."""
    if not requested.other <= granted.other:
        return False
    for wanted in requested.resource:
        for letter in wanted.permissions:
            if not any(_scope_covers(g, wanted, letter) for g in granted.resource):
                return False
    return True


def within(requested: ScopeSet, allowed: ScopeSet) -> ScopeSet:
    """The scopes of `requested` that `allowed` covers, in the requested order: what a
    server may grant when it grants less than was asked (unknown scopes are dropped)."""
    keep: list[str] = []
    for word in requested.order:
        one = ScopeSet.parse(word)
        if (one.resource or word in KNOWN_OTHER) and covers(allowed, one):
            keep.append(word)
    return ScopeSet.parse(" ".join(keep))


def supported_scopes() -> list[str]:
    """Examples published in `scopes_supported` (wildcards stand for every type)."""
    return ["openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
            "offline_access", "online_access",
            "patient/*.read", "patient/*.rs", "patient/*.cruds", "patient/*.*",
            "user/*.read", "user/*.rs", "user/*.cruds", "user/*.*",
            "system/*.read", "system/*.rs", "system/*.cruds", "system/*.*"]
