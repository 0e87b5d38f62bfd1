"""SearchQuery clauses -> MongoDB query filters over the `ix.<kind>` arrays, plus the
`$lookup` stages that chains and `_has` need (semantics: `fhirpm.search.query`, oracle:
`fhirpm.search.match`).

Each predicate becomes one `$elemMatch` on its kind's array, so the parameter code and the
value are tested on the same element and the compound multikey index `(p, value)` serves
it. A chain adds a stage that collects the ids its reference parameter points at and a
`$lookup` (localField ids, foreignField `_id`) into the target type's collection running
the target clause; `_has` looks up the referring type on its `k` join key
("param|Type/id"). Lookups nest for chains of any depth. The filter then tests the looked-up
array, so `Not` and `AnyOf` around a chain work like any other clause.

Untrusted values only ever appear as values: in query filters (where a string is a
literal), as `$literal` inside expressions, and regex-escaped in `$regex`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
    Missing,
    Not,
    NumberPred,
    Param,
    Pred,
    QuantityPred,
    RefPred,
    StringPred,
    TokenInPred,
    TokenPred,
    TokenTextPred,
    UriPred,
    indexed_as,
)
from fhirpm.storage.mongo import schema

Filter = dict[str, Any]
FALSE: Filter = {"_id": {"$in": []}}
TRUE: Filter = {}
KIND_OF_TYPE = {"string": "str", "token": "tok", "reference": "ref", "date": "date",
                "number": "num", "quantity": "qty", "uri": "uri"}
_PRED_KIND = {StringPred: "str", TokenPred: "tok", TokenTextPred: "tok", TokenInPred: "tok",
              RefPred: "ref", IdentifierPred: "ref", DatePred: "date", NumberPred: "num",
              QuantityPred: "qty", UriPred: "uri"}


def all_of(filters: list[Filter]) -> Filter:
    filters = [f for f in filters if f]
    return filters[0] if len(filters) == 1 else ({"$and": filters} if filters else TRUE)


def any_of(filters: list[Filter]) -> Filter:
    if any(not f for f in filters):
        return TRUE
    return filters[0] if len(filters) == 1 else ({"$or": filters} if filters else FALSE)


def prefix_range(value: str) -> dict[str, str]:
    """Strings that start with `value`, as an index-friendly range (code point order, which
    is MongoDB's binary string order)."""
    upper = value.rstrip("\U0010ffff")
    if not upper:
        return {"$gte": value}
    following = ord(upper[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000  # surrogates are not characters
    return {"$gte": value, "$lt": upper[:-1] + chr(following)}


def regex_literal(text: str) -> str:
    """`text` as a PCRE pattern matching itself (BSON regexes cannot hold NUL)."""
    return re.escape(text).replace("\x00", "\\x00")


# -- predicates: conditions on one element of ix.<kind> ------------------------------------
#
# A predicate becomes a list of alternative plain field conditions (an OR): "some element
# satisfies A or B" is "some element satisfies A, or some element satisfies B", so each
# alternative is its own `$elemMatch` and none holds `$or`/`$and` (which not every server
# accepts inside `$elemMatch`).

Alternatives = list[Filter]


def pred_alternatives(pred: Pred) -> Alternatives:
    """The element conditions (without `p`) of which one must hold; [] never matches."""
    match pred:
        case StringPred(value=v, mode="exact"):
            return [{"r": v}]
        case StringPred(value=v, mode="contains"):
            return [{"n": {"$regex": regex_literal(v)}} if v else {}]
        case StringPred(value=v):
            return [{"n": prefix_range(v)} if v else {}]
        case TokenPred():
            return [_token(pred, "c", "s")]
        case TokenTextPred(text=text):
            if not text:
                return [{"x": {"$ne": None}}]
            return [{"x": {"$regex": f"(?:^| ){regex_literal(text)}"}}]
        case TokenInPred(codes=codes, systems=systems):
            named = [s for s in systems if s is not None]
            return [{"s": s, "c": c} for s, c in codes] + ([{"s": {"$in": named}}]
                                                           if named else [])
        case RefPred():
            return _reference(pred)
        case IdentifierPred(token=token):
            return [{"ih": True, **_token(token, "iv", "is")}]
        case DatePred(prefix=prefix, lo=lo, hi=hi):
            return _date(prefix, lo, hi)
        case NumberPred(prefix=prefix, value=value, lo=lo, hi=hi):
            return _number(prefix, value, lo, hi)
        case QuantityPred():
            return [{**a, **b} for a in _number(pred.prefix, pred.value, pred.lo, pred.hi)
                    for b in _units(pred)]  # disjoint fields: v, and s/c/u
        case UriPred(uri=uri, mode="below"):
            return [{"u": prefix_range(uri)}]
        case UriPred(mode="above", ancestors=ancestors):
            return [{"u": {"$in": list(ancestors)}}]
        case UriPred(uri=uri):
            return [{"u": uri}]
    return []  # OfTypePred and anything unknown: the parser expresses :of-type as tokens


def _token(pred: TokenPred, code_field: str, system_field: str) -> Filter:
    condition: Filter = {}
    if pred.code is not None:
        condition[code_field] = pred.code
    if pred.no_system:
        condition[system_field] = None
    elif pred.system is not None:
        condition[system_field] = pred.system
    return condition


def _reference(pred: RefPred) -> Alternatives:
    condition: Filter = {}
    if pred.version is not None:
        condition["v"] = pred.version
    if pred.id is not None:
        condition.update({"u": None, "i": pred.id})
        if pred.type is not None:
            condition["t"] = pred.type
        return [condition]
    if pred.url is None:
        return []
    condition["u"] = pred.url
    return [condition]


def _date(prefix: str, lo: int, hi: int) -> Alternatives:
    eq = {"lo": {"$gte": lo}, "hi": {"$lte": hi}}
    return {
        "eq": [eq], "ne": [{"lo": {"$lt": lo}}, {"hi": {"$gt": hi}}],
        "gt": [{"hi": {"$gt": hi}}], "lt": [{"lo": {"$lt": lo}}],
        "ge": [{"hi": {"$gt": hi}}, eq], "le": [{"lo": {"$lt": lo}}, eq],
        "sa": [{"lo": {"$gt": hi}}], "eb": [{"hi": {"$lt": lo}}],
        "ap": [{"lo": {"$lte": hi}, "hi": {"$gte": lo}}],
    }[prefix]


def _number(prefix: str, q: float, lo: float, hi: float) -> Alternatives:
    return {
        "eq": [{"v": {"$gte": lo, "$lt": hi}}],
        "ne": [{"v": {"$lt": lo}}, {"v": {"$gte": hi}}],
        "gt": [{"v": {"$gt": q}}], "sa": [{"v": {"$gt": q}}], "lt": [{"v": {"$lt": q}}],
        "eb": [{"v": {"$lt": q}}], "ge": [{"v": {"$gte": q}}], "le": [{"v": {"$lte": q}}],
        "ap": [{"v": {"$gte": lo, "$lte": hi}}],
    }[prefix]


def _units(pred: QuantityPred) -> Alternatives:
    if pred.code is None:
        return [{"s": pred.system}] if pred.system is not None else [{}]
    if pred.system is not None:
        return [{"s": pred.system, "c": pred.code}]
    return [{"c": pred.code}, {"u": pred.code}]


# -- clauses ------------------------------------------------------------------------------

class Compiler:
    """Compiles the clauses of one context type; `stages` collects the `$addFields` and
    `$lookup` stages that must run before the filter that `clause` returns."""

    def __init__(self, aliases: Mapping[str, Mapping[str, str]] | None = None,
                 counter: list[int] | None = None) -> None:
        self.stages: list[dict[str, Any]] = []
        self.aliases = aliases or NO_ALIASES  # the query's (`SearchQuery.aliases`)
        self._counter = counter if counter is not None else [0]

    def _name(self, prefix: str) -> str:
        self._counter[0] += 1
        return f"_{prefix}{self._counter[0]}"

    def clause(self, clause: Clause, type: str) -> Filter:
        match clause:
            case Param(code="_id", preds=preds):
                return self._id(preds)
            case Param(code=code, preds=preds):
                code = indexed_as(self.aliases, type, code)
                return any_of([f for p in preds if (f := _param(code, p)) is not None])
            case Missing(code="_id", missing=missing):
                return FALSE if missing else TRUE
            case Missing(code=code, type=param_type, missing=missing):
                return _missing(indexed_as(self.aliases, type, code), param_type, missing)
            case Not(clause=inner):
                return {"$nor": [self.clause(inner, type)]}
            case AnyOf(clauses=clauses):
                return any_of([self.clause(c, type) for c in clauses])
            case AllOf(clauses=clauses):
                return all_of([self.clause(c, type) for c in clauses])
            case Chain():
                return self._chain(clause)
            case Has():
                return self._has(clause, type)
        raise TypeError(f"unknown search clause {clause!r}")

    @staticmethod
    def _id(preds: tuple[Pred, ...]) -> Filter:
        ids: list[str] = []
        for pred in preds:
            if isinstance(pred, TokenPred) and pred.system is None and not pred.no_system:
                if pred.code is None:
                    return TRUE
                ids.append(pred.code)
        return {"_id": {"$in": ids}} if ids else FALSE

    def _subpipeline(self, clause: Clause, type: str) -> list[dict[str, Any]]:
        """Live resources of `type` satisfying `clause`: at most one, only its id."""
        inner = Compiler(self.aliases, self._counter)
        condition = inner.clause(clause, type)
        return [{"$match": {"del": False}}, *inner.stages, {"$match": condition},
                {"$limit": 1}, {"$project": {"_id": 1}}]

    def _chain(self, chain: Chain) -> Filter:
        found: list[Filter] = []
        for target, clause in chain.targets:
            if not schema.is_type_name(target):
                continue
            ids, joined = self._name("c"), self._name("j")
            self.stages.append({"$addFields": {ids: _local_ids(chain.code, target)}})
            self.stages.append({"$lookup": {
                "from": target, "localField": ids, "foreignField": "_id",
                "pipeline": self._subpipeline(clause, target), "as": joined}})
            found.append({f"{joined}.0": {"$exists": True}})
        return any_of(found) if found else FALSE

    def _has(self, has: Has, type: str) -> Filter:
        if not schema.is_type_name(has.type):
            return FALSE
        key, joined = self._name("k"), self._name("h")
        prefix = schema.local_key(has.code, type, "")
        self.stages.append({"$addFields": {key: {"$concat": [{"$literal": prefix}, "$_id"]}}})
        self.stages.append({"$lookup": {
            "from": has.type, "localField": key, "foreignField": "ix.ref.k",
            "pipeline": self._subpipeline(has.clause, has.type), "as": joined}})
        return {f"{joined}.0": {"$exists": True}}


def _param(code: str, pred: Pred) -> Filter | None:
    kind = _PRED_KIND.get(type(pred))
    alternatives = pred_alternatives(pred) if kind is not None else []
    if not alternatives:
        return None
    return any_of([{f"ix.{kind}": {"$elemMatch": {"p": code, **a}}} for a in alternatives])


def _missing(code: str, param_type: str, missing: bool) -> Filter:
    kind = KIND_OF_TYPE.get(param_type)
    kinds = [kind] if kind else list(schema.KINDS)
    if missing:  # no element of any of those arrays has this code
        return all_of([{f"ix.{k}.p": {"$ne": code}} for k in kinds])
    return any_of([{f"ix.{k}.p": code} for k in kinds])


def _local_ids(code: str, target: str) -> dict[str, Any]:
    """The ids that `code` references locally with type `target` (expression)."""
    return {"$map": {
        "input": {"$filter": {
            "input": {"$ifNull": ["$ix.ref", []]}, "as": "r",
            "cond": {"$and": [
                {"$eq": ["$$r.p", {"$literal": code}]},
                {"$eq": ["$$r.t", {"$literal": target}]},
                {"$eq": [{"$ifNull": ["$$r.u", None]}, None]},
                {"$ne": [{"$ifNull": ["$$r.i", None]}, None]}]}}},
        "as": "r", "in": "$$r.i"}}
