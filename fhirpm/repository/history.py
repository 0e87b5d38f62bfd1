"""The history interaction at instance, type and system level, paged by change-log seq.

Paging uses a keyset cursor (`_cursor` = the seq below which the next page starts), so
pages never shift while other clients write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.bundles import bundle, page_url
from fhirpm.repository.service import Repository, now_instant, version_headers
from fhirpm.search.dates import parse_instant_param
from fhirpm.storage.port import HistoryQuery, ResourceVersion

if TYPE_CHECKING:
    from fhirpm.repository.interactions import FhirRequest, FhirResponse

Keep = Callable[[ResourceVersion], Awaitable[bool]]


def _int_param(req: FhirRequest, name: str, default: int | None, maximum: int) -> int | None:
    raw = req.param(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise FhirError(Category.INVALID, f"{name} must be a non-negative integer, not {raw!r}")
    return min(int(raw), maximum)


def history_query(req: FhirRequest, parts: list[str], default_count: int,
                  max_count: int) -> HistoryQuery:
    since = req.param("_since")
    at = req.param("_at")
    return HistoryQuery(
        type=parts[0] if parts[0] != "_history" else None,
        id=parts[1] if len(parts) > 2 else None,
        since=parse_instant_param("_since", since) if since else None,
        at=parse_instant_param("_at", at) if at else None,
        count=_int_param(req, "_count", default_count, max_count) or 0,
        before_seq=_int_param(req, "_cursor", None, 2**62),
    )


def history_entry(base: str, v: ResourceVersion) -> dict[str, Any]:
    url = f"{v.type}/{v.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if not v.deleted:
        entry["resource"] = jsonio.raw(v.body)
    entry["request"] = {"method": v.method, "url": v.type if v.method == "POST" else url}
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(v.method, "200 OK")
    headers = version_headers(v)
    entry["response"] = {"status": status, "etag": headers["ETag"],
                         "lastModified": v.last_updated}
    return entry


async def history_bundle(repo: Repository, req: FhirRequest, parts: list[str],
                         default_count: int = 20, max_count: int = 1000, *,
                         keep: Keep | None = None) -> FhirResponse:
    """`keep`: which versions the caller may see (fhirpm.repository.access); None: all."""
    from fhirpm.repository.interactions import FhirResponse

    query = history_query(req, parts, default_count, max_count)
    if keep is None:
        versions = await repo.history(_plus_one(query))
        has_next = len(versions) > query.count
        versions = versions[: query.count]
        next_seq = versions[-1].seq if has_next and versions else None
        total = await repo.store.history_count(query) if query.before_seq is None else None
    else:  # the log's count would tell how much the caller does not see
        versions, next_seq = await _kept_page(repo, query, keep)
        total = None
    path = "/".join(parts)
    kept = [(k, v) for k, v in req.params if k not in ("_cursor",)]
    links = [("self", page_url(req.base, path, list(req.params)))]
    if next_seq is not None:
        links.append(("next", page_url(req.base, path, [*kept, ("_cursor", str(next_seq))])))
    body = bundle("history", [history_entry(req.base, v) for v in versions], total=total,
                  links=links, timestamp=now_instant())
    return FhirResponse(200, body)


def _plus_one(q: HistoryQuery) -> HistoryQuery:
    return HistoryQuery(q.type, q.id, q.since, q.at, q.count + 1, q.before_seq)


_SCAN_BATCH = 200  # versions read per step while filtering
_SCAN_STEPS = 10  # steps per page at most; then the page ends early with a next link


async def _kept_page(repo: Repository, q: HistoryQuery,
                     keep: Keep) -> tuple[list[ResourceVersion], int | None]:
    """Up to `q.count` versions `keep` accepts, newest first, and the seq the next page
    starts below (None: nothing older is left). Reads the log in steps, so a caller who
    sees little of a busy log gets short pages rather than one unbounded scan."""
    if q.count == 0:
        return [], None
    page: list[ResourceVersion] = []
    before = q.before_seq
    for _ in range(_SCAN_STEPS):
        batch = await repo.history(HistoryQuery(q.type, q.id, q.since, q.at, _SCAN_BATCH,
                                                before))
        for version in batch:
            if await keep(version):
                if len(page) == q.count:
                    return page, page[-1].seq
                page.append(version)
        if len(batch) < _SCAN_BATCH:
            return page, None
        before = batch[-1].seq
    return page, before
