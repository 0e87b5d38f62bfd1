"""Public availability for booking sites: SMART Scheduling Links (`$bulk-publish`).

`GET [base]/$bulk-publish` answers the manifest (`transactionTime`, `request`, `output`);
each output is an NDJSON file served by the same operation with a `file` parameter:

    [base]/$bulk-publish?file=Location                 the Locations of published Schedules
    [base]/$bulk-publish?file=Schedule                 every published Schedule
    [base]/$bulk-publish?file=Slot&schedule=<id>       one Schedule's future Slots
    [base]/$bulk-publish?_since=<instant>              incremental: only what changed since,
                                                       one file per type (`file=T&_since=`)

Served without a token (the operation declares `public`, which repository.access honours
for this GET only) and only when FHIRPM_SCHEDULING__PUBLISH_ENABLED=true.

What is published, and nothing more (every resource is rebuilt from a whitelist):
- a Schedule unless `active` is false or an actor is a Patient, RelatedPerson or Device;
  only its id, active, service fields, planningHorizon and actor references and displays;
- a Location referenced as a published Schedule's actor: name, address, telecom, position,
  type, status, description;
- a Slot of a published Schedule ending in the future: id, schedule, start, end, service
  fields, capacity, and a status that is `free` or `busy` (held, unavailable, entered in
  error and deleted Slots are all `busy`), plus the configured booking link and phone.
  Who occupies a Slot (the occupancy extensions) is never published.

Incremental refresh: `_since` files are read from the store's history (versions with
lastUpdated >= since, deletions included), so a Slot deleted since appears as `busy` and a
Schedule withdrawn since appears with `active: false`. `transactionTime` trails the clock
by `publish_lag_seconds` so a write committing while the files are read is not missed by
the next `_since` (clients may see a few changes twice; never miss one).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.operations.registry import OperationSpec, register
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.scheduling import lookup, model
from fhirpm.storage.port import HistoryQuery

if TYPE_CHECKING:
    from fhirpm.config import SchedulingSettings

DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-publish"
BOOKING_LINK = "http://fhir-registry.smarthealthit.org/StructureDefinition/booking-deep-link"
BOOKING_PHONE = "http://fhir-registry.smarthealthit.org/StructureDefinition/booking-phone"
FILES = ("Location", "Schedule", "Slot")
NDJSON = "application/fhir+ndjson"
HISTORY_PAGE = 200  # history versions read per store call
SLOT_PAGE = 2000  # a Schedule's Slots read per search page (90 days of 20 a day: 1 page)
SETTLE = timedelta(seconds=60)  # longer than any unit of work between stamp and commit
_PRIVATE_ACTORS = ("Patient", "RelatedPerson", "Device")
_SERVICE = ("serviceCategory", "serviceType", "specialty")
_LOCATION = ("status", "name", "alias", "description", "mode", "type", "telecom", "address",
             "physicalType", "position")


@dataclass(frozen=True)
class PublicOperationSpec(OperationSpec):
    """An operation anyone may GET at system level (repository.access `_published`)."""

    public: bool = True


def _instant(moment: datetime) -> str:
    """The store's fixed-width UTC form (comparable as text with lastUpdated)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_instant(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise FhirError(Category.INVALID, f"{name} must be an instant with a time zone "
                        f"(e.g. 2030-01-01T00:00:00Z), not {value!r}")
    return moment


class Publisher:
    """The `$bulk-publish` operation over one server's store (module doc)."""

    def __init__(self, settings: SchedulingSettings) -> None:
        self.settings = settings

    def install(self, interactions: Interactions) -> None:
        register(interactions, PublicOperationSpec(
            name="bulk-publish", definition=DEFINITION, handler=self.handle, system=True,
            documentation="SMART Scheduling Links: public free/busy Slots of published "
                          "Schedules, their Schedules and Locations (no token needed)"))

    async def handle(self, ix: Interactions, req: FhirRequest, type: str | None,
                     id: str | None) -> FhirResponse:
        if req.method != "GET":
            raise FhirError(Category.METHOD_NOT_ALLOWED, "$bulk-publish is read with GET",
                            headers={"Allow": "GET"})
        since_param = req.param("_since")
        since = _instant(_parse_instant(since_param, "_since")) if since_param else None
        file = req.param("file")
        if file is None:
            schedules = await _schedules(ix)
            body = jsonio.dumps(self.manifest(req, since, schedules,
                                              await _states(ix, schedules)))
            return self._answer(req, body, None)
        if file not in FILES:
            raise FhirError(Category.INVALID, f"file must be one of {', '.join(FILES)}")
        if req.param("_pretty") is not None:
            raise FhirError(Category.NOT_SUPPORTED, "_pretty does not apply to NDJSON files")
        lines = [jsonio.dumps(r) async for r in self.resources(ix, file, since,
                                                               req.param("schedule"))]
        return self._answer(req, b"\n".join(lines) + (b"\n" if lines else b""), NDJSON)

    def _answer(self, req: FhirRequest, body: bytes, media: str | None) -> FhirResponse:
        etag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"Cache-Control": f"public, max-age={self.settings.publish_max_age}",
                   "ETag": etag}
        if media is not None:
            headers["Content-Type"] = media
        if etag in (req.headers.get("if-none-match") or "").split(", "):
            return FhirResponse(304, None, headers)
        return FhirResponse(200, body, headers)

    # -- the manifest --------------------------------------------------------------------

    def manifest(self, req: FhirRequest, since: str | None,
                 schedules: dict[str, dict[str, Any]],
                 states: dict[str, list[str]]) -> dict[str, Any]:
        """`states`: Schedule id -> the states of its Locations (the spec's output hint)."""
        lag = timedelta(seconds=self.settings.publish_lag_seconds)
        base = f"{req.base}/$bulk-publish"
        since_args = {"_since": since} if since else {}
        outputs: list[tuple[str, dict[str, str], list[str]]] = [
            ("Location", {}, []), ("Schedule", {}, [])]
        if since:
            outputs.append(("Slot", {}, []))
        else:  # one Slot file per Schedule: each stays small, clients pick what they need
            outputs.extend(("Slot", {"schedule": sid}, states.get(sid, []))
                           for sid, s in sorted(schedules.items()) if publishable(s))
        return {
            "transactionTime": _instant(datetime.now(UTC) - lag),
            "request": base + ("?" + urlencode(since_args) if since else ""),
            "output": [_output(t, f"{base}?{urlencode({'file': t, **a, **since_args})}", st)
                       for t, a, st in outputs],
            "error": [],
        }

    # -- the files -----------------------------------------------------------------------

    async def resources(self, ix: Interactions, file: str, since: str | None,
                        schedule: str | None) -> AsyncIterator[dict[str, Any]]:
        """The published resources of one file (module doc)."""
        schedules = await _schedules(ix)
        if file == "Schedule":
            found = _schedule_file(ix, schedules, since)
        elif file == "Location":
            found = _location_file(ix, schedules, since)
        else:
            found = self._slot_file(ix, schedules, since, schedule)
        async for resource in found:
            yield resource

    async def _slot_file(self, ix: Interactions, schedules: dict[str, dict[str, Any]],
                         since: str | None,
                         schedule: str | None) -> AsyncIterator[dict[str, Any]]:
        open_ids = {sid for sid, s in schedules.items() if publishable(s)}
        now = datetime.now(UTC)
        if since is None:
            if schedule is None or schedule not in open_ids:
                raise FhirError(Category.NOT_FOUND, "Slot files are per published Schedule: "
                                "file=Slot&schedule=<id> (see the manifest)")
            async for slot in _future_slots(ix, schedule, now):
                yield self.public_slot(slot, False)
            return
        async for slot, gone in _changed_slots(ix, since):
            sid = model.local_id((slot.get("schedule") or {}).get("reference"), "Schedule")
            if sid in open_ids and schedule in (None, sid) and _ends_after(slot, now):
                yield self.public_slot(slot, gone)

    def public_slot(self, slot: dict[str, Any], gone: bool) -> dict[str, Any]:
        """The published form of a Slot (module doc); `gone`: deleted since."""
        status = "free" if slot.get("status") == "free" and not gone else "busy"
        out: dict[str, Any] = {"resourceType": "Slot", "id": slot["id"],
                               "schedule": {"reference": slot["schedule"]["reference"]},
                               "status": status, "start": slot["start"], "end": slot["end"]}
        _copy(slot, out, (*_SERVICE, "appointmentType"))
        extensions = [e for e in slot.get("extension") or () if e.get("url") == model.CAPACITY]
        if self.settings.publish_booking_url:
            url = self.settings.publish_booking_url.replace("{slot}", slot["id"])
            extensions.append({"url": BOOKING_LINK, "valueUrl": url})
        if self.settings.publish_booking_phone:
            extensions.append({"url": BOOKING_PHONE,
                               "valueString": self.settings.publish_booking_phone})
        if extensions:
            out["extension"] = extensions
        return out


async def _schedule_file(ix: Interactions, schedules: dict[str, dict[str, Any]],
                         since: str | None) -> AsyncIterator[dict[str, Any]]:
    if since is None:
        for _, schedule in sorted(schedules.items()):
            if publishable(schedule):
                yield public_schedule(schedule)
        return
    async for schedule, gone in _history_since(ix, "Schedule", since):
        if not private(schedule):  # a person's own calendar is never mentioned at all
            yield public_schedule(schedule, withdrawn=gone)


async def _location_file(ix: Interactions, schedules: dict[str, dict[str, Any]],
                         since: str | None) -> AsyncIterator[dict[str, Any]]:
    wanted = {lid for s in schedules.values() if publishable(s)
              for lid in _actor_ids(s, "Location")}
    async for location in _latest(ix, "Location", since, wanted):
        if location is not None:
            yield public_location(location)


def _output(type: str, url: str, states: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type, "url": url}
    if states:
        out["extension"] = {"state": states}
    return out


# -- what is published -----------------------------------------------------------------------


def publishable(schedule: dict[str, Any]) -> bool:
    """A Schedule the public may see: active, with actors none of which is a person's
    own record (a Patient's, RelatedPerson's or Device's calendar stays private)."""
    if schedule.get("active") is False or not schedule.get("actor"):
        return False
    return not private(schedule)


def private(schedule: dict[str, Any]) -> bool:
    """Whether a Schedule is someone's own calendar (an actor is a person's record)."""
    return any(_actor_ids(schedule, t) for t in _PRIVATE_ACTORS)


def public_schedule(schedule: dict[str, Any], *, withdrawn: bool = False) -> dict[str, Any]:
    """The published form of a Schedule; one no longer published is `active: false`."""
    out: dict[str, Any] = {"resourceType": "Schedule", "id": schedule["id"],
                           "active": publishable(schedule) and not withdrawn}
    _copy(schedule, out, (*_SERVICE, "planningHorizon"))
    if out["active"]:
        out["actor"] = [{k: a[k] for k in ("reference", "display") if k in a}
                        for a in schedule.get("actor") or ()]
    return out


def public_location(location: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Location", "id": location["id"]}
    _copy(location, out, _LOCATION)
    return out


def _copy(source: dict[str, Any], target: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        if source.get(name) is not None:
            target[name] = source[name]


def _actor_ids(schedule: dict[str, Any], type: str) -> list[str]:
    refs = [(a.get("reference") or "") for a in schedule.get("actor") or ()]
    return [i for i in (model.local_id(r, type) for r in refs) if i]


def _ends_after(slot: dict[str, Any], now: datetime) -> bool:
    try:
        return _parse_instant(slot.get("end") or "", "Slot.end") > now
    except FhirError:
        return False


# -- reading the store ------------------------------------------------------------------------


async def _schedules(ix: Interactions) -> dict[str, dict[str, Any]]:
    """Every live Schedule by id (a practice has tens, not thousands)."""
    found = await lookup.search(ix.repo, "Schedule", [], everything=True)
    return {version.id: jsonio.loads(version.body) for version in found}


async def _states(ix: Interactions,
                  schedules: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Published Schedule id -> the sorted address states of its Location actors."""
    found: dict[str, str | None] = {}
    out: dict[str, list[str]] = {}
    for sid, schedule in schedules.items():
        if not publishable(schedule):
            continue
        for lid in _actor_ids(schedule, "Location"):
            if lid not in found:
                current = await ix.repo.store.read("Location", lid)
                body = jsonio.loads(current.body) if current and not current.deleted else {}
                found[lid] = (body.get("address") or {}).get("state")
        out[sid] = sorted({st for lid in _actor_ids(schedule, "Location")
                           if (st := found[lid])})
    return out


def _slot_body(body: bytes) -> dict[str, Any]:
    """A stored Slot, parsed fast: nothing published from a Slot is a decimal (its
    elements are codes, instants, references; capacity is an integer), so the lossless
    parser (3x slower) is not needed here."""
    return orjson.loads(body)


async def _future_slots(ix: Interactions, schedule: str,
                        now: datetime) -> AsyncIterator[dict[str, Any]]:
    params = [("schedule", f"Schedule/{schedule}"), ("start", f"ge{_instant(now)[:19]}Z")]
    found = [_slot_body(v.body) for v in
             await lookup.search(ix.repo, "Slot", params, count=SLOT_PAGE, everything=True)]
    # sorted here: the store's _sort=start costs more than the search itself
    found.sort(key=lambda slot: _parse_instant(slot["start"], "Slot.start"))
    for slot in found:
        yield slot


async def _history_since(ix: Interactions, type: str,
                         since: str) -> AsyncIterator[tuple[dict[str, Any], bool]]:
    """The latest version of each `type` resource changed since `since` (newest first);
    a deletion as the version it deleted, with True.

    Walks the type's history newest first by `seq` (an index range, cheap) rather than
    asking for `lastUpdated >= since` (which scans every older version to prove there is
    no other). Stamps and commit order may disagree by the length of a unit of work, so
    the walk goes `SETTLE` past `since` before it stops."""
    seen: set[str] = set()
    before: int | None = None
    parse = _slot_body if type == "Slot" else jsonio.loads
    horizon = _instant(_parse_instant(since, "_since") - SETTLE)
    store = ix.repo.store
    while True:
        page = await store.history(HistoryQuery(type=type, count=HISTORY_PAGE,
                                                before_seq=before))
        for version in page:
            if version.id in seen:
                continue
            seen.add(version.id)
            if version.last_updated < since:
                continue  # its latest version is older: unchanged since
            if not version.deleted:
                yield parse(version.body), False
                continue
            last = await store.vread(type, version.id, version.version - 1)
            if last is not None and not last.deleted:
                yield parse(last.body), True
        if len(page) < HISTORY_PAGE or page[-1].last_updated < horizon:
            return
        before = page[-1].seq


async def _changed_slots(ix: Interactions,
                         since: str) -> AsyncIterator[tuple[dict[str, Any], bool]]:
    async for slot, gone in _history_since(ix, "Slot", since):
        yield slot, gone or slot.get("status") == "entered-in-error"


async def _latest(ix: Interactions, type: str, since: str | None,
                  wanted: set[str]) -> AsyncIterator[dict[str, Any] | None]:
    if since is None:
        for id_ in sorted(wanted):
            current = await ix.repo.store.read(type, id_)
            yield jsonio.loads(current.body) if current and not current.deleted else None
        return
    async for resource, gone in _history_since(ix, type, since):
        yield resource if resource["id"] in wanted and not gone else None


def install(interactions: Interactions, settings: SchedulingSettings) -> None:
    """Offer `$bulk-publish` when publishing is enabled (it is off by default)."""
    if settings.publish_enabled:
        Publisher(settings).install(interactions)
