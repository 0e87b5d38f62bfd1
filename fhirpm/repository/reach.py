"""What one caller may reach: a token's scopes and launch context as search clauses.

For a (resource type, permission letter) a `Policy` answers with the part of that type
the caller may see or touch, as a clause of the search AST (`fhirpm.search.query`):

    None                 everything of the type
    a clause             only resources matching it (the store filters with its indexes;
                         `permits` checks one version in memory with `search.match`)
    FhirError 403        nothing at all (`insufficient_scope`)

The clause is an OR of the caller's alternatives; each alternative is a scope's query
(`patient/Observation.rs?category=laboratory`, parsed by `search.parse`) ANDed with the
Patient compartment of the launch patient when the scope is bound to a patient:

- `patient/` scopes are bound to the token's `patient` on types in the Patient compartment
  (`fhir/tables/compartments.json`, the types that list parameters); on other types
  (Practitioner, Organization, Location, Medication, ...: the directory) they reach as far
  as their queries allow. Schedule is treated as a directory type although the compartment
  lists it (`actor`): schedules publish a practice's availability.
- `user/` scopes reach the whole type, unless the user's `fhirUser` is a Patient (bound to
  their own compartment) or a RelatedPerson (bound to the token's `patient`): a user scope
  never lets a patient see what their own record would not show them.
- `system/` scopes reach the whole type.

A scope query that does not parse for a type (a parameter the type lacks) reaches nothing
of it, and single-resource checks cannot follow chains or `_has` (no other resource is at
hand), so such alternatives deny: every doubt falls on the refusing side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhirpm.auth.errors import insufficient_scope
from fhirpm.errors import FhirError
from fhirpm.fhir import jsonio
from fhirpm.repository.search import compartments
from fhirpm.search.extract import OF_TYPE_SUFFIX
from fhirpm.search.match import MemoryIndex
from fhirpm.search.parse import BadParam, SearchParser
from fhirpm.search.query import (
    AllOf,
    AnyOf,
    Chain,
    Clause,
    Missing,
    Not,
    Param,
    RefPred,
    TokenPred,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fhirpm.auth.principal import Principal
    from fhirpm.auth.scopes import Query
    from fhirpm.repository.interactions import Interactions
    from fhirpm.search.values import IndexEntry
    from fhirpm.storage.port import ResourceVersion

# In the Patient compartment definition, but published like the directory (module doc).
DIRECTORY = frozenset({"Schedule"})
_DENIED = object()  # a cached "nothing"
_CACHE_LIMIT = 20_000
_cache: dict[tuple[str, str | None, str | None, str, str], Any] = {}


def compartment_members() -> dict[str, list[str]]:
    """Patient compartment: type -> the parameter codes that put a resource in it."""
    return compartments()["Patient"]


def in_compartment(type: str) -> bool:
    return type not in DIRECTORY and bool(compartment_members().get(type))


class Policy:
    """One caller's reach over the types (cached per token: tokens are immutable)."""

    def __init__(self, ix: Interactions, principal: Principal, base: str = "") -> None:
        self.ix = ix
        self.principal = principal
        self.base = base

    # -- reach ------------------------------------------------------------------------

    def reach(self, type: str, letter: str) -> Clause | None:
        """The part of `type` the caller reaches with `letter` (module doc); 403 if none."""
        p = self.principal
        key = (p.token_id, p.patient, p.fhir_user, type, letter)
        found = _cache.get(key)
        if found is None and key not in _cache:
            try:
                found = self._compute(type, letter)
            except FhirError:
                found = _DENIED
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            _cache[key] = found
        if found is _DENIED:
            raise self.refusal(type, letter)
        return found

    def may(self, type: str, letter: str) -> bool:
        try:
            self.reach(type, letter)
        except FhirError:
            return False
        return True

    def everything(self, type: str | None, letter: str) -> bool:
        """True when the caller reaches all of `type` (None: every type) unbounded."""
        if type is not None:
            try:
                return self.reach(type, letter) is None
            except FhirError:
                return False
        granted = self.principal.access(None, letter).unbounded
        return granted is not None and granted.everything and self._user_bound() == ""

    def refusal(self, type: str | None, letter: str, why: str = "") -> FhirError:
        p = self.principal
        context = "patient" if p.patient else ("system" if p.is_backend else "user")
        what = type or "*"
        return insufficient_scope(
            why or f"This token does not grant '{letter}' on {what} (scope: {p.scopes})",
            f"{context}/{what}.{letter}")

    def _compute(self, type: str, letter: str) -> Clause | None:
        access = self.principal.access(type, letter)
        bounded = in_compartment(type)
        alternatives: list[Clause] = []
        for granted, patient in ((access.unbounded, self._user_bound()),
                                 (access.patient, self.principal.patient or None)):
            if granted is None:
                continue
            compartment = None
            if bounded and patient != "":
                if patient is None:
                    continue  # bound to a patient, but the token names none
                compartment = self.compartment(type, patient)
            for query in granted.queries:
                try:
                    constraint = self._query(type, query)
                except BadParam:
                    continue  # the query cannot apply to this type: it reaches nothing
                parts = [c for c in (compartment, constraint) if c is not None]
                if not parts:
                    return None
                alternatives.append(parts[0] if len(parts) == 1 else AllOf(tuple(parts)))
        if not alternatives:
            raise self.refusal(type, letter)
        unique = tuple(dict.fromkeys(alternatives))
        return unique[0] if len(unique) == 1 else AnyOf(unique)

    def _user_bound(self) -> str | None:
        """Whose compartment bounds user/ scopes: "" nobody (unbounded), an id, or None
        (bound, but to no known patient)."""
        fhir_user = self.principal.fhir_user or ""
        kind, _, id_ = fhir_user.partition("/")
        if kind == "Patient":
            return id_ or None
        if kind == "RelatedPerson":
            return self.principal.patient or None
        return ""

    def compartment(self, type: str, patient: str) -> Clause:
        """Resources of `type` in Patient/`patient`'s compartment."""
        registry = self.ix.repo.registry
        ref = RefPred("Patient", patient)
        clauses: list[Clause] = []
        for code in compartment_members().get(type, ()):
            found = registry.get(type, code)
            if found is not None and found.type == "reference":
                clauses.append(Param(code, "reference", (ref,)))
        if type == "Patient":  # a patient is in its own compartment
            clauses.append(Param("_id", "token", (TokenPred(patient),)))
        return clauses[0] if len(clauses) == 1 else AnyOf(tuple(clauses))

    def _query(self, type: str, query: Query) -> Clause | None:
        if not query:
            return None
        parser = SearchParser(self.ix.repo.registry, base=self.base)
        clauses = tuple(parser.clause([type], key, value) for key, value in query)
        return clauses[0] if len(clauses) == 1 else AllOf(clauses)

    # -- membership of one resource ---------------------------------------------------

    def permits(self, clause: Clause | None, version: ResourceVersion) -> bool:
        """Whether a stored (live) version lies within `clause`."""
        if clause is None:
            return True
        if version.deleted:
            return False
        resource = jsonio.loads(version.body)
        entries = self.ix.repo.indexer.extract(version.type, resource, only=codes(clause))
        return holds(clause, version.type, version.id, entries)

    def readable(self, version: ResourceVersion, letter: str = "r") -> bool:
        """Whether the caller may see this version (a resource met along the way)."""
        try:
            clause = self.reach(version.type, letter)
        except FhirError:
            return False
        return self.permits(clause, version)


_codes: dict[Clause, frozenset[str]] = {}


def codes(clause: Clause) -> frozenset[str]:
    """The parameter codes `clause` reads on its own resource (what to extract)."""
    found = _codes.get(clause)
    if found is None:
        if len(_codes) >= _CACHE_LIMIT:
            _codes.clear()
        found = _codes[clause] = frozenset(_walk(clause))
    return found


def _walk(clause: Clause) -> list[str]:
    match clause:
        case Param(code=code) | Missing(code=code) | Chain(code=code):
            return [code.removesuffix(OF_TYPE_SUFFIX)]
        case Not(clause=inner):
            return _walk(inner)
        case AnyOf(clauses=clauses) | AllOf(clauses=clauses):
            return [code for c in clauses for code in _walk(c)]
    return []  # Has: other resources' values, never this one's


def holds(clause: Clause, type: str, id: str, entries: Sequence[IndexEntry]) -> bool:
    """`clause` on one resource given its index entries (search.match semantics)."""
    index = MemoryIndex()
    index.put(type, id, entries)
    return index.holds(clause, index.docs[(type, id)])
