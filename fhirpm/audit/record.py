"""The stored form of audit records, and the AuditEvents they are served as.

Every read leaves a record, so what a request pays for its record must be small next to
the read itself. A whole BALP AuditEvent is ~2.4 KB of nested JSON: building, sealing and
serialising one cost more than the read. So a RESTful interaction is stored as its facts
(`rest`): a compact JSON array of who, what, when and the outcome, a few hundred bytes
made in microseconds, and the chain seals those bytes. The AuditEvent is derived from the
facts when someone reads or searches the trail (`render`), by the same BALP builder
(`fhirpm.audit.events`), so it is the event that would have been stored, with its seal
(seq, previous hash, hash) in an extension. Rare events (logins, tokens, consents, HL7 v2
messages, the trail's own maintenance) are stored whole (`whole`), in canonical form.

Payload formats (the first byte tells them apart): `[` the facts array, version-tagged by
its first element; `{` a whole AuditEvent.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from fhirpm.audit import events as ev
from fhirpm.audit.chain import CHAIN_URL, canonical
from fhirpm.fhir import jsonio
from fhirpm.storage.port import AuditDraft, AuditEntry

TYPE = "AuditEvent"
_PREFIX = "ae-"
_REST = "rest1"  # the facts array's tag: bump it when the layout changes


def event_id(seq: int) -> str:
    return f"{_PREFIX}{seq:012d}"


def seq_of(id: str) -> int | None:
    digits = id[len(_PREFIX):]
    return int(digits) if id.startswith(_PREFIX) and digits.isdigit() else None


# -- writing: drafts ------------------------------------------------------------------------


def rest(access: ev.Access, who: ev.Who, server: ev.Server, outcome: ev.Outcome,
         recorded: str) -> list[AuditDraft]:
    """One draft per patient touched (BALP: one patient per event), at least one."""
    if access.interaction not in ev.INTERACTIONS:
        raise ValueError(f"not an auditable interaction: {access.interaction!r}")
    resources = list(access.resources)
    refs = [_unversioned(r) for r in resources]
    return [_draft(recorded, access.interaction, resources, refs, patient, access.query,
                   access.operation, outcome.status, outcome.description, who, server)
            for patient in list(dict.fromkeys(access.patients)) or [None]]


def read(interaction: str, type: str, id: str, version: int, patients: list[str],
         query: str, status: int, who: ev.Who, server: ev.Server,
         recorded: str) -> list[AuditDraft]:
    """`rest` for a read or vread of one version (most records): the same drafts, made
    without the general walk (no versioned references to strip, no Access to build)."""
    reference = f"{type}/{id}"
    resources = [f"{reference}/_history/{version}"]
    return [_draft(recorded, interaction, resources, [reference], patient, query, None,
                   status, None, who, server)
            for patient in (list(dict.fromkeys(patients)) if patients else [None])]


def read_payloads(interaction: str, type: str, id: str, version: int, patients: list[str],
                  query: str, status: int, who: ev.Who, server: ev.Server,
                  recorded: str) -> list[bytes]:
    """The payloads of `read`'s drafts, and only them: what a journal keeps (`draft_of`
    makes the drafts again). The commonest record, so made with the least work."""
    resources = [f"{type}/{id}/_history/{version}"]
    client_id, user, fhir_user, address, request_id = who
    if len(patients) > 1:
        patients = list(dict.fromkeys(patients))
    return [orjson.dumps([_REST, recorded, interaction, resources, patient, query, None,
                          status, None, client_id, user, fhir_user, address, request_id,
                          server.base_url, server.name, server.site])
            for patient in (patients or (None,))]


def draft_of(payload: bytes) -> AuditDraft:
    """The draft whose payload `payload` is: its recorded instant and references, read
    back from the facts (the layout `_draft` writes) or the whole AuditEvent (`whole`)."""
    if payload[:1] == b"{":
        return whole(jsonio.loads(payload), payload)
    facts = orjson.loads(payload)
    if not facts or facts[0] != _REST:
        raise ValueError(f"unknown audit record format {facts[:1]!r}")
    named = [_unversioned(r) for r in facts[3]]
    if facts[11]:
        named.append(facts[11])
    if facts[4] is not None:
        named.append(f"Patient/{facts[4]}")
    return AuditDraft(facts[1], tuple(dict.fromkeys(named)), payload)


def _draft(recorded: str, interaction: str, resources: list[str], refs: list[str],
           patient: str | None, query: str | None, operation: str | None, status: int,
           description: str | None, who: ev.Who, server: ev.Server) -> AuditDraft:
    """The facts array, in its one layout (`_event` reads it back)."""
    facts = [_REST, recorded, interaction, resources, patient, query, operation, status,
             description, who.client_id, who.user, who.fhir_user, who.address,
             who.request_id, server.base_url, server.name, server.site]
    named = [*refs]
    if who.fhir_user:
        named.append(who.fhir_user)
    if patient is not None:
        named.append(f"Patient/{patient}")
    return AuditDraft(recorded, tuple(dict.fromkeys(named)), orjson.dumps(facts))


def whole(event: dict[str, Any], payload: bytes | None = None) -> AuditDraft:
    """A complete AuditEvent (logins, tokens, HL7 v2 ...) as a draft (`payload`: its
    canonical form, when already made)."""
    refs: list[str] = []
    for agent in event.get("agent") or ():
        ref = (agent.get("who") or {}).get("reference") if isinstance(agent, dict) else None
        if isinstance(ref, str):
            refs.append(ref)
    for entity in event.get("entity") or ():
        ref = (entity.get("what") or {}).get("reference") if isinstance(entity, dict) else None
        if isinstance(ref, str):
            refs.append(_unversioned(ref))
    return AuditDraft(str(event.get("recorded", "")), tuple(dict.fromkeys(refs)),
                      canonical(event) if payload is None else payload)


def _unversioned(reference: str) -> str:
    head, _, _ = reference.partition("/_history/")
    return head


# -- reading: AuditEvents -----------------------------------------------------------------


def render(entry: AuditEntry, *, with_payload: bool = False) -> dict[str, Any]:
    """The AuditEvent an entry stands for, with id, meta and its seal.

    `with_payload` adds the sealed bytes to the seal extension (exports: a SIEM can then
    check each hash without the store)."""
    event = _event(entry.payload)
    seal = [{"url": "seq", "valueString": str(entry.seq)},
            {"url": "previous", "valueString": entry.previous},
            {"url": "hash", "valueString": entry.hash}]
    if with_payload:
        seal.append({"url": "payload",
                     "valueBase64Binary": base64.b64encode(entry.payload).decode()})
    body = {"resourceType": TYPE, "id": event_id(entry.seq),
            "meta": {"versionId": "1", "lastUpdated": entry.recorded},
            **{k: v for k, v in event.items() if k not in ("resourceType", "id", "meta")}}
    body["extension"] = [*event.get("extension", ()), {"url": CHAIN_URL, "extension": seal}]
    return body


def render_bytes(entry: AuditEntry) -> bytes:
    return jsonio.dumps(render(entry))


def _event(payload: bytes) -> dict[str, Any]:
    if payload[:1] == b"{":
        return jsonio.loads(payload)
    facts = orjson.loads(payload)
    if not facts or facts[0] != _REST:
        raise ValueError(f"unknown audit record format {facts[:1]!r}")
    (_, recorded, interaction, resources, patient, query, operation, status, description,
     client_id, user, fhir_user, address, request_id, base_url, name, site) = facts
    access = ev.Access(interaction, tuple(resources), (patient,) if patient else (), query,
                       operation)
    who = ev.Who(client_id, user, fhir_user, address, request_id)
    server = ev.Server(base_url, name, site)
    [event] = ev.rest_events(access, who, server, ev.Outcome(status, description), recorded)
    return event
