"""Inbound: one v2 message -> logged raw -> mapped -> ONE transaction Bundle through
`Interactions.dispatch` (the path REST writes take) -> acknowledgements.

Owns the order of effects that makes delivery exactly-once in outcome: the raw message is
committed first (so an enhanced-mode accept ACK is truthful and nothing is lost); a resend
with the same (MSH-3, MSH-4, MSH-10) is answered with the stored ACK and not reprocessed;
the application ACK is built only after the transaction committed. Mapping is idempotent as
well (conditional updates on business identifiers), because senders also resend with new
control ids.

Update semantics: the engine yields partial resources; here each is merged over what is
stored (an element the message did not send is kept, one it nulled with `""` is removed,
identifiers accumulate), and written with `ifMatch` on the version read, so a concurrent
change makes the transaction fail and the message is retried rather than a write lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fhirpm.config import Hl7Settings
from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.hl7v2 import ack, parser
from fhirpm.hl7v2.engine import Engine, Mapped, MappedResource, MappingSet, Options
from fhirpm.hl7v2.messages import FINAL, LoggedMessage, MessageLog
from fhirpm.hl7v2.parser import Header, Message, V2Error
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.repository.service import now_instant
from fhirpm.storage.port import VersionConflict

log = logging.getLogger("fhirpm.hl7v2")

RETRIES = 3  # a transaction that lost a race (412/409) is rebuilt from fresh reads
LOOKUP_CHUNK = 50  # identifiers OR-ed into one search

# Where a Patient is referenced, by type: the search parameter an A40 merge moves.
PATIENT_REFERENCES = {
    "Encounter": "subject", "Appointment": "actor", "Coverage": "beneficiary",
    "ChargeItem": "subject", "Condition": "subject", "Procedure": "subject",
    "AllergyIntolerance": "patient", "Account": "subject", "RelatedPerson": "patient",
    "Observation": "subject",
}

Early = Callable[[str], Awaitable[None]]


@dataclass
class Outcome:
    acks: list[str]  # ACK messages to send back, in order
    message: LoggedMessage | None = None
    duplicate: bool = False
    resources: list[str] = field(default_factory=list)


class Inbound:
    def __init__(self, interactions: Interactions, settings: Hl7Settings, base: str,
                 engine: Engine | None = None) -> None:
        self.ix = interactions
        self.settings = settings
        self.base = base
        self.engine = engine or Engine(MappingSet.load(*_mapping_dirs(settings)))
        self.log = MessageLog(interactions.repo.store, dedup_days=settings.dedup_days)

    # -- the pipeline ---------------------------------------------------------------------

    async def receive(self, raw: bytes, peer: str = "", early: Early | None = None) -> Outcome:
        """Handle one framed message; never raises for anything the sender did. `early`
        sends an enhanced-mode accept ACK as soon as the raw message is committed."""
        header = _sniff_header(raw)
        sender = self.settings.sender(*(header or ("", "")))
        try:
            msg = parser.parse(raw, sender.charset)
        except V2Error as err:
            return await self._rejected(raw, peer, err)
        h = msg.header
        previous = await self.log.duplicate_of(h)
        if previous is not None and previous.status in FINAL:
            log.info("hl7 duplicate answered from the log",
                     extra={"control_id": h.control_id, "sender": h.sending_application})
            return Outcome(previous.acks, previous, duplicate=True)
        try:
            record = previous or await self.log.create(raw, h, peer)
        except VersionConflict:  # the same message arrived twice at once on two connections
            err = V2Error(Category.CONFLICT, "A message with this control id is being "
                          "processed; resend later", hl7_code="205", segment="MSH",
                          sequence=1, position=10)
            return Outcome([self._ack(h, "AE", err)])
        return await self.process(record, msg, early)

    async def process(self, record: LoggedMessage, msg: Message,
                      early: Early | None = None) -> Outcome:
        """Map and commit a logged message, then record and return its ACKs (an accept
        ACK already given to `early` is not returned again, but is logged)."""
        h = msg.header
        acks: list[str] = []
        sent_early: list[str] = []
        if h.enhanced and ack.wanted(h.accept_ack, ok=True):
            accept = self._ack(h, "CA")  # the raw message is committed
            if early is not None:
                await early(accept)
                sent_early.append(accept)
            else:
                acks.append(accept)
        record.attempts += 1
        sender = self.settings.sender(h.sending_application, h.sending_facility)
        options = Options(timezone=sender.timezone, authorities=dict(sender.authorities))
        try:
            try:
                mapped = self.engine.map(msg, options)
                written = await self.commit(mapped)
            except FhirError:
                raise
            except Exception as exc:  # a bug or a store failure: AE, kept for replay
                log.exception("hl7 message processing failed",
                              extra={"control_id": h.control_id})
                raise V2Error(Category.INTERNAL, f"Internal error: {exc}",
                              hl7_code="207") from exc
        except FhirError as err:
            v2err = err if isinstance(err, V2Error) else _as_v2(err)
            code = "AR" if v2err.reject else "AE"
            record.status, record.error = ("rejected" if v2err.reject else "error"), str(err)
            log.warning("hl7 message failed", extra={"control_id": h.control_id,
                                                      "error": str(err)})
            if not h.enhanced or ack.wanted(h.app_ack, ok=False):
                acks.append(self._ack(h, code, v2err))
        else:
            record.status, record.error, record.resources = "processed", "", written
            record.patient = next((r for r in written if r.startswith("Patient/")), "")
            if not h.enhanced or ack.wanted(h.app_ack, ok=True):
                acks.append(self._ack(h, "AA"))
        record.acks = sent_early + acks
        await self.log.save(record)
        return Outcome(acks, record, resources=record.resources)

    async def _rejected(self, raw: bytes, peer: str, err: V2Error) -> Outcome:
        record = await self.log.create(raw, None, peer)
        record.status, record.error = "rejected", str(err)
        record.acks = [ack.build(None, "AR", error=err, application=self.settings.application,
                                 facility=self.settings.facility)]
        await self.log.save(record)
        return Outcome(record.acks, record)

    def _ack(self, h: Header, code: str, error: V2Error | None = None) -> str:
        return ack.build(h, code, error=error, text=error.diagnostics if error else "",
                         application=self.settings.application, facility=self.settings.facility)

    # -- the transaction ------------------------------------------------------------------

    async def commit(self, mapped: Mapped) -> list[str]:
        """Build the transaction from fresh reads and dispatch it; retry lost races."""
        for attempt in range(RETRIES):
            bundle = await self.transaction(mapped)
            try:
                answer = await self.ix.dispatch(FhirRequest(method="POST", path="",
                                                            base=self.base, resource=bundle))
            except FhirError as err:
                if err.category in (Category.CONFLICT, Category.PRECONDITION_FAILED) \
                        and attempt < RETRIES - 1:
                    continue
                raise
            return _locations(answer.body)
        raise AssertionError("unreachable")

    async def transaction(self, mapped: Mapped) -> dict[str, Any]:
        """The transaction Bundle: every resource merged over its stored version."""
        entries: dict[str, dict[str, Any]] = {}
        current = await self._current_all(mapped.resources)
        skip = await self._merge_patients(mapped, current, entries)
        dropped = {r.full_url for r in mapped.resources if r.key in skip}
        for res in mapped.resources:
            if res.key not in skip:
                entries[res.full_url] = self._entry(res, current[res.key])
                _drop_references(entries[res.full_url]["resource"], dropped)
        return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries.values())}

    def _entry(self, res: MappedResource, stored: dict[str, Any] | None) -> dict[str, Any]:
        if res.identity is None:  # created anew each time (the Provenance)
            body = res.resource()
            if res.type == "Provenance":
                body["recorded"] = now_instant()
            return {"fullUrl": res.full_url, "resource": body,
                    "request": {"method": "POST", "url": res.type}}
        body = merge(stored, res)
        request: dict[str, Any] = {"method": "PUT", "url": res.identity.url}
        if stored is not None:
            # found already: update that resource at the version read (no second search);
            # only a new one goes in conditionally, so two creators cannot both win
            body["id"] = stored["id"]
            request = {"method": "PUT", "url": f"{res.type}/{stored['id']}",
                       "ifMatch": f'W/"{stored["meta"]["versionId"]}"'}
        return {"fullUrl": res.full_url, "resource": body, "request": request}

    async def _current_all(self, resources: list[MappedResource]
                           ) -> dict[str, dict[str, Any] | None]:
        """The stored resource each one updates, read before the transaction: one search
        per type (identifiers, or ids, OR-ed), not one per resource."""
        by_type: dict[tuple[str, str], list[MappedResource]] = {}
        for res in resources:
            if res.identity is not None:
                kind = "_id" if res.identity.id is not None else "identifier"
                by_type.setdefault((res.identity.type, kind), []).append(res)
        out: dict[str, dict[str, Any] | None] = {r.key: None for r in resources}
        chunks = [(type_, kind, group[n:n + LOOKUP_CHUNK])
                  for (type_, kind), group in by_type.items()
                  for n in range(0, len(group), LOOKUP_CHUNK)]
        # the searches are independent reads: run them side by side on the store's readers
        results = await asyncio.gather(*(self._search(t, k, c) for t, k, c in chunks))
        for (_, _, chunk), found in zip(chunks, results, strict=True):
            for res in chunk:
                hits = [f for f in found if _is(f, res)]
                if len(hits) > 1:
                    raise V2Error(Category.MULTIPLE_MATCHES, f"{res.identity.url} "
                                  f"matches {len(hits)} resources", hl7_code="205")
                out[res.key] = hits[0] if hits else None
        return out

    async def _search(self, type_: str, kind: str, chunk: list[MappedResource]
                      ) -> list[dict[str, Any]]:
        from fhirpm.repository.conditional import find_matches

        if kind == "_id":
            values = sorted({r.identity.id or "" for r in chunk})
        else:
            values = sorted({r.identity.url.partition("=")[2] for r in chunk})
        criteria = f"{kind}={','.join(values)}" if kind == "identifier" else \
            f"_id={','.join(values)}"
        try:
            found = await find_matches(self.ix, type_, criteria, None,
                                       limit=3 * len(values) + 1)
        except NotImplementedError:
            raise FhirError(Category.NOT_SUPPORTED, "Conditional updates are not available "
                            "(search is not installed)") from None
        return [jsonio.loads(v.body) for v in found]

    # -- A40: patient merge -----------------------------------------------------------------

    async def _merge_patients(self, mapped: Mapped, current: dict[str, Any],
                              entries: dict[str, dict[str, Any]]) -> set[str]:
        """Link survivor and merged-away patient, and move references to the survivor, in
        the same transaction. A merged-away patient we never stored is not created."""
        skip: set[str] = set()
        keys = {r.key: r for r in mapped.resources}
        for survivor_key, old_key in mapped.merges:
            survivor, old = keys[survivor_key], keys[old_key]
            stored_old = current.get(old_key)
            if stored_old is None:
                skip.add(old_key)
                continue
            if current.get(survivor_key) and current[survivor_key]["id"] == stored_old["id"]:
                raise V2Error(Category.BUSINESS_RULE, "A40 names the same patient as survivor "
                              "and as merged-away (PID-3 and MRG-1)", hl7_code="205",
                              segment="MRG", sequence=1, position=1)
            old.body["active"] = False
            stored_survivor = current.get(survivor_key)
            if not (stored_survivor and _links_to(stored_old, stored_survivor["id"])):
                old.body["link"] = [{"other": {"reference": survivor.full_url},
                                     "type": "replaced-by"}]
            if not (stored_survivor and _links_to(stored_survivor, stored_old["id"])):
                survivor.body["link"] = [{"other": {"reference": old.full_url},
                                          "type": "replaces"}]
            for moved in await self._referrers(stored_old["id"]):
                _move_references(moved, f"Patient/{stored_old['id']}", survivor.full_url)
                url = f"{moved['resourceType']}/{moved['id']}"
                entries[url] = {"fullUrl": f"{self.base}/{url}", "resource": moved,
                                "request": {"method": "PUT", "url": url,
                                            "ifMatch": f'W/"{moved["meta"]["versionId"]}"'}}
        return skip

    async def _referrers(self, patient_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for type_, param in PATIENT_REFERENCES.items():
            answer = await self.ix.dispatch(FhirRequest(
                method="GET", path=type_, base=self.base,
                params=((param, f"Patient/{patient_id}"), ("_count", "1000"))))
            for entry in jsonio.loads(answer.body or b"{}").get("entry", ()):
                if entry.get("search", {}).get("mode", "match") == "match":
                    out.append(entry["resource"])
        return out

    # -- replay -------------------------------------------------------------------------

    async def replay(self, record: LoggedMessage) -> Outcome:
        """Process a logged message again (`fhirpm hl7 replay`), bypassing the dedup."""
        sender = self.settings.sender(record.sender, record.facility)
        try:
            msg = parser.parse(record.raw_bytes, sender.charset)
        except V2Error as err:
            record.status, record.error = "rejected", str(err)
            await self.log.save(record)
            return Outcome(record.acks, record)
        return await self.process(record, msg)


# -- merging over the stored version ---------------------------------------------------------

_ACCUMULATE = ("identifier", "link")  # list elements that gather values from every source


def merge(stored: dict[str, Any] | None, res: MappedResource) -> dict[str, Any]:
    """What the message says over what is stored: sent elements replace, empty fields keep,
    `""` removes; identifiers and links accumulate; defaults fill what is still missing."""
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
        from datetime import datetime

        try:
            same = datetime.fromisoformat(stored.replace("Z", "+00:00")) == \
                datetime.fromisoformat(new.replace("Z", "+00:00"))
        except ValueError:
            return new
        return stored if same else new
    return new


def _is(stored: dict[str, Any], res: MappedResource) -> bool:
    """Whether a stored resource is the one `res` identifies (its id, or an identifier
    with the same system and value)."""
    ident = res.identity
    if ident is None:
        return False
    if ident.id is not None:
        return stored.get("id") == ident.id
    return any(i.get("value") == ident.value and (ident.system is None
                                                 or i.get("system") == ident.system)
               for i in stored.get("identifier") or () if isinstance(i, dict))


def _links_to(patient: dict[str, Any], other_id: str) -> bool:
    return any((link.get("other") or {}).get("reference", "").endswith(f"Patient/{other_id}")
               for link in patient.get("link") or ())


def _drop_references(resource: dict[str, Any], urls: set[str]) -> None:
    """Remove list items referencing entries left out (a merged-away patient never
    stored, in the Provenance targets)."""
    if not urls:
        return
    for name, value in list(resource.items()):
        if isinstance(value, list):
            resource[name] = [v for v in value if not (
                isinstance(v, dict) and v.get("reference") in urls)]


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


def _locations(body: bytes | None) -> list[str]:
    out = []
    for entry in jsonio.loads(body or b"{}").get("entry", ()):
        location = (entry.get("response") or {}).get("location", "")
        parts = location.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2:
            out.append(f"{parts[-2]}/{parts[-1]}")
    return out


def _as_v2(err: FhirError) -> V2Error:
    """A repository error (validation, conflict) as an application error (AE, 207)."""
    out = V2Error(err.category, err.diagnostics, hl7_code="207")
    out.issues = err.issues
    return out


def _sniff_header(raw: bytes) -> tuple[str, str] | None:
    """MSH-3/MSH-4 before decoding, to pick the sender's charset override."""
    head = raw.lstrip(b"\xef\xbb\xbf \r\n")[:1024].decode("latin-1")
    if not head.startswith("MSH") or len(head) < 4:
        return None
    fields = head.split("\r")[0].split("\n")[0].split(head[3])
    comp = fields[1][:1] if len(fields) > 1 else "^"
    get = lambda n: fields[n - 1].split(comp)[0] if len(fields) >= n else ""  # noqa: E731
    return get(3), get(4)


def _mapping_dirs(settings: Hl7Settings) -> list[str]:
    from fhirpm.hl7v2.engine import default_mappings_dir

    return [str(default_mappings_dir()), *settings.mappings]

