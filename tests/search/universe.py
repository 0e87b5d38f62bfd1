"""A small search universe for property tests: three types, every value kind, and
hypothesis strategies for index entries and for queries over them.

Entries are generated directly as `IndexEntry` values (the contract between extraction and
the stores), so these tests exercise query semantics, not extraction.
"""

from __future__ import annotations

from functools import cache

from hypothesis import strategies as st

from fhirpm.search.normalize import fold
from fhirpm.search.query import (
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
    QuantityPred,
    RefPred,
    SortKey,
    StringPred,
    TokenInPred,
    TokenPred,
    TokenTextPred,
    UriPred,
)
from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

PARAMS: dict[str, dict[str, str]] = {
    "Patient": {"name": "string", "gender": "token", "birthdate": "date",
                "general-practitioner": "reference", "identifier": "token",
                "score": "number", "_profile": "uri"},
    "Observation": {"subject": "reference", "code": "token", "value-quantity": "quantity",
                    "date": "date", "performer": "reference"},
    "Practitioner": {"name": "string", "identifier": "token"},
}
TARGETS = {("Patient", "general-practitioner"): ("Practitioner",),
           ("Observation", "subject"): ("Patient",),
           ("Observation", "performer"): ("Practitioner", "Patient")}
IDS = ("a", "b", "c", "d")
SYSTEMS = (None, "s1", "s2")
CODES = ("x", "y", "z")
URIS = ("http://e.org/p", "http://e.org/p/q", "http://e.org/p/q/r", "urn:x")
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

# -- values ---------------------------------------------------------------------------

raw_strings = st.text(alphabet="abAÉé ", min_size=1, max_size=4)
strings = raw_strings.map(lambda raw: StringValue(fold(raw), raw))
tokens = st.builds(TokenValue, st.sampled_from(SYSTEMS), st.sampled_from(CODES),
                   st.sampled_from((None, "blood pressure", "pressure", "heart rate")))
dates = st.tuples(st.integers(0, 20), st.integers(0, 4)).map(
    lambda t: DateValue(t[0] * 10, t[0] * 10 + t[1] * 10 + 9))
numbers = st.integers(0, 12).map(lambda n: NumberValue(n / 2, n / 2 - 0.25, n / 2 + 0.25))
quantities = st.builds(
    lambda n, sys_code: QuantityValue(n / 2, n / 2 - 0.25, n / 2 + 0.25, sys_code[0],
                                      sys_code[1], sys_code[2]),
    st.integers(0, 12),
    st.sampled_from(((None, None, "mg"), ("u", "mg", "mg"), ("u", "g", "gram"))))
uris = st.sampled_from(URIS).map(UriValue)


@cache
def references(targets: tuple[str, ...]) -> st.SearchStrategy[ReferenceValue]:
    local = st.builds(lambda t, i: ReferenceValue(t, i), st.sampled_from(targets),
                      st.sampled_from(IDS))
    remote = st.sampled_from(IDS).map(
        lambda i: ReferenceValue(targets[0], i, url=f"http://other.org/fhir/{targets[0]}/{i}"))
    ident = st.builds(lambda s, c: ReferenceValue(None, None, identifier=TokenValue(s, c)),
                      st.sampled_from(SYSTEMS), st.sampled_from(CODES))
    return st.one_of(local, local, remote, ident)


@cache
def values_for(type_: str, code: str) -> st.SearchStrategy:
    kind = PARAMS[type_][code]
    return {"string": strings, "token": tokens, "date": dates, "number": numbers,
            "quantity": quantities, "uri": uris,
            "reference": references(TARGETS.get((type_, code), ("Patient",)))}[kind]


@cache
def entries(type_: str) -> st.SearchStrategy[list[IndexEntry]]:
    per_code = [st.lists(values_for(type_, code), max_size=2).map(
        lambda values, code=code: [IndexEntry(code, v) for v in values])
        for code in PARAMS[type_]]
    return st.tuples(*per_code).map(lambda lists: [e for part in lists for e in part])


# -- predicates -----------------------------------------------------------------------

string_preds = st.builds(
    lambda raw, mode: StringPred(raw if mode == "exact" else fold(raw), mode),
    st.text(alphabet="abAÉé ", max_size=2), st.sampled_from(("start", "exact", "contains")))
token_preds = st.one_of(
    st.builds(lambda c, s: TokenPred(c, s), st.sampled_from((*CODES, None)),
              st.sampled_from(SYSTEMS)),
    st.builds(lambda c: TokenPred(c, None, True), st.sampled_from(CODES)),
    st.sampled_from(("pressure", "blood", "rate", "ssure")).map(TokenTextPred),
    st.builds(lambda pairs, systems: TokenInPred(tuple(sorted(pairs, key=str)),
                                                 tuple(sorted(systems))),
              st.sets(st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(CODES)), max_size=3),
              st.sets(st.sampled_from(("s1", "s2")), max_size=1)),
)
date_preds = st.builds(lambda p, lo, w: DatePred(p, lo * 5, lo * 5 + w * 5 + 4),
                       st.sampled_from(PREFIXES), st.integers(0, 45), st.integers(0, 6))


def _number_pred(p: str, n: int) -> NumberPred:
    q = n / 2
    lo, hi = (q - 0.6, q + 0.6) if p == "ap" else (q - 0.25, q + 0.25)
    return NumberPred(p, q, lo, hi)


number_preds = st.builds(_number_pred, st.sampled_from(PREFIXES), st.integers(0, 12))
quantity_preds = st.builds(
    lambda n, units: QuantityPred(n.prefix, n.value, n.lo, n.hi, *units),
    number_preds, st.sampled_from(((None, None), ("u", "mg"), (None, "mg"), (None, "gram"),
                                   ("u", None))))
uri_preds = st.builds(
    lambda u, mode: UriPred(u, mode, tuple(u[:i] for i in range(len(u) + 1)
                                           if i == len(u) or u[i] == "/") if mode == "above"
                            else ()),
    st.sampled_from((*URIS, "http://e.org", "http://e.org/p/q/r/s")),
    st.sampled_from(("eq", "below", "above")))


@cache
def reference_preds(targets: tuple[str, ...]) -> st.SearchStrategy:
    return st.one_of(
        st.builds(lambda t, i: RefPred(t, i), st.sampled_from((*targets, None)),
                  st.sampled_from(IDS)),
        st.sampled_from(IDS).map(
            lambda i: RefPred(url=f"http://other.org/fhir/{targets[0]}/{i}")),
        st.builds(lambda c, s: IdentifierPred(TokenPred(c, s)), st.sampled_from(CODES),
                  st.sampled_from(SYSTEMS)),
    )


@cache
def preds_for(type_: str, code: str) -> st.SearchStrategy:
    kind = PARAMS[type_][code]
    return {"string": string_preds, "token": token_preds, "date": date_preds,
            "number": number_preds, "quantity": quantity_preds, "uri": uri_preds,
            "reference": reference_preds(TARGETS.get((type_, code), ("Patient",)))}[kind]


# -- clauses --------------------------------------------------------------------------


@cache
def param_clauses(type_: str) -> st.SearchStrategy[Clause]:
    return st.one_of(*(
        st.lists(preds_for(type_, code), min_size=1, max_size=3).map(
            lambda preds, code=code: Param(code, PARAMS[type_][code], tuple(preds)))
        for code in sorted(PARAMS[type_])))


@cache
def id_clauses() -> st.SearchStrategy[Clause]:
    return st.lists(st.sampled_from(IDS), min_size=1, max_size=2).map(
        lambda ids: Param("_id", "token", tuple(TokenPred(i) for i in ids)))


@cache
def clauses(type_: str, depth: int = 2) -> st.SearchStrategy[Clause]:
    base = st.one_of(
        param_clauses(type_), param_clauses(type_), id_clauses(),
        st.builds(lambda code, m: Missing(code, PARAMS[type_][code], m),
                  st.sampled_from(sorted(PARAMS[type_])), st.booleans()))
    if depth == 0:
        return base
    options = [base, base,
               clauses(type_, depth - 1).map(Not),
               st.lists(clauses(type_, depth - 1), min_size=1, max_size=2).map(
                   lambda cs: AnyOf(tuple(cs))),
               st.lists(clauses(type_, depth - 1), min_size=1, max_size=2).map(
                   lambda cs: AllOf(tuple(cs)))]
    chains = [(code, TARGETS[(type_, code)]) for code in PARAMS[type_]
              if (type_, code) in TARGETS]
    if chains:
        options.append(st.sampled_from(chains).flatmap(
            lambda ct: st.tuples(*(clauses(t, depth - 1) for t in ct[1])).map(
                lambda inner, ct=ct: Chain(ct[0], tuple(zip(ct[1], inner, strict=True))))))
    has = [(src, code) for (src, code), targets in TARGETS.items() if type_ in targets]
    if has:
        options.append(st.sampled_from(has).flatmap(
            lambda sc: clauses(sc[0], depth - 1).map(
                lambda inner, sc=sc: Has(sc[0], sc[1], inner))))
    return st.one_of(*options)


@cache
def sort_keys(type_: str) -> st.SearchStrategy[tuple[SortKey, ...]]:
    key = st.builds(lambda code, desc: SortKey(code, PARAMS[type_].get(code, "token"), desc),
                    st.sampled_from((*sorted(PARAMS[type_]), "_id")), st.booleans())
    return st.lists(key, max_size=2, unique_by=lambda k: k.param).map(tuple)


@cache
def includes(type_: str) -> st.SearchStrategy[tuple[tuple[Include, ...], tuple[Include, ...]]]:
    fwd = [Include(src, (code,), None, it) for (src, code) in TARGETS for it in (False, True)]
    rev = [Include(src, (code,), target, it) for (src, code), targets in TARGETS.items()
           for target in (None, *targets) for it in (False, True)]
    return st.tuples(st.lists(st.sampled_from(fwd), max_size=2).map(tuple),
                     st.lists(st.sampled_from(rev), max_size=2).map(tuple))
