"""Conditional interactions: create (`If-None-Exist`), update (`PUT Type?criteria`), patch
(`PATCH Type?criteria`), delete (`DELETE Type?criteria`, single or multiple), and
`find_matches`, which transaction bundles use to resolve conditional references
(`Patient?identifier=...`).

Criteria are parsed strictly: an unknown or malformed parameter is a 400, never silently
dropped (a dropped criterion would widen the match, and a conditional write on a wider
match is a wrong write). Each interaction searches and writes inside ONE unit of work, so
the search sees the unit's own writes and no other writer slips in between: the SQLite
store has one writer (BEGIN IMMEDIATE), so concurrent conditional creates with the same
criteria serialise and create exactly one resource. A create also claims the unique key
`Type?<sorted criteria>` (`UnitOfWork.put(unique_keys=...)`) so stores with concurrent
writers (MongoDB) close the same race with a unique index; losing that race answers with
the winner, as if the search had found it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from fhirpm.errors import Category, FhirError
from fhirpm.repository.access import search_guard
from fhirpm.repository.interactions import (
    FhirRequest,
    FhirResponse,
    Interactions,
    _create,
    add_route,
    write_response,
)
from fhirpm.repository.search import parse_request, run
from fhirpm.repository.service import WriteResult, check_body, check_type, version_headers
from fhirpm.search.parse import PASSTHROUGH, RESULT_PARAMS
from fhirpm.storage.port import UniqueKeyTaken

if TYPE_CHECKING:
    from fhirpm.storage.port import ResourceVersion, UnitOfWork

DELETE_MODES = ("single", "multiple")


def install(interactions: Interactions, delete_mode: str = "single") -> None:
    """Claim the conditional shapes. `delete_mode`: "single" answers 412 when criteria
    match several resources; "multiple" deletes them all (at most `max_count`)."""
    if delete_mode not in DELETE_MODES:
        raise ValueError(f"delete_mode must be one of {DELETE_MODES}")
    interactions.features.update(conditionalCreate=True, conditionalUpdate=True,
                                 conditionalPatch=True, conditionalDelete=delete_mode)
    add_route("T", "POST", conditional_create)
    add_route("T", "PUT", conditional_update)
    add_route("T", "PATCH", conditional_patch)
    add_route("T", "DELETE", conditional_delete)


async def find_matches(ix: Interactions, type: str, criteria: str,
                       uow: UnitOfWork | None, *, limit: int = 2,
                       base: str = "", principal: Any = None) -> list[ResourceVersion]:
    """The current versions of `type` matching `criteria` (a query string without `?`).

    Searches inside `uow` when given (so a transaction sees its own writes). Criteria are
    parsed strictly: an unknown or malformed parameter raises FhirError (400), never
    widens the match. Returns at most `limit` versions (default 2: enough to tell none,
    one and several). `base`: the server's base URL, so absolute references to it count
    as local. `principal`: whose request this is (FhirRequest.principal): the match is
    confined to what they may search.
    """
    matches, _ = await _find(ix, type, _criteria(criteria), uow, limit, base, principal)
    return matches


def _criteria(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text.lstrip("?"), keep_blank_values=True)


async def _find(ix: Interactions, type: str, params: list[tuple[str, str]],
                uow: UnitOfWork | None, limit: int, base: str,
                principal: Any) -> tuple[list[ResourceVersion], str]:
    """(matches, the unique key of these criteria)."""
    check_type(type)
    criteria = [(k, v) for k, v in params if k.split(":", 1)[0] not in RESULT_PARAMS
                and k not in PASSTHROUGH]
    if not criteria:
        raise FhirError(Category.INVALID, "Conditional criteria are empty: they would match "
                        "every resource", expression=("criteria",))
    req = FhirRequest("GET", type, base, tuple(criteria), uow=uow)
    parsed = await parse_request(ix, req, [type], criteria, strict=True)
    query = replace(parsed.query, count=limit, total="none", sort=(), include=(),
                    revinclude=(), cursor=None)
    guard = search_guard(ix, principal, query, base=base)  # only what the caller may see
    result = await run(ix, req, guard.query if guard else query)
    key = f"{type}?{urlencode(sorted(parsed.applied))}"
    if guard is not None and guard.query != query:  # confined criteria are other criteria
        key += "#" + hashlib.sha256(repr(guard.query.where).encode()).hexdigest()[:32]
    return result.matches, key


def _url_criteria(req: FhirRequest) -> list[tuple[str, str]]:
    return [(k, v) for k, v in req.params if k not in PASSTHROUGH]


def _too_many(type: str, what: str) -> FhirError:
    return FhirError(Category.MULTIPLE_MATCHES,
                     f"The criteria match several {type} resources; {what} needs exactly one "
                     "(make the criteria more selective)")


# -- create ---------------------------------------------------------------------------------


async def conditional_create(ix: Interactions, req: FhirRequest,
                             parts: list[str]) -> FhirResponse:
    criteria = req.headers.get("if-none-exist")
    if criteria is None:
        return await _create(ix, req, parts)
    type_ = parts[0]
    body = req.parsed_body()
    check_body(type_, body)
    async with ix.repo.unit(req.uow) as unit:
        matches, key = await _find(ix, type_, _criteria(criteria), unit, 2, req.base,
                                   req.principal)
        if len(matches) > 1:
            raise _too_many(type_, "a conditional create")
        if matches:
            return _existing(req, matches[0])
        try:
            result = await ix.repo.create(type_, body, uow=unit, id=req.assigned_id,
                                          unique_keys=(key,))
        except UniqueKeyTaken as taken:
            if taken.holder is None:
                raise FhirError(Category.CONFLICT, "A concurrent conditional create with the "
                                "same criteria won; retry") from None
            return _existing(req, await ix.repo.read(*taken.holder))
    return write_response(req, result)


def _existing(req: FhirRequest, found: ResourceVersion) -> FhirResponse:
    """200 with the resource that already matches (nothing written)."""
    response = write_response(req, WriteResult(found, created=False, changed=False))
    response.headers["Location"] = f"{req.base}/{found.type}/{found.id}"
    return response


# -- update and patch -------------------------------------------------------------------------


async def conditional_update(ix: Interactions, req: FhirRequest,
                             parts: list[str]) -> FhirResponse:
    type_ = parts[0]
    body = req.parsed_body()
    check_body(type_, body)
    body_id = body.get("id")
    async with ix.repo.unit(req.uow) as unit:
        matches, key = await _find(ix, type_, _url_criteria(req), unit, 2, req.base,
                                   req.principal)
        if len(matches) > 1:
            raise _too_many(type_, "a conditional update")
        if matches:
            found = matches[0]
            if body_id is not None and body_id != found.id:
                raise FhirError(Category.INVALID,
                                f"The body's id {body_id!r} is not the matching resource's "
                                f"id {found.id!r}", expression=(f"{type_}.id",))
            return await ix.dispatch(replace(req, method="PUT", path=f"{type_}/{found.id}",
                                             params=(), resource={**body, "id": found.id},
                                             body=None, uow=unit))
        if body_id is not None:
            current = await unit.current(type_, body_id)
            if current is not None and not current.deleted:
                raise FhirError(Category.CONFLICT,
                                f"{type_}/{body_id} exists but does not match the criteria")
            return await ix.dispatch(replace(req, method="PUT", path=f"{type_}/{body_id}",
                                             params=(), resource=body, body=None, uow=unit))
        result = await ix.repo.create(type_, body, uow=unit, unique_keys=(key,))
        return write_response(req, result)


async def conditional_patch(ix: Interactions, req: FhirRequest,
                            parts: list[str]) -> FhirResponse:
    type_ = parts[0]
    async with ix.repo.unit(req.uow) as unit:
        matches, _ = await _find(ix, type_, _url_criteria(req), unit, 2, req.base,
                                   req.principal)
        if len(matches) > 1:
            raise _too_many(type_, "a conditional patch")
        if not matches:
            raise FhirError(Category.NOT_FOUND, f"No {type_} matches the criteria")
        return await ix.dispatch(replace(req, path=f"{type_}/{matches[0].id}", params=(),
                                         uow=unit))


# -- delete -----------------------------------------------------------------------------------


async def conditional_delete(ix: Interactions, req: FhirRequest,
                             parts: list[str]) -> FhirResponse:
    type_ = parts[0]
    mode = ix.features.get("conditionalDelete", "single")
    limit = ix.max_count + 1 if mode == "multiple" else 2
    async with ix.repo.unit(req.uow) as unit:
        matches, _ = await _find(ix, type_, _url_criteria(req), unit, limit, req.base,
                                 req.principal)
        if len(matches) > 1 and mode == "single":
            raise _too_many(type_, "a conditional delete")
        if len(matches) >= limit:
            raise FhirError(Category.TOO_COSTLY,
                            f"The criteria match more than {ix.max_count} {type_} resources; "
                            "delete them in smaller groups")
        last = None
        for found in matches:
            result = await ix.repo.delete(type_, found.id, uow=unit)
            last = result.version if result else last
    headers = version_headers(last) if last is not None and len(matches) == 1 else {}
    return FhirResponse(204, headers=headers, version=last)
