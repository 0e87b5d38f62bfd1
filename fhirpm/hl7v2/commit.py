"""Writing one mapped message: ONE unit of work through the Repository, the layer every REST
write and transaction entry ends in (validation, index extraction, versions, the change
feed, write rules such as scheduling's slot booking), all or nothing.

Owns, inside that unit:
  lookup   what each mapped resource updates: one search per type (its identifiers and
           content ids OR-ed; on SQLite all in one trip), made inside the unit, so
           what it finds stays current until the commit (SQLite: the unit holds the
           write lock; MongoDB: the unit re-validates its reads at commit) and an update
           needs no second read, no If-Match and no retry
  merge    the message over the stored version (`merge`: sent replaces, empty keeps, `""`
           deletes, identifiers and links accumulate, defaults fill what is missing)
  links    references found by search (`links:` in a message map, e.g. Appointment.slot:
           the Slot of a participant's Schedule at the appointment's start)
  A40      survivor and merged-away patient linked, references moved to the survivor
  writes   references between the message's resources rewritten to `Type/id`, then one
           Repository write per resource; unchanged content writes no version
Why not a transaction Bundle through `Interactions.dispatch` (as before): the Bundle path
parses and searches every conditional entry again inside the unit and reads every updated
resource once more, each a trip to the store's writer thread; for a small ADT^A08 that was
most of its time (docs/performance.md, HL7 v2).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.hl7v2.engine import Link, Mapped, MappedResource, copy_json
from fhirpm.hl7v2.parser import V2Error
from fhirpm.repository import reindex
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions
from fhirpm.repository.service import new_id, now_instant
from fhirpm.search.parse import SearchParser
from fhirpm.search.query import AnyOf, Clause, Param, RefPred, SearchQuery, TokenPred
from fhirpm.storage.port import ResourceVersion, UnitOfWork
from fhirpm.storage.sqlite.store import SqliteUnitOfWork

RETRIES = 3  # a unit that lost a race (MongoDB commit, 409/412) is rebuilt from fresh reads
LOOKUP_CHUNK = 50  # identifiers OR-ed into one search
REFERRERS_MAX = 1000  # resources an A40 moves per type (more: the merge is refused)
PARSED_MAX = 4096  # stored bodies kept parsed (then start afresh): bounded memory

# Where a Patient is referenced, by type: the search parameter an A40 merge moves.
PATIENT_REFERENCES = {
    "Encounter": "subject", "Appointment": "actor", "Coverage": "beneficiary",
    "ChargeItem": "subject", "Condition": "subject", "Procedure": "subject",
    "AllergyIntolerance": "patient", "Account": "subject", "RelatedPerson": "patient",
    "Observation": "subject",
}


@dataclass
class _Target:
    """Where one mapped resource goes, once looked up."""

    res: MappedResource
    stored: ResourceVersion | None  # its current live version, None: a new resource
    id: str
    stored_body: dict[str, Any] | None = None  # `stored` parsed (once); never changed
    body: dict[str, Any] | None = None  # what will be written (merged, references resolved)

    @property
    def ref(self) -> str:
        return f"{self.res.type}/{self.id}"


# called inside the message's unit of work once its resources are written: `Type/id` of
# each resource of the message, and the versions its writes made (`Type/id/_history/n`)
Written = Callable[[UnitOfWork, list[str], list[str]], Awaitable[None]]


class Committer:
    def __init__(self, interactions: Interactions, base: str) -> None:
        self.ix = interactions
        self.base = base
        self._parser: SearchParser | None = None  # for `links:` criteria, see _link_parser
        self._parser_at = 0.0
        # stored bodies parsed, by their bytes (not by version: an expunged resource may
        # be created again): the staff, places and payers a message names come back in
        # every message's lookups; read-only (`_Target.stored_body`)
        self._parsed: dict[bytes, dict[str, Any]] = {}

    async def commit(self, mapped: Mapped, written: Written | None = None) -> list[str]:
        """Write the message's resources in one unit; `Type/id` of each, in message order.
        `written(unit, refs, versions)` runs in the unit after the writes, before it
        commits (what must commit with the data: the message's audit record)."""
        for attempt in range(RETRIES):
            try:
                # a retry reads before every write (see _write: a content id a deletion
                # left a tombstone for is refused at COMMIT when created, not updated)
                return await self._once(mapped, written, careful=attempt > 0)
            except V2Error:
                raise  # refused for what the message says: a retry cannot change that
            except FhirError as err:
                if err.category in (Category.CONFLICT, Category.PRECONDITION_FAILED) \
                        and attempt < RETRIES - 1:
                    continue
                raise
        raise AssertionError("unreachable")

    async def _once(self, mapped: Mapped, written: Written | None, *,
                    careful: bool = False) -> list[str]:
        async with self.ix.repo.unit(None) as unit:
            found = await self._lookup(unit, mapped.resources)
            targets = {r.key: _Target(r, *found[r.key]) for r in mapped.resources}
            moved = await self._merge_patients(unit, mapped, targets)
            _check_once(targets)
            urls = {t.res.full_url: t.ref for t in targets.values()}
            for t in targets.values():
                t.body = _resolved(_merged(t.stored_body, t.res), urls)
                if t.res.identity is None and t.res.type == "Provenance":
                    t.body["recorded"] = now_instant()  # created anew: when we received it
            await self._links(unit, mapped.links, targets)
            by_ref = {t.ref: t for t in targets.values()}
            versions: list[str] = []
            for old, new, referrers in moved:
                for version in referrers:
                    ref = f"{version.type}/{version.id}"
                    if ref in by_ref:  # the message writes it anyway: move it there
                        _move_references(by_ref[ref].body, old, new)
                        continue
                    body = jsonio.loads(version.body)
                    _move_references(body, old, new)
                    _made(versions, await self.ix.dispatch(FhirRequest(
                        "PUT", ref, self.base, resource=body, uow=unit)))
            idle = {t.res.full_url: t.ref for t in targets.values() if _unchanged(t)}
            kept = _if_written(list(targets.values()), idle)
            for t in kept:
                if t.res.full_url not in idle:
                    _made(versions, await self._write(unit, t, careful))
            refs = [t.ref for t in kept]
            if written is not None:
                await written(unit, refs, versions)
        return refs

    # -- lookup -----------------------------------------------------------------------

    async def _lookup(self, unit: UnitOfWork, resources: list[MappedResource]
                      ) -> dict[str, tuple[ResourceVersion | None, str,
                                           dict[str, Any] | None]]:
        """For each resource: the live stored version it updates, the id it is written
        under and the stored content parsed; one search per type (its identifiers and
        content ids OR-ed), not one per resource or per kind of identity."""
        groups: dict[str, list[MappedResource]] = {}
        for res in resources:
            if res.identity is not None:
                groups.setdefault(res.identity.type, []).append(res)
        out: dict[str, tuple[ResourceVersion | None, str, dict[str, Any] | None]] = {}
        chunks = [(type_, group[n:n + LOOKUP_CHUNK]) for type_, group in groups.items()
                  for n in range(0, len(group), LOOKUP_CHUNK)]
        queries = [_identity_query(type_, chunk) for type_, chunk in chunks]
        if isinstance(unit, SqliteUnitOfWork):
            # all in one trip to the writer thread: a trip each (even sent at once) cost
            # more than their SQL, ~3 ms of a kitchen-sink message's ~30 (thread wake-ups,
            # GIL hand-offs). A MongoDB unit's steps share one session and replay after
            # transient failures: one at a time.
            results = await unit.search_many(queries)
        else:
            results = [await unit.search(q) for q in queries]
        for (_, chunk), result in zip(chunks, results, strict=True):
            bodies = [(v, self._parsed_body(v)) for v in result.matches]
            for res in chunk:
                hits = [(v, body) for v, body in bodies if _is(v, body, res)]
                if len(hits) > 1:
                    raise V2Error(Category.MULTIPLE_MATCHES, f"{res.identity.url} "
                                  f"matches {len(hits)} resources", hl7_code="205",
                                  segment=res.origin[0], sequence=res.origin[1])
                if hits:
                    (version, body), = hits
                    out[res.key] = (version, version.id, body)
        # the others get their ids only now: most of a message's resources are found
        return {r.key: out.get(r.key) or (None, _new_id(r), None) for r in resources}

    def _parsed_body(self, version: ResourceVersion) -> dict[str, Any]:
        body = self._parsed.get(version.body)
        if body is None:
            if len(self._parsed) >= PARSED_MAX:
                self._parsed.clear()
            body = self._parsed[version.body] = jsonio.loads(version.body)
        return body

    # -- writes -----------------------------------------------------------------------

    async def _write(self, unit: UnitOfWork, t: _Target, careful: bool = False
                     ) -> FhirResponse:
        """One write, dispatched like a transaction entry (`PUT Type/id`, or `POST Type`
        with the id assigned) inside the message's unit: whatever observes requests (the
        audit trail) sees it as it sees REST writes. The unit already read the current
        version, so the update's own read costs no store trip.

        A content id the lookup did not find is created (`POST` with that id), not
        updated: an update would read it first (a search does not return deleted
        resources, so that read was a trip per new Location, RelatedPerson, Device...).
        If a deletion left it a tombstone, the create is refused (at COMMIT on SQLite) and
        the message is rebuilt `careful`: then it is updated (update-as-create)."""
        res, body = t.res, t.body or {}
        content_id = res.identity is not None and res.identity.id is not None
        if t.stored is not None or (content_id and careful):
            req = FhirRequest("PUT", t.ref, self.base, resource={**body, "id": t.id}, uow=unit)
        else:
            req = FhirRequest("POST", res.type, self.base, resource=body, uow=unit,
                              assigned_id=t.id)
        try:
            return await self.ix.dispatch(req)
        except V2Error:
            raise
        except FhirError as err:
            if err.diagnostics.startswith("Concurrent write"):
                raise  # lost a race (MongoDB): the caller retries from fresh reads
            raise _located(err, t) from None

    # -- links: references found by search ------------------------------------------------

    async def _links(self, unit: UnitOfWork, links: list[Link],
                     targets: dict[str, _Target]) -> None:
        """Set each link's element to what its search finds. What was stored there stays
        while the criteria's own values are unchanged (a resend, a round trip, a change
        elsewhere) and goes when they changed (a moved appointment leaves its old slots)."""
        new = {t.ref for t in targets.values() if t.stored is None}
        for link in links:
            t = targets.get(link.key)
            if t is None or t.body is None:
                continue
            criteria = []
            for param, path in link.where:
                # a resource created by this message cannot be referenced by a stored one
                values = [v for v in _values(t.body, path) if v not in new]
                if not values:
                    break
                criteria.append((param, ",".join(_escape(v) for v in values)))
            else:
                found = await self._search(unit, link.type, criteria)
                stored = t.stored_body or {}
                unchanged = all(_same_values(_values(stored, p), _values(t.body, p))
                                for _, p in link.where)
                refs = [{"reference": f"{v.type}/{v.id}"} for v in found]
                kept = [r for r in stored.get(link.path) or () if unchanged and r not in refs]
                if refs or kept:
                    t.body[link.path] = kept + refs
                else:
                    t.body.pop(link.path, None)

    async def _search(self, unit: UnitOfWork, type_: str,
                      criteria: list[tuple[str, str]]) -> list[ResourceVersion]:
        parser = await self._link_parser()
        query = replace(parser.parse([type_], criteria, strict=True).query,
                        count=REFERRERS_MAX, total="none")
        return list((await unit.search(query)).matches)

    async def _link_parser(self) -> SearchParser:
        """The search parser for `links:` criteria, as a search request would build it,
        made again at most once a second (what it learns from the store: which
        parameters are still being reindexed) rather than per message: asking costs a
        store read after every commit, and a second is the bound reindex itself gives
        other nodes (`reindex.RECHECK_SECONDS`)."""
        now = time.monotonic()
        if self._parser is None or now - self._parser_at >= reindex.RECHECK_SECONDS:
            self._parser = SearchParser(self.ix.repo.registry, base=self.base,
                                        max_count=REFERRERS_MAX,
                                        pending=await reindex.pending(self.ix))
            self._parser_at = now
        return self._parser

    # -- A40: patient merge ---------------------------------------------------------------

    async def _merge_patients(self, unit: UnitOfWork, mapped: Mapped,
                              targets: dict[str, _Target]
                              ) -> list[tuple[str, str, list[ResourceVersion]]]:
        """Link survivor and merged-away patient, and find what references the latter
        (moved by the caller). A merged-away patient we never stored is not created."""
        moves = []
        for survivor_key, old_key in mapped.merges:
            survivor, old = targets[survivor_key], targets[old_key]
            if old.stored is None:
                del targets[old_key]
                continue
            if survivor.stored is not None and survivor.id == old.id:
                raise V2Error(Category.BUSINESS_RULE, "A40 names the same patient as "
                              "survivor and as merged-away (PID-3 and MRG-1)",
                              hl7_code="205", segment="MRG", sequence=1, position=1)
            old_body, new_body = old.stored_body or {}, survivor.stored_body
            gone = {**old.res.body, "active": False}
            if not _links_to(old_body, survivor.id):
                gone["link"] = [{"other": {"reference": survivor.res.full_url},
                                 "type": "replaced-by"}]
            kept = dict(survivor.res.body)
            if not (new_body and _links_to(new_body, old.id)):
                kept["link"] = [{"other": {"reference": old.res.full_url}, "type": "replaces"}]
            old.res = _with_body(old.res, gone)
            survivor.res = _with_body(survivor.res, kept)
            moves.append((old.ref, survivor.ref, await self._referrers(unit, old.id)))
        return moves

    async def _referrers(self, unit: UnitOfWork, patient_id: str) -> list[ResourceVersion]:
        out: list[ResourceVersion] = []
        pred = RefPred(type="Patient", id=patient_id)
        for type_, param in PATIENT_REFERENCES.items():
            result = await unit.search(SearchQuery(
                types=(type_,), where=(Param(param, "reference", (pred,)),),
                count=REFERRERS_MAX, total="none"))
            if result.has_more or result.next_cursor:
                raise V2Error(Category.TOO_COSTLY, f"More than {REFERRERS_MAX} {type_} "
                              f"resources reference Patient/{patient_id}: merge them in "
                              "smaller steps", hl7_code="207", segment="MRG", sequence=1,
                              position=1)
            out.extend(result.matches)
        return out


# -- merging over the stored version ---------------------------------------------------------

_ACCUMULATE = ("identifier", "link")  # list elements that gather values from every source


def merge(stored: dict[str, Any] | None, res: MappedResource) -> dict[str, Any]:
    """What the message says over what is stored: sent elements replace, empty fields keep,
    `""` removes; identifiers and links accumulate; defaults fill what is still missing.
    A new object: neither `stored` nor the message's body is shared with it."""
    return copy_json(_merged(stored, res))


def _merged(stored: dict[str, Any] | None, res: MappedResource) -> dict[str, Any]:
    """`merge`, sharing the values it takes from either side (the caller copies)."""
    if stored is None:
        return res.resource()
    out = {k: v for k, v in stored.items() if k not in ("id", "text")}
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    for name, value in res.body.items():
        if name in _ACCUMULATE and isinstance(value, list):
            # what is stored stays as it is (and where it is); only new items are added
            have = list(stored.get(name) or ())
            out[name] = have + [v for v in value if not _same_item(v, have)]
        else:
            out[name] = _keep_equivalent(stored.get(name), value)
    for name in res.deletes:
        out.pop(name, None)
    for name, value in res.defaults.items():
        out.setdefault(name, value)
    out["resourceType"] = res.type
    return out


def _same_item(item: Any, have: list[Any]) -> bool:
    """An identifier (system, value) or link (type, other) already stored."""
    if not isinstance(item, dict):
        return item in have
    if "other" in item:
        return any(isinstance(h, dict) and h.get("type") == item.get("type")
                   and h.get("other") == item.get("other") for h in have)
    return any(isinstance(h, dict) and h.get("value") == item.get("value")
               and h.get("system") == item.get("system") for h in have)


def _keep_equivalent(stored: Any, new: Any) -> Any:
    """Keep the stored text of a time the message sends as the same instant in another
    form (`Z` vs `+00:00`), so a round trip through v2 changes nothing."""
    if isinstance(stored, str) and isinstance(new, str) and stored != new \
            and "T" in stored and "T" in new:
        return stored if _same_instant(stored, new) else new
    return new


def _same_instant(a: str, b: str) -> bool:
    try:
        return datetime.fromisoformat(a.replace("Z", "+00:00")) == \
            datetime.fromisoformat(b.replace("Z", "+00:00"))
    except ValueError:
        return False


# -- helpers ----------------------------------------------------------------------------------


def _identity_query(type_: str, chunk: list[MappedResource]) -> SearchQuery:
    """`_id=a,...` and `identifier=s|v,...` of one type, OR-ed, as the parser would build
    them (the values are data, not query text: nothing to escape or parse). Identifiers
    are one clause each (`AnyOf`), not one clause with several values: the same
    matches, but SQLite finds each by its (parameter, code) index entry, where a clause
    with several values read every identifier of the type (a kitchen-sink message names
    several practitioners: the lookup grew with the data). Content ids and identifiers of
    one type share the search (a message names both kinds of Organization, say)."""
    ids = sorted({r.identity.id for r in chunk if r.identity.id is not None})
    idents = sorted({(r.identity.system, r.identity.value or "")
                     for r in chunk if r.identity.id is None},
                    key=lambda p: (p[0] or "", p[1]))
    clauses: list[Clause] = []
    if ids:
        clauses.append(Param("_id", "token", tuple(TokenPred(code=i) for i in ids)))
    clauses.extend(Param("identifier", "token", (TokenPred(code=v, system=s),))
                   for s, v in idents)
    clause = clauses[0] if len(clauses) == 1 else AnyOf(tuple(clauses))
    return SearchQuery(types=(type_,), where=(clause,),
                       count=3 * (len(ids) + len(idents)) + 1, total="none")


def _made(versions: list[str], response: FhirResponse) -> None:
    """Note the version a write left (the current one, should the Repository have found
    nothing to change after all)."""
    v = response.version
    if v is not None:
        versions.append(f"{v.type}/{v.id}/_history/{v.version}")


def _new_id(res: MappedResource) -> str:
    """The id of a resource nothing stored matches: its content id, else a new one."""
    if res.identity is not None and res.identity.id is not None:
        return res.identity.id
    return new_id()


def _check_once(targets: dict[str, _Target]) -> None:
    """Two parts of one message that turn out to be the same stored resource (say, two
    identifiers of one practitioner) would overwrite each other: refused, as a transaction
    touching a resource twice is."""
    seen: dict[str, _Target] = {}
    for t in targets.values():
        first = seen.setdefault(t.ref, t)
        if first is not t:
            raise V2Error(Category.BUSINESS_RULE, f"{t.ref} is identified twice in the "
                          f"message ({first.res.origin[0] or first.res.key} and "
                          f"{t.res.origin[0] or t.res.key})", hl7_code="205",
                          segment=t.res.origin[0], sequence=t.res.origin[1])


def _is(stored: ResourceVersion, body: dict[str, Any], res: MappedResource) -> bool:
    """Whether a stored resource (`body` its parsed content) is the one `res` identifies
    (its id, or an identifier with the same system and value)."""
    ident = res.identity
    if ident is None:
        return False
    if ident.id is not None:
        return stored.id == ident.id
    return any(i.get("value") == ident.value and (ident.system is None
                                                 or i.get("system") == ident.system)
               for i in body.get("identifier") or () if isinstance(i, dict))


def _if_written(targets: list[_Target], idle: dict[str, str]) -> list[_Target]:
    """The targets to write, with references that hold only for written resources (a
    Provenance's `target`) dropped where the message changes nothing; a resource left
    without any of them is not written at all: it would describe writes that did not
    happen (a resend's Provenance, whose `target` the spec requires). `idle`: the
    fullUrls of the resources the message leaves unchanged -> their `Type/id`."""
    if not idle:
        return targets
    kept = []
    for t in targets:
        for element, urls in t.res.if_written.items():
            gone = {idle[u] for u in urls if u in idle}
            left = [r for r in t.body.get(element, ())
                    if not (isinstance(r, dict) and r.get("reference") in gone)]
            if not left:
                break
            t.body[element] = left
        else:
            kept.append(t)
    return kept


def _unchanged(t: _Target) -> bool:
    """The message changes nothing of a stored resource (a resend, a practitioner or
    location named again): not written at all, as the Repository would store nothing
    either; so it is no write interaction (no request, no audit record, no rule)."""
    if t.stored_body is None or t.body is None:
        return False
    return _content(t.body) == _content(t.stored_body)


def _content(body: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (body.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in body.items() if k not in ("id", "meta")}
    if meta:
        out["meta"] = meta
    return out


def _with_body(res: MappedResource, body: dict[str, Any]) -> MappedResource:
    return replace(res, body=body)


def _resolved(body: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    """A copy of `body` (nothing shared with it) whose references to the message's
    resources (their `urn:uuid:` fullUrls) read `Type/id`; an element referencing a
    resource left out (a merged-away patient never stored) goes. One walk: the copy
    the merge needs and the rewrite together."""
    out = _copy_resolved(body, urls)
    return out if isinstance(out, dict) else {}


_GONE = object()  # an element whose reference names a resource left out of the message


def _copy_resolved(node: Any, urls: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v.startswith("urn:uuid:"):
                if v not in urls:
                    return _GONE
                out[k] = urls[v]
            elif isinstance(v, (dict, list)):
                v = _copy_resolved(v, urls)
                if v is not _GONE:
                    out[k] = v
            else:
                out[k] = v
        return out
    if isinstance(node, list):
        items = [_copy_resolved(v, urls) if isinstance(v, (dict, list)) else v for v in node]
        return [v for v in items if v is not _GONE]
    return node


def _values(body: dict[str, Any], path: str) -> list[str]:
    """The values at a dotted path (through lists); a Reference gives its `reference`."""
    nodes: list[Any] = [body]
    for step in path.split("."):
        nxt: list[Any] = []
        for node in nodes:
            value = node.get(step) if isinstance(node, dict) else None
            nxt.extend(value if isinstance(value, list) else [value] if value is not None
                       else [])
        nodes = nxt
    out = []
    for node in nodes:
        if isinstance(node, dict) and isinstance(node.get("reference"), str):
            out.append(node["reference"])
        elif isinstance(node, (str, int, float)) and not isinstance(node, bool):
            out.append(str(node))
    return out


def _same_values(a: list[str], b: list[str]) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or ("T" in x and "T" in y and _same_instant(x, y))
               for x, y in zip(sorted(a), sorted(b), strict=True))


def _escape(value: str) -> str:
    """A value as one item of a search parameter's comma-separated list (the parser's
    `unescape` undoes exactly this)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$")


def _links_to(patient: dict[str, Any], other_id: str) -> bool:
    return any((link.get("other") or {}).get("reference", "").endswith(f"Patient/{other_id}")
               for link in patient.get("link") or ())


def _move_references(value: Any, old: str, new: str) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and (ref == old or ref.endswith("/" + old)):
            value["reference"] = new
        for v in value.values():
            _move_references(v, old, new)
    elif isinstance(value, list):
        for v in value:
            _move_references(v, old, new)


def _located(err: FhirError, t: _Target) -> V2Error:
    """A repository refusal (validation, a write rule, a conflict) as an application
    error (AE) naming the resource and the segment it came from."""
    name = f"{t.res.type} ({t.res.origin[0]})" if t.res.origin[0] else t.res.type
    out = V2Error(err.category, f"{name}: {err.diagnostics}", hl7_code="207",
                  segment=t.res.origin[0], sequence=t.res.origin[1])
    out.issues = err.issues
    return out




__all__ = ["Committer", "merge"]
