"""Search parameters (a query string's pairs) -> a `SearchQuery`, against the registry.

Lenient by default: a parameter that is unknown, malformed or uses an unsupported modifier
is left out and reported as a warning (the handler returns them in an OperationOutcome
entry); `strict=True` (`Prefer: handling=strict`) raises one FhirError (400) listing every
problem instead. Either way `applied` lists exactly the parameters that shaped the result,
for the bundle's `self` link.

Grammar handled here: `code[:modifier]=v1,v2` (comma = OR, `\\,` `\\|` `\\$` `\\\\`
escapes; repeating a parameter = AND), chains `ref[:Type].ref2.code=` of any depth,
`_has:Type:ref:code=` (nested), composite `a$b`, prefixes `eq ne gt lt ge le sa eb ap`
on number, date and quantity, and the result parameters `_sort _count _total _summary
_elements _include _revinclude _contained _cursor`. Value sets for `:in`/`:not-in` are
expanded by the caller beforehand and passed in as `valuesets` (url -> TokenInPred).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from fhirpm.errors import Category, FhirError, Issue
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.search.dates import date_range
from fhirpm.search.normalize import decimal_bounds, fold, split_reference
from fhirpm.search.query import (
    PREFIXES,
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
)
from fhirpm.search.registry import Registry, SearchParamDef

SUMMARY_MODES = ("true", "text", "data", "count", "false")
TOTAL_MODES = ("none", "estimate", "accurate")
# Handled by the HTTP edge or the bundle, never search criteria: kept in links untouched.
PASSTHROUGH = frozenset({"_format", "_pretty"})
RESULT_PARAMS = frozenset({"_sort", "_count", "_total", "_summary", "_elements", "_include",
                           "_revinclude", "_contained", "_containedType", "_cursor", "_type"})
_UNSUPPORTED = frozenset({"_text", "_content", "_list", "_query", "_filter"})
_SORTABLE = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri"})
_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "in", "not-in", "missing"},
    "reference": {"identifier", "missing"},
    "date": {"missing"}, "number": {"missing"}, "quantity": {"missing"},
    "uri": {"below", "above", "missing"}, "composite": {"missing"},
}
_SPLIT = re.compile(r"(?<!\\),")


class BadParam(Exception):
    """One parameter that cannot be honoured; becomes a warning or (strict) an error."""

    def __init__(self, message: str, category: Category = Category.INVALID) -> None:
        super().__init__(message)
        self.category = category


@dataclass
class Parsed:
    query: SearchQuery
    applied: list[tuple[str, str]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None


def split_values(value: str) -> list[str]:
    """Comma-separated alternatives, honouring `\\,`."""
    return [v for v in _SPLIT.split(value)]


def unescape(value: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", value)


def split_unescaped(value: str, sep: str) -> list[str]:
    return [unescape(p) for p in re.split(rf"(?<!\\){re.escape(sep)}", value)]


class SearchParser:
    def __init__(self, registry: Registry, *, base: str = "", default_count: int = 20,
                 max_count: int = 1000, valuesets: Mapping[str, TokenInPred] | None = None,
                 pending: Collection[str] = (), now: datetime | None = None) -> None:
        self.registry = registry
        self.base = base.rstrip("/")
        self.default_count = default_count
        self.max_count = max_count
        self.valuesets = valuesets or {}
        self.pending = frozenset(pending)  # urls of parameters still being reindexed
        self.now = now or datetime.now(UTC)

    # -- entry point ----------------------------------------------------------------

    def parse(self, types: Sequence[str], params: Sequence[tuple[str, str]], *,
              strict: bool = False, extra: Sequence[Clause] = ()) -> Parsed:
        """`types`: the searched types (empty: every type). `extra`: clauses the caller
        adds (a compartment), always applied."""
        out = Parsed(SearchQuery(tuple(types)))
        problems: list[tuple[str, BadParam]] = []
        where: list[Clause] = list(extra)
        ctx = list(types) or None
        results: dict[str, list[str]] = {}
        for key, value in params:
            name = key.split(":", 1)[0]
            if name in PASSTHROUGH:
                continue
            if name in RESULT_PARAMS:
                results.setdefault(key, []).append(value)
                continue
            try:
                if name in _UNSUPPORTED:
                    raise BadParam(f"{name} is not supported", Category.NOT_SUPPORTED)
                where.append(self.clause(ctx, key, value))
                out.applied.append((key, value))
            except BadParam as bad:
                problems.append((key, bad))
        query_fields = self._results(ctx, results, out, problems)
        out.query = SearchQuery(tuple(types), tuple(where), **query_fields,
                                aliases=self.registry.aliases())
        out.issues = [Issue(bad.category.code, f"{key}: {bad}", severity="warning",
                            expression=(key,)) for key, bad in problems]
        if strict and problems:
            issues = [Issue(i.code, i.diagnostics, "error", i.expression) for i in out.issues]
            raise FhirError(problems[0][1].category, issues[0].diagnostics, issues=issues)
        return out

    # -- criteria -------------------------------------------------------------------

    def clause(self, types: list[str] | None, key: str, value: str) -> Clause:
        """One criterion (`key=value`) on resources of `types` (None: every type)."""
        if key.startswith("_has:"):
            return self._has(types, key, value)
        segments = key.split(".")
        if len(segments) > 1:
            return self._chain(types, segments, value)
        code, _, modifier = key.partition(":")
        definition = self._definition(types, code)
        return self._terminal(types, definition, modifier, value)

    def _definition(self, types: list[str] | None, code: str) -> SearchParamDef:
        found: SearchParamDef | None = None
        for type_ in types or ("Resource",):
            d = self.registry.get(type_, code)
            if d is None or d.url in self.pending:
                where = f"{type_}" if types else "every type (use _type)"
                why = " (being reindexed)" if d is not None else ""
                raise BadParam(f"unknown search parameter {code!r} for {where}{why}")
            if found is not None and d.type != found.type:
                raise BadParam(f"{code!r} has different types across {', '.join(types or ())}")
            found = d
        assert found is not None
        return found

    def _terminal(self, types: list[str] | None, d: SearchParamDef, modifier: str,
                  value: str) -> Clause:
        allowed = _MODIFIERS.get(d.type, set())
        if modifier and modifier not in allowed and not (
                d.type == "reference" and modifier in RESOURCE_TYPES):
            raise BadParam(f"modifier :{modifier} is not supported on {d.type} parameter "
                           f"{d.code!r}", Category.NOT_SUPPORTED)
        if d.type == "special":
            raise BadParam(f"special parameter {d.code!r} is not supported",
                           Category.NOT_SUPPORTED)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise BadParam(f":missing takes true or false, not {value!r}")
            if d.type == "composite":
                raise BadParam(":missing is not supported on composite parameters",
                               Category.NOT_SUPPORTED)
            return Missing(d.code, d.type, value == "true")
        alternatives = split_values(value)
        if not value or any(v == "" for v in alternatives):
            raise BadParam("empty value")
        if d.type == "composite":
            return self._composite(types, d, alternatives)
        if modifier == "of-type":
            preds: tuple[Pred, ...] = tuple(_of_type(v) for v in alternatives)
            return Param(f"{d.code}:of-type", "token", preds)
        preds = tuple(self._pred(d, modifier, v, types) for v in alternatives)
        if modifier in ("not", "not-in"):
            return Not(Param(d.code, d.type, preds))
        return Param(d.code, d.type, preds)

    def _pred(self, d: SearchParamDef, modifier: str, raw: str,
              types: list[str] | None) -> Pred:
        match d.type:
            case "string":
                text = unescape(raw)
                if modifier == "exact":
                    return StringPred(text, "exact")
                return StringPred(fold(text), "contains" if modifier == "contains" else "start")
            case "token":
                if modifier == "text":
                    return TokenTextPred(fold(unescape(raw)))
                if modifier in ("in", "not-in"):
                    return self._valueset(unescape(raw))
                return _token(raw)
            case "reference":
                return self._reference(d, modifier, raw, types)
            case "date":
                return self._date(raw)
            case "number":
                prefix, rest = _prefix(raw)
                return self._number(prefix, rest)
            case "quantity":
                return self._quantity(raw)
            case "uri":
                return _uri(unescape(raw), modifier)
        raise BadParam(f"parameter type {d.type!r} is not supported", Category.NOT_SUPPORTED)

    def _valueset(self, url: str) -> TokenInPred:
        found = self.valuesets.get(url)
        if found is None:
            raise BadParam(f"value set {url!r} is not held by this server")
        return found

    def _reference(self, d: SearchParamDef, modifier: str, raw: str,
                   types: list[str] | None) -> Pred:
        if modifier == "identifier":
            return IdentifierPred(_token(raw))
        text = unescape(raw)
        if self.base and text.startswith(self.base + "/"):
            text = text[len(self.base) + 1:]  # our own base: a local reference
        if modifier:  # :Type
            if d.target and modifier not in d.target:
                raise BadParam(f"{d.code!r} cannot refer to {modifier}")
            return RefPred(modifier, text.rsplit("/", 1)[-1] if "/" in text else text)
        type_, id_, url, version = split_reference(text)
        if url is not None and ("://" in text or text.startswith("urn:")):
            return RefPred(url=url, version=version)
        if type_ is not None and id_ is not None:
            return RefPred(type_, id_)
        if "/" in text or not text:
            raise BadParam(f"{raw!r} is not a reference (Type/id, id or an absolute URL)")
        only = d.target[0] if len(d.target) == 1 else None
        return RefPred(only, text)

    def _date(self, raw: str) -> DatePred:
        prefix, rest = _prefix(raw)
        # an unencoded `+` of a zone offset arrives as a space (form decoding)
        found = date_range(rest.replace(" ", "+"))
        if found is None:
            raise BadParam(f"{raw!r} is not a FHIR date, dateTime or instant")
        lo, hi = found
        if prefix == "ap":
            now = int(self.now.timestamp() * 1_000_000)
            margin = max(abs(now - lo), abs(hi - now)) // 10
            lo, hi = lo - margin, hi + margin
        return DatePred(prefix, lo, hi)

    def _number(self, prefix: str, text: str) -> NumberPred:
        bounds = decimal_bounds(text) if _is_decimal(text) else None
        if bounds is None:
            raise BadParam(f"{text!r} is not a number")
        value, lo, hi = bounds
        if prefix == "ap":
            margin = abs(value) / 10
            lo, hi = min(lo, value - margin), max(hi, value + margin)
        return NumberPred(prefix, value, lo, hi)

    def _quantity(self, raw: str) -> QuantityPred:
        prefix, rest = _prefix(raw)
        parts = split_unescaped(rest, "|")
        if len(parts) not in (1, 3):
            raise BadParam(f"{raw!r} is not a quantity (number or number|system|code)")
        n = self._number(prefix, parts[0])
        system = parts[1] or None if len(parts) == 3 else None
        code = parts[2] or None if len(parts) == 3 else None
        return QuantityPred(prefix, n.value, n.lo, n.hi, system, code)

    def _composite(self, types: list[str] | None, d: SearchParamDef,
                   alternatives: list[str]) -> Clause:
        parts: list[SearchParamDef] = []
        for component in d.component:
            found = self.registry.by_url.get(component.definition)
            if found is None:
                raise BadParam(f"composite {d.code!r}: component {component.definition} is "
                               "not known", Category.NOT_SUPPORTED)
            parts.append(found)
        options: list[Clause] = []
        for alternative in alternatives:
            values = re.split(r"(?<!\\)\$", alternative)
            if len(values) != len(parts):
                raise BadParam(f"{d.code!r} takes {len(parts)} values joined by $")
            options.append(AllOf(tuple(
                Param(p.code, p.type, (self._pred(p, "", v, types),))
                for p, v in zip(parts, values, strict=True))))
        return options[0] if len(options) == 1 else AnyOf(tuple(options))

    def _chain(self, types: list[str] | None, segments: list[str], value: str) -> Clause:
        head, rest = segments[0], segments[1:]
        code, _, type_modifier = head.partition(":")
        d = self._definition(types, code)
        if d.type != "reference":
            raise BadParam(f"{code!r} is not a reference parameter and cannot be chained")
        if type_modifier and type_modifier not in RESOURCE_TYPES:
            raise BadParam(f"{type_modifier!r} is not a resource type")
        candidates = [type_modifier] if type_modifier else list(d.target)
        if not candidates:
            raise BadParam(f"chain through {code!r} needs a type: {code}:Type.…")
        targets: list[tuple[str, Clause]] = []
        last: BadParam | None = None
        for target in candidates:
            try:
                targets.append((target, self.clause([target], ".".join(rest), value)))
            except BadParam as bad:
                last = bad
        if not targets:
            raise last or BadParam(f"cannot chain through {code!r}")
        return Chain(code, tuple(targets))

    def _has(self, types: list[str] | None, key: str, value: str) -> Clause:
        parts = key.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise BadParam("_has takes _has:Type:reference:parameter=value")
        _, source, ref, rest = parts
        if source not in RESOURCE_TYPES:
            raise BadParam(f"{source!r} is not a resource type")
        d = self._definition([source], ref)
        if d.type != "reference":
            raise BadParam(f"{ref!r} is not a reference parameter of {source}")
        if types and d.target and not set(types) & set(d.target):
            raise BadParam(f"{source}.{ref} cannot refer to {', '.join(types)}")
        return Has(source, ref, self.clause([source], rest, value))

    # -- result parameters ----------------------------------------------------------

    def _results(self, types: list[str] | None, given: dict[str, list[str]], out: Parsed,
                 problems: list[tuple[str, BadParam]]) -> dict[str, object]:
        fields: dict[str, object] = {"count": self.default_count, "total": "estimate"}
        handlers = {"_sort": self._sort, "_count": self._count, "_total": self._total,
                    "_summary": self._summary, "_elements": self._elements,
                    "_contained": self._contained, "_cursor": self._cursor,
                    "_include": self._include, "_revinclude": self._include,
                    "_type": lambda *a: None, "_containedType": self._contained}
        for key, values in given.items():
            name = key.split(":", 1)[0]
            for value in values:
                try:
                    applied = handlers[name](types, key, value, fields, out)
                    out.applied.append((key, applied if applied is not None else value))
                except BadParam as bad:
                    problems.append((key, bad))
        if out.summary == "count":
            fields["count"] = 0
            fields["total"] = "accurate"
        return fields

    def _sort(self, types, key, value, fields, out) -> None:
        if key != "_sort" or "sort" in fields:
            raise BadParam("_sort may be given once, without modifiers")
        sort: list[SortKey] = []
        for item in value.split(","):
            desc = item.startswith("-")
            code = item[1:] if desc else item
            d = self._definition(types, code)
            if d.type not in _SORTABLE:
                raise BadParam(f"cannot sort by {d.type} parameter {code!r}")
            sort.append(SortKey(code, d.type, desc))
        fields["sort"] = tuple(sort)

    def _count(self, types, key, value, fields, out) -> str:
        if not value.isdigit():
            raise BadParam(f"_count must be a non-negative integer, not {value!r}")
        fields["count"] = min(int(value), self.max_count)
        return str(fields["count"])

    def _total(self, types, key, value, fields, out) -> None:
        if value not in TOTAL_MODES:
            raise BadParam(f"_total must be one of {', '.join(TOTAL_MODES)}")
        fields["total"] = value

    def _summary(self, types, key, value, fields, out) -> None:
        if value not in SUMMARY_MODES:
            raise BadParam(f"_summary must be one of {', '.join(SUMMARY_MODES)}")
        if out.elements:
            raise BadParam("_summary cannot be combined with _elements")
        out.summary = value

    def _elements(self, types, key, value, fields, out) -> None:
        if out.summary not in (None, "false"):
            raise BadParam("_elements cannot be combined with _summary")
        out.elements = [*(out.elements or []), *(e.strip() for e in value.split(",")
                                                 if e.strip())]

    def _contained(self, types, key, value, fields, out) -> None:
        if (key, value) not in (("_contained", "false"), ("_containedType", "container")):
            raise BadParam(f"{key}={value} is not supported (contained resources are "
                           "returned inside their container)", Category.NOT_SUPPORTED)

    def _cursor(self, types, key, value, fields, out) -> None:
        fields["cursor"] = value

    def _include(self, types, key, value, fields, out) -> None:
        name, _, modifier = key.partition(":")
        if modifier not in ("", "iterate", "recurse"):
            raise BadParam(f"{key}: unknown modifier :{modifier}")
        parts = value.split(":")
        if len(parts) not in (2, 3) or parts[0] not in RESOURCE_TYPES:
            raise BadParam(f"{value!r} is not Type:parameter[:targetType]")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if target is not None and target not in RESOURCE_TYPES:
            raise BadParam(f"{target!r} is not a resource type")
        params = self.registry.for_type(source)
        if code == "*":
            codes = tuple(sorted(c for c, d in params.items() if d.type == "reference"
                                 and d.url not in self.pending))
        else:
            d = params.get(code)
            if d is None or d.type != "reference" or d.url in self.pending:
                raise BadParam(f"{code!r} is not a reference parameter of {source}")
            if target is not None and d.target and target not in d.target:
                raise BadParam(f"{source}.{code} cannot refer to {target}")
            codes = (code,)
        rule = Include(source, codes, target, modifier != "")
        field_name = "include" if name == "_include" else "revinclude"
        fields[field_name] = (*fields.get(field_name, ()), rule)


# -- value syntax ---------------------------------------------------------------------------


def _prefix(raw: str) -> tuple[str, str]:
    text = unescape(raw)
    if len(text) > 2 and text[:2] in PREFIXES and (text[2].isdigit() or text[2] in "-+."):
        return text[:2], text[2:]
    return "eq", text


def _is_decimal(text: str) -> bool:
    try:
        return Decimal(text).is_finite() and text.strip() == text
    except InvalidOperation:
        return False


def _token(raw: str) -> TokenPred:
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        return TokenPred(parts[0])
    if len(parts) != 2:
        raise BadParam(f"{raw!r} is not a token (code, system|code, |code or system|)")
    system, code = parts
    if not system and not code:
        raise BadParam("a token needs a system or a code")
    if not system:
        return TokenPred(code, None, no_system=True)
    return TokenPred(code or None, system)


def _of_type(raw: str) -> TokenPred:
    parts = split_unescaped(raw, "|")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise BadParam(f"{raw!r} is not system|code|value (identifier :of-type)")
    return TokenPred(parts[2], f"{parts[0]}|{parts[1]}")


def _uri(text: str, modifier: str) -> UriPred:
    if modifier == "below":
        return UriPred(text, "below")
    if modifier == "above":  # the uri and each of its path prefixes past the authority
        authority = text.find("://")
        start = authority + 3 if authority >= 0 else 0
        ancestors = [text[:i] for i in range(start + 1, len(text)) if text[i] == "/"]
        return UriPred(text, "above", tuple(sorted({*ancestors, text})))
    return UriPred(text)
