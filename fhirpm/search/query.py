"""The parsed, storage-neutral search: what `search.parse` produces, what `search.match`
evaluates in memory (the oracle) and what every store adapter compiles (SQL, MongoDB).

Nothing here knows a store, HTTP or the registry: a `SearchQuery` is complete in itself
(value sets for `:in` are already expanded, `ap` ranges already widened, `*` includes
already listed), so two adapters given the same query must return the same resources.

## The tree

`SearchQuery.where` is an AND of clauses. Each clause is evaluated against one resource
of a *context type*: the query's types at the top level, a chain's target type inside a
`Chain`, the source type inside a `Has`. Index values are those of `search.values`,
written at write time per parameter code; the adapter looks them up by (context type,
code), the code alone being ambiguous across types (`date` on Appointment and Observation).

    Param(code, type, preds)   any value of parameter `code` satisfies any predicate (OR)
    Missing(code, type, missing)  the resource has no value for `code` (missing=True) / some
    Not(clause)                the clause does not hold (token `:not`, `:not-in`)
    AnyOf(clauses)             OR of clauses (compartments, composite values)
    AllOf(clauses)             AND of clauses (composite components)
    Chain(code, targets)       a local reference of `code` points at a live resource of one
                               of the target types that satisfies that type's clause
    Has(type, code, clause)    some live resource of `type` whose reference parameter `code`
                               points at this resource satisfies `clause` (`_has`)

`_id` is a `Param("_id", "token", (TokenPred(code=id),))`: evaluators compare the
resource id itself (no index value needed). Token `:of-type` is a plain `Param` on the code
`<param>:of-type`, under which extraction indexes identifiers as system "<type system>|<type
code>", code = the identifier value.

## Predicates (each tests one index value of its own kind; other kinds never match)

    StringPred(value, mode)    StringValue: "start" norm.startswith(value); "exact"
                               raw == value; "contains" value in norm (value folded
                               by `normalize.fold` except for "exact")
    TokenPred(code, system, no_system)
                               TokenValue: code equal unless None (any), system equal
                               unless None (any); no_system: the value has no system (`|c`)
    TokenTextPred(text)        TokenValue.text starts with `text` at a word start
    TokenInPred(codes, systems)  (system, code) in codes, or system in systems
    RefPred(type, id, url, version)
                               ReferenceValue: local form (id given): a relative reference
                               (url None) with that id, type unless None, version unless None;
                               absolute form (id None): url equal, version unless None
    IdentifierPred(token)      ReferenceValue.identifier matches `token` (a TokenPred)
    DatePred(prefix, lo, hi)   DateValue [vlo, vhi] against the query range [lo, hi]
                               (inclusive epoch microseconds):
                               eq: lo <= vlo and vhi <= hi       ne: not eq
                               gt: vhi > hi        lt: vlo < lo  ge: gt or eq   le: lt or eq
                               sa: vlo > hi        eb: vhi < lo  ap: vlo <= hi and vhi >= lo
                               (for ap the parser already widened [lo, hi])
    NumberPred(prefix, value, lo, hi)
                               NumberValue.value v: eq: lo <= v < hi   ne: not eq
                               gt/sa: v > value  lt/eb: v < value  ge: v >= value
                               le: v <= value    ap: lo <= v <= hi (widened by the parser)
    QuantityPred(prefix, value, lo, hi, system, code)
                               QuantityValue: number rules on its value, and units: system
                               and code given -> both equal; code only -> code or unit equal
    UriPred(uri, mode, ancestors)
                               UriValue: "eq" equal; "below" starts with uri; "above" equal
                               to one of `ancestors` (uri and its path prefixes)

## Sorting, paging, totals, includes

`sort` keys: the sort value of a resource for a key is, over its values of that code:
string min/max of norm, token min/max of code, reference min/max of url or "Type/id",
date min of lo (ascending) / max of hi (descending), number and quantity min/max of value,
uri min/max; `_id` the id. Resources without a value sort last in either direction; ties
(and queries without `sort`) are ordered by creation order, ascending.

`count` is the page size (0: no matches, only the total: `_summary=count`). `cursor` is
an opaque token the same adapter returned in a previous `SearchResult` (None: first page);
adapters promise stable pages (see the adapter's module for how). `total`: "none",
"estimate" (the adapter may return None when counting would be costly) or "accurate".

`include` (`_include`) adds resources referenced by the page's matches through the listed
reference codes of `source`; `revinclude` (`_revinclude`) adds live resources of `source`
whose listed codes reference a match. `iterate` entries are applied again to what was
added, until nothing new appears or `max_include` resources were added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fhirpm.storage.port import ResourceVersion

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
NO_ALIASES: Mapping[str, Mapping[str, str]] = {}  # `SearchQuery.aliases` naming none
PREFIXES: tuple[str, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


# -- predicates: one index value each ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringPred:
    value: str
    mode: Literal["start", "exact", "contains"] = "start"


@dataclass(frozen=True, slots=True)
class TokenPred:
    code: str | None = None
    system: str | None = None
    no_system: bool = False


@dataclass(frozen=True, slots=True)
class TokenTextPred:
    text: str


@dataclass(frozen=True, slots=True)
class TokenInPred:
    codes: tuple[tuple[str | None, str], ...] = ()
    systems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RefPred:
    type: str | None = None
    id: str | None = None
    url: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class IdentifierPred:
    token: TokenPred


@dataclass(frozen=True, slots=True)
class DatePred:
    prefix: Prefix
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class NumberPred:
    prefix: Prefix
    value: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityPred:
    prefix: Prefix
    value: float
    lo: float
    hi: float
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class UriPred:
    uri: str
    mode: Literal["eq", "below", "above"] = "eq"
    ancestors: tuple[str, ...] = ()


Pred = (StringPred | TokenPred | TokenTextPred | TokenInPred | RefPred | IdentifierPred
        | DatePred | NumberPred | QuantityPred | UriPred)


# -- clauses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    code: str
    type: str  # the parameter type: string | token | reference | date | number | ...
    preds: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class Missing:
    code: str
    type: str
    missing: bool


@dataclass(frozen=True, slots=True)
class Not:
    clause: Clause


@dataclass(frozen=True, slots=True)
class AnyOf:
    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    code: str  # a reference parameter of the context type
    targets: tuple[tuple[str, Clause], ...]  # (target type, clause on that type)


@dataclass(frozen=True, slots=True)
class Has:
    type: str  # the referring resource type
    code: str  # its reference parameter pointing at the context resource
    clause: Clause


Clause = Param | Missing | Not | AnyOf | AllOf | Chain | Has


# -- results shaping ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str
    type: str = "token"  # the parameter type, so adapters know which values to read
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    source: str  # the resource type whose reference parameters are followed
    codes: tuple[str, ...]  # reference parameter codes of `source` (`*` already expanded)
    target: str | None = None  # only references to this type
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    types: tuple[str, ...]  # one type for type-level search; several (or none: all) for system
    where: tuple[Clause, ...] = ()  # AND of clauses
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    total: Literal["none", "estimate", "accurate"] = "none"
    include: tuple[Include, ...] = ()
    revinclude: tuple[Include, ...] = ()
    cursor: str | None = None  # opaque, from a previous SearchResult of the same adapter
    max_include: int = 1000
    offset: int = 0  # transitional, for adapters not paging by cursor yet; SQLite ignores it
    # `Registry.aliases()`: type -> code -> the code whose index entries it reads (set by
    # the parser; a query built by hand names no alias); not part of the query's identity
    aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict, compare=False)


def indexed_as(aliases: Mapping[str, Mapping[str, str]], type: str, code: str) -> str:
    """The code whose index entries serve `code` on `type`, by a query's `aliases`."""
    return aliases.get(type, NO_ALIASES).get(code, code) if aliases else code


@dataclass(slots=True)
class SearchResult:
    matches: list[ResourceVersion]
    included: list[ResourceVersion] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None  # the following page, None on the last page
    prev_cursor: str | None = None  # the preceding page, None on the first page
    first_cursor: str | None = None  # the first page of the same pinned snapshot
    include_truncated: bool = False  # max_include stopped includes short
    has_more: bool = False  # a next page exists (next_cursor is set when the adapter pages)
