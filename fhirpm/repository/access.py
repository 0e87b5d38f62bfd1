"""Access control on the FHIR API: the one gate every request passes, below HTTP.

`FhirRequest.principal` says who asks. `None` is a trusted internal caller (the CLI
loader, HL7 v2 inbound): nothing is checked. The HTTP edge never sends None while
authorization is on: it sends the verified token's Principal, or `Anonymous` carrying the
401 to answer with. `Interactions.dispatch` hands every other request to `guarded`, which
classifies it by path shape and method (`RULES`; anything unlisted is refused, so a new
route is closed until it is given a rule) and then:

    public     [base]/metadata: answered for anyone; so is GET [base]/$op of a system-level
               operation declaring `public = True` (SMART Scheduling Links' $bulk-publish)
    read       read, vread: 403 without `r` on the type; a resource outside the caller's
               reach answers 404 exactly like a missing one (its existence stays hidden)
    write      create, update, patch, delete (conditional too): 403 without the letter;
               the handler runs on a `GuardedUnit`, which refuses (403) to store a version
               outside the caller's reach or to replace or delete one outside it
    search     403 without `s` on the type; the search handler confines the query with
               `search_guard` (the reach ANDed in, chains and `_has` confined, includes
               filtered)
    history    403 without the letter; the history handler filters versions with
               `history_filter`; instance history of a resource outside reach is a 404
    operation  per operation (`OPERATIONS`); an operation without a rule needs unbounded
               access to its whole level (user/ or system/ scopes), so a new operation
               such as $everything stays closed to patient tokens until it is given one
    bundle     batch and transaction: every entry is dispatched with the same principal

What a caller reaches is `reach.Policy`'s business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError, Issue
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.repository.reach import Policy, holds
from fhirpm.repository.service import check_type
from fhirpm.search.query import (
    AllOf,
    AnyOf,
    Chain,
    Clause,
    Has,
    Not,
    SearchQuery,
    SearchResult,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fhirpm.auth.principal import Principal
    from fhirpm.repository.interactions import FhirRequest, FhirResponse, Handler, Interactions
    from fhirpm.search.values import IndexEntry
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

Keep = Callable[["ResourceVersion"], Awaitable[bool]]


@dataclass(frozen=True)
class Anonymous:
    """A caller without a usable token; `error` is the 401 its requests get."""

    error: FhirError


def authenticated(principal: Any) -> Principal:
    """The Principal of a request that needs one (raises the 401 of an Anonymous)."""
    if isinstance(principal, Anonymous):
        raise principal.error
    return principal


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str  # public | read | write | search | history | operation | bundle
    letter: str = ""  # the SMART permission the interaction needs (c r u d s)


RULES: dict[tuple[str, str], Rule] = {
    ("metadata", "GET"): Rule("public"),
    ("", "GET"): Rule("search", "s"),
    ("", "POST"): Rule("bundle"),
    ("_search", "POST"): Rule("search", "s"),
    ("_history", "GET"): Rule("history", "s"),
    ("$", "GET"): Rule("operation"),
    ("$", "POST"): Rule("operation"),
    ("T", "GET"): Rule("search", "s"),
    ("T", "POST"): Rule("write", "c"),
    ("T", "PUT"): Rule("write", "u"),
    ("T", "PATCH"): Rule("write", "u"),
    ("T", "DELETE"): Rule("write", "d"),
    ("T/_search", "POST"): Rule("search", "s"),
    ("T/_history", "GET"): Rule("history", "s"),
    ("T/$", "GET"): Rule("operation"),
    ("T/$", "POST"): Rule("operation"),
    ("T/I", "GET"): Rule("read", "r"),
    ("T/I", "PUT"): Rule("write", "u"),
    ("T/I", "PATCH"): Rule("write", "u"),
    ("T/I", "DELETE"): Rule("write", "d"),
    ("T/I/_history", "GET"): Rule("history", "r"),
    ("T/I/_history/V", "GET"): Rule("read", "r"),
    ("T/I/$", "GET"): Rule("operation"),
    ("T/I/$", "POST"): Rule("operation"),
    ("T/I/C", "GET"): Rule("search", "s"),
}

Gate = Callable[["Interactions", "FhirRequest", list[str], "Handler", Policy, Rule],
                Awaitable["FhirResponse"]]


async def guarded(ix: Interactions, req: FhirRequest, parts: list[str],
                  shape: str) -> FhirResponse:
    """Dispatch a request of a caller who is not trusted (module doc)."""
    rule = RULES.get((shape, req.method))
    if (rule is not None and rule.kind == "public") or _published(ix, req, parts, shape):
        return await ix._route(req.method, parts, shape)(ix, req, parts)
    principal = authenticated(req.principal)
    handler = ix._route(req.method, parts, shape)  # 404 / 405: what no handler serves
    policy = Policy(ix, principal, req.base)
    if rule is None:
        raise policy.refusal(None, "", f"{req.method} /{'/'.join(parts)} is not open to "
                             "tokens: no access rule covers it")
    return await _GATES[rule.kind](ix, req, parts, handler, policy, rule)


def _published(ix: Interactions, req: FhirRequest, parts: list[str], shape: str) -> bool:
    """A GET of a system-level operation that publishes non-confidential data to anyone
    (it declares `public = True`; nothing else under the base is open without a token)."""
    return (shape == "$" and req.method == "GET"
            and getattr(ix.operations.get(parts[0][1:]), "public", False) is True)


# -- the gates ----------------------------------------------------------------------------


async def _read(ix: Interactions, req: FhirRequest, parts: list[str], handler: Handler,
                policy: Policy, rule: Rule) -> FhirResponse:
    type_ = parts[0]
    check_type(type_)
    clause = policy.reach(type_, rule.letter)
    if clause is None:
        return await handler(ix, req, parts)
    try:
        response = await handler(ix, req, parts)
    except FhirError as err:
        if err.category is Category.DELETED and not await _deleted_within(ix, policy, clause,
                                                                          parts):
            raise unknown(type_, parts[1]) from None
        raise
    if response.version is not None and not policy.permits(clause, response.version):
        raise unknown(type_, parts[1])
    return response


async def _deleted_within(ix: Interactions, policy: Policy, clause: Clause,
                          parts: list[str]) -> bool:
    """Whether a deleted resource (or deletion version) was within reach before."""
    type_, id_ = parts[0], parts[1]
    store = ix.repo.store
    tomb = await store.vread(type_, id_, int(parts[3])) if len(parts) == 4 else \
        await store.read(type_, id_)
    return tomb is not None and await visible(ix, policy, clause, tomb)


async def visible(ix: Interactions, policy: Policy, clause: Clause | None,
                  version: ResourceVersion) -> bool:
    """A version within `clause`; a deletion counts as what it deleted."""
    if version.deleted:
        if version.version < 2:
            return False
        version = await ix.repo.store.vread(version.type, version.id, version.version - 1)
        if version is None:
            return False
    return policy.permits(clause, version)


def unknown(type: str, id: str) -> FhirError:
    """What a resource outside reach answers: the same 404 as a resource never stored."""
    return FhirError(Category.NOT_FOUND, f"{type}/{id} is not known")


async def _write(ix: Interactions, req: FhirRequest, parts: list[str], handler: Handler,
                 policy: Policy, rule: Rule) -> FhirResponse:
    check_type(parts[0])
    clause = policy.reach(parts[0], rule.letter)  # 403 before anything is read
    if clause is not None and len(parts) == 2:
        # refused before If-Match is looked at: a 412 would tell another patient's version
        unit = req.uow
        current = await (unit.current(*parts) if unit is not None else
                         ix.repo.store.read(*parts))
        if current is not None and not await visible(ix, policy, clause, current):
            raise policy.refusal(parts[0], rule.letter, f"{parts[0]}/{parts[1]} is outside "
                                 "what this token may change")
    if isinstance(req.uow, GuardedUnit):  # a conditional write re-dispatching itself
        return _found_within(policy, rule, await handler(ix, req, parts))
    async with ix.repo.unit(req.uow) as unit:
        response = await handler(ix, replace(req, uow=GuardedUnit(unit, policy)), parts)
        return _found_within(policy, rule, response)


def _found_within(policy: Policy, rule: Rule, response: FhirResponse) -> FhirResponse:
    """A conditional create that matched answers 200 with the match: only if the caller
    may search it (the match is searched within reach, but a create racing for the same
    criteria can hand over the holder of the unique key, whoever's it is)."""
    found = response.version
    if (rule.letter == "c" and response.status == 200 and found is not None
            and not policy.readable(found, "s")):
        raise policy.refusal(found.type, "c", "A resource matching these criteria exists "
                             "outside what this token may see")
    return response


async def _search(ix: Interactions, req: FhirRequest, parts: list[str], handler: Handler,
                  policy: Policy, rule: Rule) -> FhirResponse:
    searched = parts[2] if len(parts) == 3 else parts[0] if parts else "_search"
    if searched not in ("_search", "*"):
        check_type(searched)
        policy.reach(searched, rule.letter)
    return await handler(ix, req, parts)


async def _history(ix: Interactions, req: FhirRequest, parts: list[str], handler: Handler,
                   policy: Policy, rule: Rule) -> FhirResponse:
    if parts[0] != "_history":
        check_type(parts[0])
        policy.reach(parts[0], rule.letter)
    return await handler(ix, req, parts)


async def _bundle(ix: Interactions, req: FhirRequest, parts: list[str], handler: Handler,
                  policy: Policy, rule: Rule) -> FhirResponse:
    return await handler(ix, req, parts)  # entries carry req.principal (bundle_entries)


async def _operation(ix: Interactions, req: FhirRequest, parts: list[str], handler: Handler,
                     policy: Policy, rule: Rule) -> FhirResponse:
    name = next(p for p in parts if p.startswith("$"))[1:]
    type_ = parts[0] if len(parts) > 1 else None
    id_ = parts[1] if len(parts) > 2 else None
    if type_ is not None:
        check_type(type_)
    spec = ix.operations.get(name)
    if spec is not None and _offered(spec, type_, id_):  # else the handler says "no"
        check = OPERATIONS.get(name, _unbounded_operation)
        await check(ix, policy, spec, type_, id_)
    return await handler(ix, req, parts)


def _offered(spec: Any, type: str | None, id: str | None) -> bool:
    """Whether the operation runs at this level (an OperationSpec knows; others: yes)."""
    level = getattr(spec, "level", None)
    return level is None or bool(getattr(spec, level(type, id), False))


_GATES: dict[str, Gate] = {"read": _read, "write": _write, "search": _search,
                           "history": _history, "bundle": _bundle, "operation": _operation}


# -- operations ------------------------------------------------------------------------------

OperationCheck = Callable[["Interactions", Policy, Any, "str | None", "str | None"],
                          Awaitable[None]]


async def _unbounded_operation(ix: Interactions, policy: Policy, spec: Any,
                               type: str | None, id: str | None) -> None:
    """Operations without their own rule: all of their level, unbounded, or nothing."""
    letter = "u" if getattr(spec, "affects_state", True) else "r"
    if not policy.everything(type, letter):
        raise policy.refusal(type, letter, f"${spec.name} needs unbounded access to "
                             f"{type or 'every type'} (a user/ or system/ scope)")


async def _validate(ix: Interactions, policy: Policy, spec: Any, type: str | None,
                    id: str | None) -> None:
    """$validate checks what it is given; at instance level it reads the stored one."""
    assert type is not None  # a type and instance level operation
    if id is None:
        if not any(policy.may(type, letter) for letter in "cru"):
            raise policy.refusal(type, "r")
        return
    clause = policy.reach(type, "r")
    current = await ix.repo.store.read(type, id)
    if current is not None and not await visible(ix, policy, clause, current):
        raise unknown(type, id)


OPERATIONS: dict[str, OperationCheck] = {"validate": _validate}


# -- writes --------------------------------------------------------------------------------

_WRITE_LETTER = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


class GuardedUnit:
    """A unit of work that stores only versions within the caller's reach.

    Every write path (create, update, patch, delete, conditional, bundle entries) ends in
    `UnitOfWork.put`, inside the unit, so the check sees exactly what is replaced and what
    replaces it: the current version must be within reach (no writing over another
    patient's resource) and so must the new one (no creating outside the compartment, no
    update moving a resource out of it)."""

    def __init__(self, unit: UnitOfWork, policy: Policy) -> None:
        self._unit = unit
        self.policy = policy

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry], *,
                  expected_version: int, unique_keys: Sequence[str] = ()) -> None:
        type_, id_ = version.type, version.id
        letter = _WRITE_LETTER.get(version.method, "u")
        clause = self.policy.reach(type_, letter)
        if clause is not None:
            current = await self._unit.current(type_, id_) if expected_version else None
            if current is not None and not current.deleted and not self.policy.permits(
                    clause, current):
                raise self.policy.refusal(type_, letter, f"{type_}/{id_} is outside what "
                                          "this token may change")
            if not version.deleted and not holds(clause, type_, id_, index):
                raise self.policy.refusal(type_, letter, f"This {type_} would be outside "
                                          "what this token may write (patient/ scopes "
                                          "write only inside their patient's compartment)")
        await self._unit.put(version, index, expected_version=expected_version,
                             unique_keys=unique_keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unit, name)


# -- searches -------------------------------------------------------------------------------


@dataclass
class SearchGuard:
    """A search confined to the caller's reach, and the filter for what it returns."""

    query: SearchQuery
    policy: Policy
    per_type: dict[str, Clause | None] | None = None  # set: matches are checked one by one
    issues: list[Issue] = field(default_factory=list)  # warnings for the searchset

    def filter(self, result: SearchResult) -> None:
        """Drop what the store returned beyond reach: matches of a multi-type search whose
        types are confined differently, and included resources the caller may not read."""
        if self.per_type is not None:
            types = self.per_type
            result.matches = [v for v in result.matches
                              if v.type in types and self.policy.permits(types[v.type], v)]
            result.total = None  # the store counted with the looser union
        if result.included:
            result.included = [v for v in result.included if self.policy.readable(v)]


def search_guard(ix: Interactions, principal: Any, query: SearchQuery, *, base: str = "",
                 letter: str = "s") -> SearchGuard | None:
    """`query` confined to what `principal` reaches with `letter`; None for trusted callers.

    One type: its reach is ANDed into `where` (the store filters with its indexes, and
    paging and `_total` stay exact). Several types (system search, `Patient/x/*`): the
    types the caller cannot search are left out (403 if none is left); when the remaining
    types are confined alike that clause is ANDed in, otherwise the OR of their clauses is
    (a superset), each match is then checked against its own type's clause and no total
    is given. Chains and `_has` only follow resources the caller may search."""
    if principal is None:
        return None
    policy = Policy(ix, authenticated(principal), base)
    types = query.types or tuple(sorted(RESOURCE_TYPES))
    reaches: dict[str, Clause | None] = {}
    for type_ in types:
        if len(types) == 1 or policy.may(type_, letter):
            reaches[type_] = policy.reach(type_, letter)
    if not reaches:
        raise policy.refusal(None, letter, "This token may search none of these types")
    where = [confine(c, policy, letter) for c in query.where]
    clauses = set(reaches.values())
    per_type = None
    if clauses != {None}:
        if len(clauses) == 1:
            where.append(next(iter(clauses)))  # type: ignore[arg-type]
        else:
            union = tuple(c for c in dict.fromkeys(reaches.values()) if c is not None)
            where.append(union[0] if len(union) == 1 else AnyOf(union))
            per_type = reaches
    narrowed = tuple(reaches) if len(reaches) < len(types) else query.types
    guard = SearchGuard(replace(query, types=narrowed, where=tuple(where)), policy, per_type)
    open_types = sorted(t for t, c in reaches.items() if c is None)
    if per_type is not None and open_types:
        guard.issues.append(Issue("informational", "Searched together with types this token "
                                  "reaches only in part, these types return only what "
                                  f"matches those limits; search them on their own: "
                                  f"{', '.join(open_types[:10])}"
                                  f"{', ...' if len(open_types) > 10 else ''}",
                                  severity="warning"))
    return guard


def confine(clause: Clause, policy: Policy, letter: str) -> Clause:
    """`clause` with every chain target and `_has` source limited to what the caller may
    search (a chain through a type the caller cannot search loses that target)."""
    match clause:
        case Chain(code=code, targets=targets):
            kept: list[tuple[str, Clause]] = []
            for target, inner in targets:
                if policy.may(target, letter):
                    kept.append((target, _and(confine(inner, policy, letter),
                                              policy.reach(target, letter))))
            if not kept:
                raise policy.refusal(None, letter, f"The chain through {code!r} reaches no "
                                     "type this token may search")
            return Chain(code, tuple(kept))
        case Has(type=type_, code=code, clause=inner):
            return Has(type_, code, _and(confine(inner, policy, letter),
                                         policy.reach(type_, letter)))
        case Not(clause=inner):
            return Not(confine(inner, policy, letter))
        case AnyOf(clauses=clauses):
            return AnyOf(tuple(confine(c, policy, letter) for c in clauses))
        case AllOf(clauses=clauses):
            return AllOf(tuple(confine(c, policy, letter) for c in clauses))
    return clause


def _and(clause: Clause, reach: Clause | None) -> Clause:
    return clause if reach is None else AllOf((clause, reach))


# -- history --------------------------------------------------------------------------------


async def history_filter(ix: Interactions, req: FhirRequest, parts: list[str]) -> Keep | None:
    """Which versions the caller may see in a history bundle (None: all of them).

    Instance history of a resource outside reach is a 404, like its read; type and system
    history show only the versions within reach (a deletion counts as what it deleted)."""
    if req.principal is None:
        return None
    policy = Policy(ix, authenticated(req.principal), req.base)
    letter = "r" if len(parts) == 3 else "s"
    if parts[0] == "_history":
        if policy.everything(None, letter):
            return None
    else:
        clause = policy.reach(parts[0], letter)
        if clause is None:
            return None
        if len(parts) == 3:
            head = await ix.repo.store.read(parts[0], parts[1])
            if head is not None and not await visible(ix, policy, clause, head):
                raise unknown(parts[0], parts[1])

    async def keep(version: ResourceVersion) -> bool:
        if not policy.may(version.type, letter):
            return False
        return await visible(ix, policy, policy.reach(version.type, letter), version)

    return keep
