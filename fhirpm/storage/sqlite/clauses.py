"""Search clauses and predicates (`search.query`) as SQL over the SQLite index tables.

Index rows carry the parameter qualified by the resource type (`Appointment.date`, see
`index.py`), so each clause is compiled for its context types. Every clause has two forms:

- `rids(clause, types)`: a SELECT of the rids satisfying it, driven by an index (None when
  the clause cannot drive, e.g. `:missing=true` or `:not`);
- `test(clause, types, row)`: a boolean on one candidate row (correlated EXISTS), so a
  query drives from its most selective clause and checks the others per candidate.

Only SQL text and arguments come out of here; `search.py` plans and runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import count

from fhirpm.search.normalize import fold
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
    SortKey,
    StringPred,
    TokenInPred,
    TokenPred,
    TokenTextPred,
    UriPred,
    indexed_as,
)

TABLE = {"string": "ix_string", "token": "ix_token", "reference": "ix_reference",
         "date": "ix_date", "number": "ix_number", "quantity": "ix_quantity", "uri": "ix_uri"}

Sql = tuple[str, list[object]]
TRUE: Sql = ("1", [])
FALSE: Sql = ("0", [])


@dataclass(frozen=True, slots=True)
class Row:
    """SQL expressions for a candidate resource: its rid, and (when at hand) id and type."""

    rid: str
    id: str | None = None
    type: str | None = None

    def id_expr(self) -> str:
        return self.id or f"(SELECT id FROM resources WHERE rid = {self.rid})"

    def type_expr(self) -> str:
        return self.type or f"(SELECT type FROM resources WHERE rid = {self.rid})"


def keys(types: Sequence[str], code: str,
         aliases: Mapping[str, Mapping[str, str]] = NO_ALIASES) -> list[str]:
    """The rows' `param` values of `code` on `types` (an alias: the code it reads)."""
    return [f"{t}.{indexed_as(aliases, t, code)}" for t in types]


def _in(column: str, values: Sequence[object]) -> Sql:
    if len(values) == 1:
        return f"{column} = ?", [values[0]]
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


def upper_bound(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix[-1] != "\U0010ffff" else prefix + "\0"


def _and(*parts: Sql) -> Sql:
    kept = [p for p in parts if p[0] != "1"]
    if not kept:
        return TRUE
    return " AND ".join(f"({s})" for s, _ in kept), [a for _, args in kept for a in args]


def _or(parts: Sequence[Sql]) -> Sql:
    if any(p[0] == "1" for p in parts):
        return TRUE
    kept = [p for p in parts if p[0] != "0"]
    if not kept:
        return FALSE
    return " OR ".join(f"({s})" for s, _ in kept), [a for _, args in kept for a in args]


# -- predicates over one index row (alias `a`) ---------------------------------------------


def pred_sql(pred: Pred, a: str) -> Sql:
    match pred:
        case StringPred(value=v, mode="exact"):
            # the norm index finds it (there is no index on raw): a raw value's norm is
            # its fold (search.extract)
            return f"{a}.norm = ? AND {a}.raw = ?", [fold(v), v]
        case StringPred(value=v, mode="contains"):
            return (f"instr({a}.norm, ?) > 0", [v]) if v else TRUE
        case StringPred(value=v):
            return (f"{a}.norm >= ? AND {a}.norm < ?", [v, upper_bound(v)]) if v else TRUE
        case TokenPred():
            return _token(pred, f"{a}.code", f"{a}.system")
        case TokenTextPred(text=t):
            return (f"substr({a}.text, 1, ?) = ? OR instr({a}.text, ?) > 0",
                    [len(t), t, f" {t}"])
        case TokenInPred(codes=codes, systems=systems):
            parts: list[Sql] = []
            if codes:
                code_in = _in(f"{a}.code", sorted({c for _, c in codes}))
                pair_in = _in(f"coalesce({a}.system, '') || '|' || {a}.code",
                              sorted({f"{s or ''}|{c}" for s, c in codes}))
                parts.append(_and(code_in, pair_in))
            if systems:
                parts.append(_in(f"{a}.system", sorted(systems)))
            return _or(parts)
        case RefPred():
            return _reference(pred, a)
        case IdentifierPred(token=token):
            return _and(_token(token, f"{a}.id_value", f"{a}.id_system"),
                        (f"{a}.id_value IS NOT NULL", []))
        case DatePred():
            return _date(pred, a)
        case NumberPred(prefix=p, value=v, lo=lo, hi=hi):
            return _number(p, v, lo, hi, f"{a}.value")
        case QuantityPred(prefix=p, value=v, lo=lo, hi=hi):
            return _and(_number(p, v, lo, hi, f"{a}.value"), _units(pred, a))
        case UriPred(uri=u, mode="below"):
            return (f"{a}.uri >= ? AND {a}.uri < ?", [u, upper_bound(u)]) if u else TRUE
        case UriPred(mode="above", ancestors=ancestors):
            return _in(f"{a}.uri", ancestors) if ancestors else FALSE
        case UriPred(uri=u):
            return f"{a}.uri = ?", [u]
    return FALSE


def _any_pred(preds: Sequence[Pred], a: str) -> Sql:
    """Any of `preds` over one index row. Several codes (`identifier=a,b`) also say
    `code IN (...)`: an OR of per-code terms would leave SQLite only the parameter part
    of the (param, code, ...) index, reading every value of the parameter."""
    either = _or([pred_sql(pr, a) for pr in preds])
    if len(preds) > 1 and all(isinstance(p, TokenPred) and p.code is not None for p in preds):
        return _and(_in(f"{a}.code", sorted({p.code for p in preds})), either)  # type: ignore[union-attr]
    return either


def _token(pred: TokenPred, code: str, system: str) -> Sql:
    parts: list[Sql] = []
    if pred.code is not None:
        parts.append((f"{code} = ?", [pred.code]))
    if pred.no_system:
        parts.append((f"{system} IS NULL", []))
    elif pred.system is not None:
        parts.append((f"{system} = ?", [pred.system]))
    return _and(*parts)


def _reference(pred: RefPred, a: str) -> Sql:
    # `+` keeps `url IS NULL` (true of nearly every local reference) from choosing the url
    # index, which would read every local reference of the parameter
    parts: list[Sql] = []
    if pred.id is not None:
        parts.append((f"{a}.ref_id = ? AND +{a}.url IS NULL", [pred.id]))
        if pred.type is not None:
            parts.append((f"{a}.ref_type = ?", [pred.type]))
    elif pred.url is not None:
        parts.append((f"{a}.url = ?", [pred.url]))
    else:
        return FALSE
    if pred.version is not None:
        parts.append((f"{a}.version = ?", [pred.version]))
    return _and(*parts)


def _date(pred: DatePred, a: str) -> Sql:
    lo, hi = pred.lo, pred.hi
    eq = (f"{a}.lo >= ? AND {a}.lo <= ? AND {a}.hi <= ?", [lo, hi, hi])
    match pred.prefix:
        case "eq":
            return eq
        case "ne":
            return f"NOT ({eq[0]})", eq[1]
        case "gt":
            return f"{a}.hi > ?", [hi]
        case "lt":
            return f"{a}.lo < ?", [lo]
        case "ge":  # both branches imply hi >= lo: that bound lets the index drive
            return (f"{a}.hi >= ? AND ({a}.hi > ? OR ({a}.lo >= ? AND {a}.hi <= ?))",
                    [lo, hi, lo, hi])
        case "le":
            return (f"{a}.lo <= ? AND ({a}.lo < ? OR ({a}.lo >= ? AND {a}.hi <= ?))",
                    [hi, lo, lo, hi])
        case "sa":
            return f"{a}.lo > ?", [hi]
        case "eb":
            return f"{a}.hi < ?", [lo]
        case "ap":
            return f"{a}.lo <= ? AND {a}.hi >= ?", [hi, lo]
    return FALSE


def _number(prefix: str, v: float, lo: float, hi: float, col: str) -> Sql:
    match prefix:
        case "eq":
            return f"{col} >= ? AND {col} < ?", [lo, hi]
        case "ne":
            return f"NOT ({col} >= ? AND {col} < ?)", [lo, hi]
        case "gt" | "sa":
            return f"{col} > ?", [v]
        case "lt" | "eb":
            return f"{col} < ?", [v]
        case "ge":
            return f"{col} >= ?", [v]
        case "le":
            return f"{col} <= ?", [v]
        case "ap":
            return f"{col} >= ? AND {col} <= ?", [lo, hi]
    return FALSE


def _units(pred: QuantityPred, a: str) -> Sql:
    if pred.code is None:
        return (f"{a}.system = ?", [pred.system]) if pred.system is not None else TRUE
    if pred.system is not None:
        return f"{a}.system = ? AND {a}.code = ?", [pred.system, pred.code]
    return f"({a}.code = ? OR {a}.unit = ?)", [pred.code, pred.code]


# -- clauses ------------------------------------------------------------------------------


class Compiler:
    """Compiles clauses; one instance per statement, so table aliases never collide."""

    def __init__(self, aliases: Mapping[str, Mapping[str, str]] = NO_ALIASES) -> None:
        self._n = count()
        self.aliases = aliases  # the query's (`SearchQuery.aliases`)

    def alias(self, stem: str) -> str:
        return f"{stem}{next(self._n)}"

    # rid sets ------------------------------------------------------------------------

    def rids(self, clause: Clause, types: Sequence[str]) -> Sql | None:
        match clause:
            case Param(code="_id", preds=preds):
                ids = _ids(preds)
                t_in, i_in = _in("type", list(types)), _in("id", ids)
                if not ids:
                    return "SELECT rid FROM resources WHERE 0", []
                return (f"SELECT rid FROM resources WHERE {t_in[0]} AND {i_in[0]} "
                        "AND deleted = 0", t_in[1] + i_in[1])
            case Param(code=code, type=kind, preds=preds):
                a = self.alias("a")
                k = _in(f"{a}.param", keys(types, code, self.aliases))
                p = _any_pred(preds, a)
                return (f"SELECT {a}.rid FROM {TABLE[kind]} {a} WHERE {k[0]} AND ({p[0]})",
                        k[1] + p[1])
            case Missing(code=code, type=kind, missing=False) if code != "_id":
                a = self.alias("a")
                k = _in(f"{a}.param", keys(types, code, self.aliases))
                return f"SELECT {a}.rid FROM {TABLE[kind]} {a} WHERE {k[0]}", k[1]
            case AnyOf(clauses=clauses):
                parts = [self.rids(c, types) for c in clauses]
                if not parts or any(p is None for p in parts):
                    return None
                return (" UNION ALL ".join(p[0] for p in parts if p),
                        [a for p in parts if p for a in p[1]])
            case AllOf(clauses=clauses):
                return self._all_rids(clauses, types)
            case Chain():
                return self._chain_rids(clause, types)
            case Has():
                return self._has_rids(clause, types)
        return None

    def _all_rids(self, clauses: Sequence[Clause], types: Sequence[str]) -> Sql | None:
        for n, first in enumerate(clauses):
            driver = self.rids(first, types)
            if driver is not None:
                d = self.alias("d")
                rest = [self.test(c, types, Row(f"{d}.rid")) for i, c in enumerate(clauses)
                        if i != n]
                cond = _and(*rest)
                return (f"SELECT {d}.rid FROM ({driver[0]}) {d} WHERE {cond[0]}",
                        driver[1] + cond[1])
        return None

    def _chain_rids(self, chain: Chain, types: Sequence[str]) -> Sql:
        a = self.alias("a")
        k = _in(f"{a}.param", keys(types, chain.code, self.aliases))
        branches: list[Sql] = []
        for target, inner in chain.targets:
            branches.append(_and((f"{a}.ref_type = ?", [target]),
                                 self._ids_of(inner, target, f"{a}.ref_id")))
        cond = _or(branches)
        return (f"SELECT {a}.rid FROM ix_reference {a} WHERE {k[0]} AND +{a}.url IS NULL "
                f"AND ({cond[0]})", k[1] + cond[1])

    def _ids_of(self, clause: Clause, type: str, column: str) -> Sql:
        """`column IN (ids of live resources of `type` satisfying clause)`."""
        t = self.alias("t")
        inner = self.rids(clause, [type])
        if inner is not None:
            return (f"{column} IN (SELECT {t}.id FROM resources {t} WHERE {t}.rid IN "
                    f"({inner[0]}))", inner[1])
        test = self.test(clause, [type], Row(f"{t}.rid", f"{t}.id", f"{t}.type"))
        return (f"{column} IN (SELECT {t}.id FROM resources {t} WHERE {t}.type = ? AND "
                f"{t}.deleted = 0 AND ({test[0]}))", [type, *test[1]])

    def _has_rids(self, has: Has, types: Sequence[str]) -> Sql:
        a, t = self.alias("a"), self.alias("t")
        ty = _in(f"{a}.ref_type", list(types))
        inner = self.rids(has.clause, [has.type])
        if inner is not None:  # from the referring resources to their references
            src: Sql = f"{a}.rid IN ({inner[0]})", inner[1]
            table = f"ix_reference {a} INDEXED BY ix_reference_rid"
        else:
            src = self.test(has.clause, [has.type], Row(f"{a}.rid"))
            table = f"ix_reference {a}"
        # CROSS JOIN: references first, then their targets (never every target first)
        return (f"SELECT {t}.rid FROM {table} CROSS JOIN resources {t} ON "
                f"{t}.type = {a}.ref_type AND {t}.id = {a}.ref_id WHERE {a}.param = ? AND "
                f"+{a}.url IS NULL AND {ty[0]} AND ({src[0]}) AND {t}.deleted = 0",
                [f"{has.type}.{has.code}", *ty[1], *src[1]])

    # per-row tests -------------------------------------------------------------------

    def test(self, clause: Clause, types: Sequence[str], row: Row) -> Sql:
        match clause:
            case Param(code="_id", preds=preds):
                ids = _ids(preds)
                return _in(row.id_expr(), ids) if ids else FALSE
            case Param(code=code, type=kind, preds=preds):
                a = self.alias("a")
                k = _in(f"{a}.param", keys(types, code, self.aliases))
                p = _or([pred_sql(pr, a) for pr in preds])
                return (f"EXISTS (SELECT 1 FROM {_by_rid(kind, a)} WHERE {a}.rid = {row.rid} "
                        f"AND {k[0]} AND ({p[0]}))", k[1] + p[1])
            case Missing(code="_id", missing=missing):
                return FALSE if missing else TRUE
            case Missing(code=code, type=kind, missing=missing):
                a = self.alias("a")
                k = _in(f"{a}.param", keys(types, code, self.aliases))
                neg = "NOT " if missing else ""
                return (f"{neg}EXISTS (SELECT 1 FROM {_by_rid(kind, a)} WHERE "
                        f"{a}.rid = {row.rid} AND {k[0]})", k[1])
            case Not(clause=inner):
                s, args = self.test(inner, types, row)
                return f"NOT ({s})", args
            case AnyOf(clauses=clauses):
                return _or([self.test(c, types, row) for c in clauses])
            case AllOf(clauses=clauses):
                return _and(*(self.test(c, types, row) for c in clauses))
            case Chain():
                return self._chain_test(clause, types, row)
            case Has():
                return self._has_test(clause, types, row)
        raise TypeError(f"unknown clause {clause!r}")

    def _chain_test(self, chain: Chain, types: Sequence[str], row: Row) -> Sql:
        a, t = self.alias("a"), self.alias("t")
        k = _in(f"{a}.param", keys(types, chain.code, self.aliases))
        target_row = Row(f"{t}.rid", f"{t}.id", f"{t}.type")
        branches = [_and((f"{t}.type = ?", [target]), self.test(inner, [target], target_row))
                    for target, inner in chain.targets]
        cond = _or(branches)
        return (f"EXISTS (SELECT 1 FROM {_by_rid('reference', a)} CROSS JOIN resources {t} ON "
                f"{t}.type = {a}.ref_type AND {t}.id = {a}.ref_id WHERE {a}.rid = {row.rid} "
                f"AND {k[0]} AND +{a}.url IS NULL AND {t}.deleted = 0 AND ({cond[0]}))",
                k[1] + cond[1])

    def _has_test(self, has: Has, types: Sequence[str], row: Row) -> Sql:
        a = self.alias("a")
        inner = self.test(has.clause, [has.type], Row(f"{a}.rid"))
        return (f"EXISTS (SELECT 1 FROM ix_reference {a} INDEXED BY ix_reference_target "
                f"WHERE {a}.param = ? AND {a}.ref_id = {row.id_expr()} AND "
                f"{a}.ref_type = {row.type_expr()} AND +{a}.url IS NULL AND ({inner[0]}))",
                [f"{has.type}.{has.code}", *inner[1]])


def _by_rid(kind: str, alias: str) -> str:
    """A per-row check reads one resource's rows: pin the rid index (the planner, without
    statistics, sometimes prefers a value index and then reads a whole parameter range)."""
    table = TABLE[kind]
    return f"{table} {alias} INDEXED BY {table}_rid"


def _ids(preds: Sequence[Pred]) -> list[str]:
    return [p.code for p in preds if isinstance(p, TokenPred) and p.code is not None
            and p.system is None and not p.no_system]


# -- sorting ------------------------------------------------------------------------------

_SORT_COLUMN = {"string": ("ix_string", "s.norm"), "token": ("ix_token", "s.code"),
                "uri": ("ix_uri", "s.uri"), "number": ("ix_number", "s.value"),
                "quantity": ("ix_quantity", "s.value"),
                "reference": ("ix_reference", "coalesce(s.url, s.ref_type || '/' || s.ref_id)")}


def sort_expr(key: SortKey, types: Sequence[str], rid: str, id_col: str,
              aliases: Mapping[str, Mapping[str, str]] = NO_ALIASES) -> Sql:
    """`key`'s sort value for row `rid` (NULL when the resource has none)."""
    if key.param == "_id":
        return id_col, []
    k = _in("s.param", keys(types, key.param, aliases))
    agg = "max" if key.descending else "min"
    if key.type == "date":
        table, col = "ix_date", ("s.hi" if key.descending else "s.lo")
    else:
        table, col = _SORT_COLUMN.get(key.type, ("ix_token", "s.code"))
    return (f"(SELECT {agg}({col}) FROM {table} s INDEXED BY {table}_rid WHERE s.rid = {rid} "
            f"AND {k[0]})", k[1])
