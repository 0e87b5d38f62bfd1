"""The search interaction: type (`GET [base]/Patient?...`), system (`GET [base]?_type=...`),
compartment (`GET [base]/Patient/1/Observation?...`), each also as `POST .../_search` with
a form body. Answers a searchset Bundle whose entries embed the stored bytes.

Owns: where the parameters come from (query string + form body), strict vs lenient
handling (`Prefer: handling=strict`), compartments, value sets for `:in`, the Bundle
(`search.mode` match / include / outcome, `total`, links `self` `first` `next` `previous`,
`_summary` and `_elements` through `fhir.shaping`). The `self` link lists exactly the
parameters that were applied; ignored ones are reported in an OperationOutcome entry.
Parsing is `search.parse`'s business, running the query the store's. (It lives in the
repository layer because it answers FhirResponses and reads the store; `fhirpm.search`
stays below storage.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fhirpm.errors import Category, FhirError, Issue, operation_outcome
from fhirpm.fhir import jsonio, shaping
from fhirpm.fhir.bundles import bundle, page_url
from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.repository.service import check_type, now_instant
from fhirpm.search.parse import PASSTHROUGH, Parsed, SearchParser, split_values, unescape
from fhirpm.search.query import (
    AnyOf,
    Clause,
    Param,
    RefPred,
    SearchQuery,
    SearchResult,
    TokenInPred,
    TokenPred,
    UriPred,
)
from fhirpm.search.registry import Registry

if TYPE_CHECKING:
    from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
    from fhirpm.storage.port import ResourceVersion

FORM = "application/x-www-form-urlencoded"


def install(interactions: Interactions) -> None:
    """Serve every search shape through `search_handler`."""
    interactions.search_handler = search_handler


async def search_handler(ix: Interactions, req: FhirRequest, parts: list[str]) -> FhirResponse:
    from fhirpm.repository.access import search_guard
    from fhirpm.repository.interactions import FhirResponse

    params = [*req.params, *_form_params(req)]
    types, path, extra = _scope(ix.repo.registry, parts, params)
    parsed = await parse_request(ix, req, types, params, extra)
    guard = search_guard(ix, req.principal, parsed.query, base=req.base)
    if guard is not None:  # the caller's reach, ANDed in (links show only `applied`)
        parsed.query = guard.query
        parsed.issues.extend(guard.issues)
    result = await run(ix, req, parsed.query)
    if guard is not None:
        guard.filter(result)
    return FhirResponse(200, searchset(req, path, parsed, result))


def strict_handling(req: FhirRequest) -> bool:
    prefer = req.headers.get("prefer") or ""
    return any(p.strip().replace(" ", "") == "handling=strict" for p in prefer.split(","))


async def parse_request(ix: Interactions, req: FhirRequest, types: list[str],
                        params: list[tuple[str, str]], extra: Sequence[Clause] = (), *,
                        strict: bool | None = None) -> Parsed:
    """Parse `params` for `types` with everything the parser needs from the server."""
    from fhirpm.repository import reindex

    parser = SearchParser(ix.repo.registry, base=req.base, default_count=ix.default_count,
                          max_count=ix.max_count,
                          valuesets=await _valuesets(ix, req, params),
                          pending=await reindex.pending(ix))
    return parser.parse(types, params, strict=strict_handling(req) if strict is None else strict,
                        extra=extra)


async def run(ix: Interactions, req: FhirRequest, query: SearchQuery) -> SearchResult:
    """Run inside the request's unit of work when it has one (a transaction's GET)."""
    if req.uow is not None:
        return await req.uow.search(query)
    return await ix.repo.store.search(query)


# -- scope: which types, and the compartment ------------------------------------------------


def _form_params(req: FhirRequest) -> list[tuple[str, str]]:
    if req.method != "POST" or not req.body:
        return []
    media = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != FORM:
        raise FhirError(Category.UNSUPPORTED_MEDIA,
                        f"POST _search takes a {FORM} body, not {media or 'no Content-Type'}")
    try:
        return parse_qsl(req.body.decode("utf-8"), keep_blank_values=True,
                         strict_parsing=False)
    except UnicodeDecodeError:
        raise FhirError(Category.STRUCTURE, "The form body is not UTF-8") from None


def _scope(registry: Registry, parts: list[str],
           params: list[tuple[str, str]]) -> tuple[list[str], str, list[Clause]]:
    """(types searched, path for links, compartment clauses)."""
    if not parts or parts == ["_search"]:
        return _system_types(params), "", []
    if len(parts) == 3:
        return _compartment(registry, *parts)
    check_type(parts[0])
    return [parts[0]], parts[0], []


def _system_types(params: list[tuple[str, str]]) -> list[str]:
    types: list[str] = []
    for key, value in params:
        if key == "_type":
            for name in value.split(","):
                if name.strip() not in RESOURCE_TYPES:
                    raise FhirError(Category.INVALID, f"_type: {name!r} is not a resource type",
                                    expression=("_type",))
                types.append(name.strip())
    return sorted(set(types))


@cache
def compartments() -> dict[str, dict[str, list[str]]]:
    table = resources.files("fhirpm.fhir").joinpath("tables/compartments.json")
    return json.loads(table.read_bytes())


def _compartment(registry: Registry, owner: str, id: str,
                 type_: str) -> tuple[list[str], str, list[Clause]]:
    members = compartments().get(owner)
    if members is None:
        raise FhirError(Category.NOT_FOUND, f"{owner} is not a compartment "
                        f"(compartments: {', '.join(sorted(compartments()))})")
    types = sorted(members) if type_ == "*" else [type_]
    if type_ != "*":
        check_type(type_)
        if type_ not in members:
            raise FhirError(Category.NOT_FOUND, f"{type_} is not in the {owner} compartment")
    codes = sorted({c for t in types for c in members[t]
                    if any(_is_reference(registry, t2, c) for t2 in types)})
    ref = RefPred(owner, id)
    clauses: list[Clause] = [Param(c, "reference", (ref,)) for c in codes]
    if owner in types:  # the owner is in its own compartment
        clauses.append(Param("_id", "token", (TokenPred(id),)))
    return types, f"{owner}/{id}/{type_}", [AnyOf(tuple(clauses))]


def _is_reference(registry: Registry, type_: str, code: str) -> bool:
    found = registry.get(type_, code)
    return found is not None and found.type == "reference"


# -- value sets for :in / :not-in ------------------------------------------------------------


async def _valuesets(ix: Interactions, req: FhirRequest,
                     params: list[tuple[str, str]]) -> dict[str, TokenInPred]:
    urls = {unescape(v) for key, value in params
            if key.endswith((":in", ":not-in")) for v in split_values(value) if v}
    found: dict[str, TokenInPred] = {}
    for url in sorted(urls):
        resource = await _valueset(ix, req, url)
        if resource is not None:
            found[url] = expand(resource)
    return found


async def _valueset(ix: Interactions, req: FhirRequest, url: str) -> dict[str, Any] | None:
    if url.startswith("ValueSet/"):
        version = await ix.repo.store.read("ValueSet", url.split("/", 1)[1])
        return jsonio.loads(version.body) if version and not version.deleted else None
    query = SearchQuery(("ValueSet",), (Param("url", "uri", (UriPred(url.split("|")[0]),)),),
                        count=1)
    result = await run(ix, req, query)
    return jsonio.loads(result.matches[0].body) if result.matches else None


def expand(valueset: dict[str, Any]) -> TokenInPred:
    """The codes a ValueSet names: compose.include concepts (a whole system when an include
    lists no concepts or filters), minus compose.exclude concepts, plus expansion.contains.
    Filters and included value sets are not evaluated."""
    codes: set[tuple[str | None, str]] = set()
    systems: set[str] = set()
    compose = valueset.get("compose") or {}
    for inc in compose.get("include") or ():
        system = inc.get("system")
        concepts = inc.get("concept") or ()
        for concept in concepts:
            if isinstance(concept.get("code"), str):
                codes.add((system, concept["code"]))
        if system and not concepts and not inc.get("filter") and not inc.get("valueSet"):
            systems.add(system)
    for exc in compose.get("exclude") or ():
        for concept in exc.get("concept") or ():
            codes.discard((exc.get("system"), concept.get("code")))

    def walk(contains: list[dict[str, Any]]) -> None:
        for item in contains:
            if isinstance(item.get("code"), str):
                codes.add((item.get("system"), item["code"]))
            walk(item.get("contains") or [])

    walk((valueset.get("expansion") or {}).get("contains") or [])
    return TokenInPred(tuple(sorted(codes, key=lambda c: (c[0] or "", c[1]))),
                       tuple(sorted(systems)))


# -- the Bundle --------------------------------------------------------------------------------


def searchset(req: FhirRequest, path: str, parsed: Parsed, result: SearchResult) -> bytes:
    entries = [_entry(req, v, "match", parsed) for v in result.matches]
    entries += [_entry(req, v, "include", None) for v in result.included]
    issues = list(parsed.issues)
    if result.include_truncated:
        issues.append(Issue("too-costly", f"Only the first {parsed.query.max_include} "
                            "included resources are returned", severity="warning"))
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    return bundle("searchset", entries, total=result.total,
                  links=_links(req, path, parsed, result), timestamp=now_instant())


def _entry(req: FhirRequest, v: ResourceVersion, mode: str,
           parsed: Parsed | None) -> dict[str, Any]:
    body = v.body
    if parsed is not None and (parsed.summary not in (None, "false", "count")
                               or parsed.elements):
        body = shaping.shape(body, parsed.summary, parsed.elements, v.type)
    return {"fullUrl": f"{req.base}/{v.type}/{v.id}", "resource": jsonio.raw(body),
            "search": {"mode": mode}}


def _links(req: FhirRequest, path: str, parsed: Parsed,
           result: SearchResult) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in parsed.applied if k != "_cursor"]
    kept += [(k, v) for k, v in req.params if k in PASSTHROUGH]
    here = [(k, v) for k, v in parsed.applied if k == "_cursor"]
    links = [("self", page_url(req.base, path, kept + here))]
    if parsed.query.count > 0:
        for relation, token in (("first", result.first_cursor),
                                ("previous", result.prev_cursor),
                                ("next", result.next_cursor)):
            if token:
                links.append((relation, page_url(req.base, path, [*kept, ("_cursor", token)])))
    return links
