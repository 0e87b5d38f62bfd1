"""The in-memory search oracle: evaluates a `SearchQuery` over resources held as plain
JSON plus their index entries, with the semantics documented in `search.query`.

It is deliberately naive (every query visits every resource) and shares no code with any
adapter, so that tests can assert "the store returns exactly what `match` returns". It also
serves small in-memory checks (a conditional update's criteria against one resource).
Paging and totals are not its business: `search` returns every match, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhirpm.search.query import (
    NO_ALIASES,
    AllOf,
    AnyOf,
    Chain,
    Clause,
    DatePred,
    Has,
    IdentifierPred,
    Include,
    Missing,
    Not,
    NumberPred,
    Param,
    Pred,
    QuantityPred,
    RefPred,
    SearchQuery,
    SortKey,
    StringPred,
    TokenInPred,
    TokenPred,
    TokenTextPred,
    UriPred,
    indexed_as,
)
from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

Key = tuple[str, str]  # (type, id)


@dataclass(slots=True)
class Doc:
    type: str
    id: str
    ordinal: int  # creation order: the tie-breaker every ordering ends with
    values: dict[str, list[IndexValue]] = field(default_factory=dict)
    resource: Any = None


class MemoryIndex:
    """Live resources by (type, id) with their index values; `search` evaluates queries."""

    def __init__(self) -> None:
        self.docs: dict[Key, Doc] = {}
        self._ordinals: dict[Key, int] = {}
        self._incoming: dict[Key, list[Doc]] | None = None

    def put(self, type: str, id: str, entries: Iterable[IndexEntry],
            resource: Any = None) -> None:
        key = (type, id)
        ordinal = self._ordinals.setdefault(key, len(self._ordinals))
        doc = Doc(type, id, ordinal, resource=resource)
        self._incoming = None
        for entry in entries:
            doc.values.setdefault(entry.param, []).append(entry.value)
        self.docs[key] = doc

    def delete(self, type: str, id: str) -> None:
        self.docs.pop((type, id), None)
        self._incoming = None

    def search(self, query: SearchQuery) -> tuple[list[Key], list[Key]]:
        """(matches in order, included resources in creation order)."""
        types, aliases = set(query.types), query.aliases
        found = [d for d in self.docs.values() if (not types or d.type in types)
                 and all(self.holds(c, d, aliases) for c in query.where)]
        found.sort(key=_order(query.sort, query.aliases))
        included = self._includes(found, query) if query.include or query.revinclude else []
        return [(d.type, d.id) for d in found], [(d.type, d.id) for d in included]

    # -- clauses --------------------------------------------------------------------

    def holds(self, clause: Clause, doc: Doc,
              aliases: Mapping[str, Mapping[str, str]] = NO_ALIASES) -> bool:
        """`aliases`: the query's (`SearchQuery.aliases`); entries extracted to be stored
        have none of an alias's own, entries extracted `only` for the clause do."""
        match clause:
            case Param(code="_id", preds=preds):
                return any(_id_matches(p, doc.id) for p in preds)
            case Param(code=code, preds=preds):
                values = doc.values.get(indexed_as(aliases, doc.type, code), ())
                return any(pred_matches(p, v) for p in preds for v in values)
            case Missing(code=code, missing=missing):
                return (code != "_id"
                        and not doc.values.get(indexed_as(aliases, doc.type, code))) == missing
            case Not(clause=inner):
                return not self.holds(inner, doc, aliases)
            case AnyOf(clauses=clauses):
                return any(self.holds(c, doc, aliases) for c in clauses)
            case AllOf(clauses=clauses):
                return all(self.holds(c, doc, aliases) for c in clauses)
            case Chain(code=code, targets=targets):
                return any(self._chain_holds(ref, targets, aliases)
                           for ref in doc.values.get(code, ()) if isinstance(ref, ReferenceValue))
            case Has(type=type_, code=code, clause=inner):
                return any(self.holds(inner, other, aliases) for other in self._referring(doc)
                           if other.type == type_ and _points_at(other, code, doc))
        raise TypeError(f"unknown clause {clause!r}")

    def _referring(self, target: Doc) -> list[Doc]:
        """Docs holding a local reference to `target` (a map rebuilt after each change)."""
        if self._incoming is None:
            self._incoming = {}
            for doc in self.docs.values():
                for values in doc.values.values():
                    for v in values:
                        if isinstance(v, ReferenceValue) and v.url is None and v.id:
                            self._incoming.setdefault((v.type or "", v.id), []).append(doc)
        return self._incoming.get((target.type, target.id), [])

    def _chain_holds(self, ref: ReferenceValue, targets: Sequence[tuple[str, Clause]],
                     aliases: Mapping[str, Mapping[str, str]]) -> bool:
        if ref.url is not None or ref.id is None:
            return False
        for target_type, clause in targets:
            if ref.type == target_type:
                target = self.docs.get((target_type, ref.id))
                if target is not None and self.holds(clause, target, aliases):
                    return True
        return False

    # -- includes -------------------------------------------------------------------

    def _includes(self, matches: list[Doc], query: SearchQuery) -> list[Doc]:
        seen = {(d.type, d.id) for d in matches}
        added: list[Doc] = []
        frontier = matches
        rules_fwd, rules_rev = query.include, query.revinclude
        first = True
        while frontier and len(added) < query.max_include:
            fwd = rules_fwd if first else tuple(i for i in rules_fwd if i.iterate)
            rev = rules_rev if first else tuple(i for i in rules_rev if i.iterate)
            if not fwd and not rev:
                break
            new = [d for d in self._follow(frontier, fwd, rev) if (d.type, d.id) not in seen]
            new.sort(key=lambda d: d.ordinal)
            new = new[: query.max_include - len(added)]
            seen.update((d.type, d.id) for d in new)
            added.extend(new)
            frontier, first = new, False
        added.sort(key=lambda d: d.ordinal)
        return added

    def _follow(self, docs: list[Doc], fwd: Sequence[Include],
                rev: Sequence[Include]) -> list[Doc]:
        out: dict[Key, Doc] = {}
        for rule in fwd:
            for doc in docs:
                if doc.type != rule.source:
                    continue
                for code in rule.codes:
                    for ref in doc.values.get(code, ()):
                        if (isinstance(ref, ReferenceValue) and ref.url is None and ref.id
                                and (rule.target is None or ref.type == rule.target)):
                            target = self.docs.get((ref.type or "", ref.id))
                            if target is not None:
                                out[(target.type, target.id)] = target
        for rule in rev:
            for doc in docs:
                if rule.target is not None and doc.type != rule.target:
                    continue
                for other in self.docs.values():
                    if other.type == rule.source and any(
                            _points_at(other, code, doc) for code in rule.codes):
                        out[(other.type, other.id)] = other
        return list(out.values())


def _points_at(doc: Doc, code: str, target: Doc) -> bool:
    return any(isinstance(v, ReferenceValue) and v.url is None and v.type == target.type
               and v.id == target.id for v in doc.values.get(code, ()))


def _id_matches(pred: Pred, id: str) -> bool:
    return isinstance(pred, TokenPred) and pred.system is None and not pred.no_system \
        and (pred.code is None or pred.code == id)


# -- predicates ---------------------------------------------------------------------------


def pred_matches(pred: Pred, value: IndexValue) -> bool:
    """Whether one index value satisfies one predicate (semantics: `search.query`)."""
    match pred, value:
        case StringPred(), StringValue():
            return _string(pred, value)
        case TokenPred(), TokenValue():
            return _token(pred, value)
        case TokenTextPred(text=text), TokenValue(text=vt):
            return vt is not None and (vt.startswith(text) or f" {text}" in vt)
        case TokenInPred(codes=codes, systems=systems), TokenValue():
            return (value.system, value.code) in codes or (
                value.system is not None and value.system in systems)
        case RefPred(), ReferenceValue():
            return _reference(pred, value)
        case IdentifierPred(token=token), ReferenceValue(identifier=ident):
            return ident is not None and _token(token, ident)
        case DatePred(), DateValue():
            return _date(pred.prefix, pred.lo, pred.hi, value.lo, value.hi)
        case NumberPred(), NumberValue():
            return _number(pred.prefix, pred.value, pred.lo, pred.hi, value.value)
        case QuantityPred(), QuantityValue():
            return _units(pred, value) and _number(pred.prefix, pred.value, pred.lo, pred.hi,
                                                   value.value)
        case UriPred(), UriValue():
            return _uri(pred, value.uri)
    return False


def _string(pred: StringPred, value: StringValue) -> bool:
    if pred.mode == "exact":
        return value.raw == pred.value
    if pred.mode == "contains":
        return pred.value in value.norm
    return value.norm.startswith(pred.value)


def _token(pred: TokenPred, value: TokenValue) -> bool:
    if pred.code is not None and value.code != pred.code:
        return False
    if pred.no_system:
        return value.system is None
    return pred.system is None or value.system == pred.system


def _reference(pred: RefPred, value: ReferenceValue) -> bool:
    if pred.version is not None and value.version != pred.version:
        return False
    if pred.id is not None:
        return value.url is None and value.id == pred.id and (
            pred.type is None or value.type == pred.type)
    return pred.url is not None and value.url == pred.url


def _date(prefix: str, lo: int, hi: int, vlo: int, vhi: int) -> bool:
    eq = lo <= vlo and vhi <= hi
    return {
        "eq": eq, "ne": not eq, "gt": vhi > hi, "lt": vlo < lo, "ge": vhi > hi or eq,
        "le": vlo < lo or eq, "sa": vlo > hi, "eb": vhi < lo, "ap": vlo <= hi and vhi >= lo,
    }[prefix]


def _number(prefix: str, q: float, lo: float, hi: float, v: float) -> bool:
    eq = lo <= v < hi
    return {
        "eq": eq, "ne": not eq, "gt": v > q, "sa": v > q, "lt": v < q, "eb": v < q,
        "ge": v >= q, "le": v <= q, "ap": lo <= v <= hi,
    }[prefix]


def _units(pred: QuantityPred, value: QuantityValue) -> bool:
    if pred.code is None:
        return pred.system is None or value.system == pred.system
    if pred.system is not None:
        return value.system == pred.system and value.code == pred.code
    return value.code == pred.code or value.unit == pred.code


def _uri(pred: UriPred, uri: str) -> bool:
    if pred.mode == "below":
        return uri.startswith(pred.uri)
    if pred.mode == "above":
        return uri in pred.ancestors
    return uri == pred.uri


# -- ordering -----------------------------------------------------------------------------

_LAST = object()  # sorts after every value in either direction


def sort_value(doc: Doc, key: SortKey,
               aliases: Mapping[str, Mapping[str, str]] = NO_ALIASES) -> Any:
    """The value `doc` sorts by for `key`, or None when it has none."""
    if key.param == "_id":
        return doc.id
    candidates: list[Any] = []
    for v in doc.values.get(indexed_as(aliases, doc.type, key.param), ()):
        match v:
            case StringValue():
                candidates.append(v.norm)
            case TokenValue() if v.code is not None:
                candidates.append(v.code)
            case ReferenceValue(url=str()):
                candidates.append(v.url)
            case ReferenceValue(type=str(), id=str()):
                candidates.append(f"{v.type}/{v.id}")
            case DateValue():
                candidates.append(v.hi if key.descending else v.lo)
            case NumberValue() | QuantityValue():
                candidates.append(v.value)
            case UriValue():
                candidates.append(v.uri)
    if not candidates:
        return None
    return max(candidates) if key.descending else min(candidates)


class _Desc:
    """Inverts the order of a value for descending keys."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.v == self.v


def _order(keys: Sequence[SortKey],
           aliases: Mapping[str, Mapping[str, str]]) -> Callable[[Doc], tuple]:
    def key(doc: Doc) -> tuple:
        parts: list[Any] = []
        for k in keys:
            v = sort_value(doc, k, aliases)
            # (missing?, value): missing values come last whatever the direction
            parts.append((1, 0) if v is None else (0, _Desc(v) if k.descending else v))
        parts.append(doc.ordinal)
        return tuple(parts)
    return key
