"""Repository: FHIR interactions over a ResourceStore, framework-neutral.

Each write runs in a unit of work; callers that group writes (transaction bundles) pass
their own `uow` so everything commits together. Validation and index extraction happen
here, once, before the store sees the bytes that will be served from then on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.types import is_resource_type, is_valid_id
from fhirpm.fhir.validation import Validator
from fhirpm.search.extract import Indexer
from fhirpm.search.registry import Registry
from fhirpm.search.values import IndexEntry
from fhirpm.storage.port import (
    HistoryQuery,
    ResourceStore,
    ResourceVersion,
    StoreError,
    UnitOfWork,
    VersionConflict,
)


@dataclass(frozen=True, slots=True)
class Change:
    """One resource write as a write rule sees it: the live content before and after."""

    type: str
    id: str
    method: str  # POST | PUT | PATCH | DELETE | the caller's own (merges)
    before: dict[str, Any] | None  # None: it did not exist (or was deleted)
    after: dict[str, Any] | None  # None: this write deletes it; else as stored (with meta)


class WriteRule(Protocol):
    """Keeps other resources consistent with a write, inside the writer's unit of work.

    Workflow packages register rules for the types they own (scheduling: an Appointment
    takes and frees its Slots). A rule runs after the write is validated and put, before
    the unit commits, on every path (REST, bundles, operations, HL7 v2); it may write
    through `repo` with `uow=unit` (those writes run their own rules) or raise FhirError,
    which aborts the whole unit: the write and everything the rule did."""

    async def apply(self, repo: Repository, unit: UnitOfWork, change: Change) -> None: ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: ResourceVersion
    created: bool  # a new resource (201) rather than a new version of one (200)
    changed: bool = True  # False when an update had identical content (no new version)
    # the index entries `version` was stored with (None: not extracted by this write);
    # the audit trail takes the written resource's patients from them
    entries: list[IndexEntry] | None = None


def now_instant() -> str:
    """The current time as a fixed-width FHIR instant (comparable as text)."""
    # = datetime.now(UTC) formatted "%Y-%m-%dT%H:%M:%S.%fZ"; the text up to the second is
    # made once per second (formatting it cost ~4 us, once per write and per response)
    global _second
    micros = time.time_ns() // 1000
    seconds, fraction = divmod(micros, 1_000_000)
    known = _second
    if known[0] != seconds:
        known = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{known[1]}.{fraction:06d}Z"


_second: tuple[int, str] = (-1, "")  # the last second now_instant formatted


def new_id() -> str:
    return str(uuid.uuid4())


def _content_key(resource: dict[str, Any]) -> bytes:
    """The resource without server-managed meta, for 'identical content' comparison."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    body = {k: v for k, v in resource.items() if k not in ("meta", "id")}
    if meta:
        body["meta"] = meta
    return jsonio.dumps(body, sort_keys=True)


class Repository:
    def __init__(self, store: ResourceStore, validator: Validator, indexer: Indexer,
                 registry: Registry | None = None) -> None:
        self.store = store
        self.validator = validator
        self.indexer = indexer
        # the search parameters in force (search parsing, capability, custom parameters)
        self.registry = registry if registry is not None else Registry.load_default()
        self._rules: dict[str, list[WriteRule]] = {}
        # validation and extraction done ahead, by id() of the resource dict a write will
        # be given (a large transaction's, in worker processes: fhirpm.repository.prepare)
        self.prepared: dict[int, Any] = {}

    def add_rule(self, type: str, rule: WriteRule) -> None:
        """Run `rule` on every write of `type` (see WriteRule)."""
        self._rules.setdefault(type, []).append(rule)

    # -- units of work --------------------------------------------------------------

    @asynccontextmanager
    async def unit(self, uow: UnitOfWork | None) -> AsyncIterator[UnitOfWork]:
        """Reuse the caller's unit of work, or open (and commit) a new one.

        A store may refuse at commit (MongoDB: another writer won the race) or fail; that
        reaches the client as a 409 or 503 OperationOutcome, never as a 500."""
        if uow is not None:
            yield uow
            return
        try:
            async with self.store.unit_of_work() as own:
                yield own
        except VersionConflict as exc:
            raise FhirError(Category.CONFLICT, f"Concurrent write, try again: {exc}") from None
        except StoreError as exc:
            raise FhirError(Category.UNAVAILABLE, f"The store failed: {exc}") from None

    # -- reads ----------------------------------------------------------------------

    async def read(self, type: str, id: str) -> ResourceVersion:
        check_type(type)
        found = await self.store.read(type, id)
        if found is None:
            raise FhirError(Category.NOT_FOUND, f"{type}/{id} is not known")
        if found.deleted:
            raise FhirError(Category.DELETED, f"{type}/{id} was deleted",
                            headers=version_headers(found))
        return found

    async def vread(self, type: str, id: str, version: str) -> ResourceVersion:
        check_type(type)
        if not version.isdigit():
            raise FhirError(Category.NOT_FOUND, f"{type}/{id} has no version {version!r}")
        found = await self.store.vread(type, id, int(version))
        if found is None:
            if await self.store.read(type, id) is None:
                raise FhirError(Category.NOT_FOUND, f"{type}/{id} is not known")
            raise FhirError(Category.NOT_FOUND, f"{type}/{id} has no version {version}")
        if found.deleted:
            raise FhirError(Category.DELETED, f"{type}/{id} version {version} is a deletion",
                            headers=version_headers(found))
        return found

    async def history(self, query: HistoryQuery) -> list[ResourceVersion]:
        if query.type is not None:
            check_type(query.type)
        if query.id is not None and await self.store.read(query.type or "", query.id) is None:
            raise FhirError(Category.NOT_FOUND, f"{query.type}/{query.id} is not known")
        return await self.store.history(query)

    # -- writes ---------------------------------------------------------------------

    async def create(self, type: str, resource: dict[str, Any], *,
                     uow: UnitOfWork | None = None, id: str | None = None,
                     unique_keys: tuple[str, ...] = ()) -> WriteResult:
        """Create with a server-assigned id (or `id`, used by transactions' urn:uuid);
        `unique_keys` are claimed for it (conditional create, see UnitOfWork.put)."""
        check_body(type, resource)
        if uow is not None:  # a bundle's entry: no context manager per entry
            return await self._write(uow, type, id or new_id(), resource, None, "POST",
                                     unique_keys)
        async with self.unit(uow) as unit:
            return await self._write(unit, type, id or new_id(), resource, None, "POST",
                                     unique_keys)

    async def update(self, type: str, id: str, resource: dict[str, Any], *,
                     if_match: str | None = None, uow: UnitOfWork | None = None) -> WriteResult:
        """PUT: update, or create with the client's id (update-as-create)."""
        check_body(type, resource)
        if not is_valid_id(id):
            raise FhirError(Category.INVALID, f"{id!r} is not a valid FHIR id")
        body_id = resource.get("id")
        if body_id is None:
            raise FhirError(Category.INVALID, "An update must carry the resource id in the body",
                            expression=(f"{type}.id",))
        if body_id != id:
            raise FhirError(Category.INVALID, f"Body id {body_id!r} does not match URL id {id!r}",
                            expression=(f"{type}.id",))
        async with self.unit(uow) as unit:
            current = await unit.current(type, id)
            check_if_match(current, if_match, type, id)
            return await self._write(unit, type, id, resource, current, "PUT")

    async def replace(self, unit: UnitOfWork, current: ResourceVersion,
                      resource: dict[str, Any], method: str) -> WriteResult:
        """Store a new version of an existing resource (patch, merges) inside `unit`."""
        check_body(current.type, resource)
        return await self._write(unit, current.type, current.id, resource, current, method)

    async def delete(self, type: str, id: str, *, if_match: str | None = None,
                     uow: UnitOfWork | None = None) -> WriteResult | None:
        """Delete as a versioned tombstone; None when there was nothing to delete."""
        check_type(type)
        async with self.unit(uow) as unit:
            current = await unit.current(type, id)
            check_if_match(current, if_match, type, id)
            if current is None or current.deleted:
                return None
            tombstone = ResourceVersion(type, id, current.version + 1,
                                        _after(current), "DELETE", b"")
            await self._put(unit, tombstone, [], current.version)
            await self._run_rules(unit, type, id, current, None, "DELETE")
            return WriteResult(tombstone, created=False)

    async def _write(self, unit: UnitOfWork, type: str, id: str, resource: dict[str, Any],
                     current: ResourceVersion | None, method: str,
                     unique_keys: tuple[str, ...] = ()) -> WriteResult:
        live = current is not None and not current.deleted
        if live and _content_key(resource) == _content_key(jsonio.loads(current.body)):
            return WriteResult(current, created=False, changed=False)
        version_number = current.version + 1 if current else 1
        last_updated = _after(current)
        stored = _with_meta(resource, id, version_number, last_updated)
        body = jsonio.dumps(stored)
        entries = await self._checked(type, resource, stored, body)
        version = ResourceVersion(type, id, version_number, last_updated, method, body)
        await self._put(unit, version, entries, current.version if current else 0,
                        unique_keys)
        if await self._run_rules(unit, type, id, current if live else None, stored, method):
            # a rule may have written this resource again (a virtual visit's join link):
            # the caller answers with what the unit will commit, not the first draft
            latest = await unit.current(type, id)
            if latest is not None and latest.version > version.version:
                return WriteResult(latest, created=not live)
        return WriteResult(version, created=not live, entries=entries)

    async def _checked(self, type: str, resource: dict[str, Any], stored: dict[str, Any],
                       body: bytes) -> list:
        """Validate `stored` (serialised as `body`), then extract its index entries; or take
        both from what was prepared ahead for `resource` (fhirpm.repository.prepare)."""
        ready = self.prepared.pop(id(resource), None) if self.prepared else None
        done = None
        if ready is not None and ready.resource is resource:
            done = await ready.result(self.indexer, type, stored)
        if done is None:
            issues, entries = self.validator.validate(stored, body), None
        else:
            issues, entries = done
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(Category.INVALID, errors[0].diagnostics, issues=errors)
        return entries if entries is not None else self.indexer.extract(type, stored)

    async def _run_rules(self, unit: UnitOfWork, type: str, id: str,
                         current: ResourceVersion | None, after: dict[str, Any] | None,
                         method: str) -> bool:
        """Run the type's rules; False when it has none."""
        rules = self._rules.get(type)
        if not rules:  # the common case costs one dict lookup
            return False
        before = jsonio.loads(current.body) if current is not None else None
        change = Change(type, id, method, before, after)
        for rule in rules:
            await rule.apply(self, unit, change)
        return True

    async def _put(self, unit: UnitOfWork, version: ResourceVersion, entries: list,
                   expected: int, unique_keys: tuple[str, ...] = ()) -> None:
        try:
            await unit.put(version, entries, expected_version=expected,
                           unique_keys=unique_keys)
        except VersionConflict as exc:
            raise FhirError(Category.CONFLICT, f"Concurrent write: {exc}") from None


def _after(current: ResourceVersion | None) -> str:
    """Now, but never earlier than the current version (clocks can step back)."""
    stamp = now_instant()
    return max(stamp, current.last_updated) if current else stamp


def _with_meta(resource: dict[str, Any], id: str, version: int,
               last_updated: str) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource["resourceType"], "id": id, "meta": meta, **rest}


def check_type(type: str) -> None:
    if not is_resource_type(type):
        raise FhirError(Category.UNKNOWN_TYPE,
                        f"{type!r} is not a FHIR R4 resource type this server supports")


def check_body(type: str, resource: Any) -> None:
    check_type(type)
    if not isinstance(resource, dict):
        raise FhirError(Category.STRUCTURE, "The body must be a JSON object (a FHIR resource)")
    body_type = resource.get("resourceType")
    if body_type is None:
        raise FhirError(Category.STRUCTURE, "The body has no resourceType")
    if body_type != type:
        raise FhirError(Category.INVALID,
                        f"The body is a {body_type!r} but the URL says {type!r}",
                        expression=(f"{type}.resourceType",))


def check_if_match(current: ResourceVersion | None, if_match: str | None,
                   type: str, id: str) -> None:
    if if_match is None:
        return
    wanted = parse_etag(if_match)
    have = str(current.version) if current and not current.deleted else None
    if wanted != have:
        raise FhirError(Category.PRECONDITION_FAILED,
                        f"If-Match {if_match} does not match {type}/{id} "
                        f"(current version {have or 'none'})")


def parse_etag(value: str) -> str:
    """`W/"3"` -> `3` (also tolerates a bare `3` or `"3"`)."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def version_headers(version: ResourceVersion) -> dict[str, str]:
    return {"ETag": f'W/"{version.version}"', "Last-Modified": http_date(version.last_updated)}


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(instant: str) -> str:
    """A stored FHIR instant (UTC) as an HTTP-date: `Sun, 06 Nov 1994 08:49:37 GMT`.

    By hand: email.utils.format_datetime costs more than the rest of a read's headers.
    Remembered per second (a pure function; an HTTP-date has no fraction, and the
    instants the server writes are UTC, `...:SS.ffffffZ`, unique per write)."""
    if len(instant) >= 20 and instant[-1] == "Z" and instant[19] in ".Z":
        return _http_date(instant[:19])
    return _http_date(instant)


@lru_cache(maxsize=8192)
def _http_date(instant: str) -> str:
    t = datetime.fromisoformat(instant)
    if t.utcoffset():
        t = t.astimezone(UTC)
    return (f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT")
