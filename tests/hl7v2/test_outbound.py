"""The outbox: change feed -> v2 events -> per-destination delivery over MLLP, with retries,
dead letters, ordering, no duplicates; and the round trip back in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhirpm.config import Destination, Hl7Settings
from fhirpm.fhir import jsonio
from fhirpm.hl7v2 import ack, parser
from fhirpm.hl7v2.inbound import Inbound
from fhirpm.hl7v2.mllp import MllpClient, MllpServer
from fhirpm.hl7v2.outbound import CONSUMER, DEAD, SENT, Outbound
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.storage.port import HistoryQuery
from tests.conftest import BASE

PATIENT = {"resourceType": "Patient", "id": "p1",
           "identifier": [{"system": "urn:oid:1.2.3", "value": "MRN77"}],
           "name": [{"family": "Doe", "given": ["Jane"]}], "gender": "female",
           "birthDate": "1980-01-02"}
APPOINTMENT = {"resourceType": "Appointment", "id": "a1", "status": "booked",
               "identifier": [{"system": "urn:oid:1.2.4", "value": "APT77"}],
               "start": "2024-03-01T09:00:00+01:00", "end": "2024-03-01T09:30:00+01:00",
               "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]}


class Partner:
    """A receiving system on loopback: records messages, answers with scripted codes."""

    def __init__(self, codes: list[str] | None = None) -> None:
        self.codes = codes or []
        self.received: list[str] = []
        self.server = MllpServer(self.handle, "127.0.0.1", 0)

    async def handle(self, data: bytes, peer: str, early: Any) -> list[str]:
        text = data.decode()
        self.received.append(text)
        code = self.codes.pop(0) if self.codes else "AA"
        return [ack.build(parser.parse(text).header, code)]


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    p = Partner()
    async with p.server:
        yield p


def settings_for(partner: Partner, **extra: Any) -> Hl7Settings:
    dest = Destination(name="ehr", host="127.0.0.1", port=partner.server.port)
    return Hl7Settings(destinations=[dest], retry_initial=60, **extra)


async def put(ix: Interactions, resource: dict[str, Any]) -> None:
    await ix.dispatch(FhirRequest("PUT", f"{resource['resourceType']}/{resource['id']}", BASE,
                                  resource=resource))


async def pump(out: Outbound) -> list[str]:
    await out.feed.catch_up(CONSUMER, out.enqueue)
    return [e["event"] for e in await out.pending()]


async def test_booked_appointment_leaves_as_s12(ix: Interactions, partner: Partner) -> None:
    out = Outbound(ix.repo.store, settings_for(partner))
    await put(ix, PATIENT)
    await put(ix, APPOINTMENT)
    assert await pump(out) == ["ADT^A04", "SIU^S12"]
    dest = out.settings.destinations[0]
    async with MllpClient("127.0.0.1", partner.server.port) as client:
        assert await out.deliver_one(dest, client) is None
        assert await out.deliver_one(dest, client) is None
    assert await out.pending() == []
    siu = parser.parse(partner.received[1])
    assert siu.header.message_code == "SIU" and siu.header.event == "S12"
    assert siu.first("SCH").value(2) == "APT77" and siu.first("SCH").value(25) == "Booked"
    assert siu.first("PID").value(3) == "MRN77" and siu.first("PID").value(5, 2) == "Jane"
    assert len(await ix.repo.store.doc_list(SENT)) == 2


@pytest.mark.parametrize(("change", "event"), [
    ({"status": "cancelled"}, "SIU^S15"), ({"status": "noshow"}, "SIU^S26"),
    ({"start": "2024-03-02T09:00:00+01:00", "end": "2024-03-02T09:30:00+01:00"}, "SIU^S13"),
    ({"comment": "bring results"}, "SIU^S14"), ({"status": "entered-in-error"}, "SIU^S17")])
async def test_appointment_changes_map_to_events(ix: Interactions, partner: Partner,
                                                 change: dict[str, Any], event: str) -> None:
    out = Outbound(ix.repo.store, settings_for(partner))
    await put(ix, PATIENT)
    await put(ix, APPOINTMENT)
    await put(ix, {**APPOINTMENT, **change})
    assert (await pump(out))[-1] == event


async def test_other_resources_map_to_adt_and_dft(ix: Interactions, partner: Partner) -> None:
    out = Outbound(ix.repo.store, settings_for(partner))
    await put(ix, PATIENT)
    await put(ix, {**PATIENT, "gender": "other"})
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
                 "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}}
    await put(ix, encounter)
    await put(ix, {**encounter, "status": "finished"})
    await put(ix, {"resourceType": "ChargeItem", "id": "c1", "status": "billable",
                   "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                        "code": "99213"}]},
                   "subject": {"reference": "Patient/p1"},
                   "identifier": [{"value": "T1"}]})
    assert await pump(out) == ["ADT^A04", "ADT^A08", "ADT^A03", "DFT^P03"]
    dft = parser.parse((await out.pending())[-1]["message"])
    assert dft.first("FT1").value(7) == "99213" and dft.first("FT1").value(7, 3) == "C4"


async def test_redelivered_changes_queue_nothing_twice(ix: Interactions,
                                                       partner: Partner) -> None:
    out = Outbound(ix.repo.store, settings_for(partner))
    await put(ix, PATIENT)
    changes = await ix.repo.store.changes(0, 100)
    await out.enqueue(changes)
    await out.enqueue(changes)  # at-least-once delivery from the feed
    assert len(await out.pending()) == 1


async def test_ae_retries_in_order_and_ar_goes_to_dead_letters(ix: Interactions,
                                                                partner: Partner) -> None:
    now = 1_700_000_000.0  # the outbox's clock, fixed: due times are exact
    out = Outbound(ix.repo.store, settings_for(partner), clock=lambda: now)
    await put(ix, PATIENT)
    await put(ix, APPOINTMENT)
    await pump(out)
    dest = out.settings.destinations[0]
    partner.codes = ["AE", "AR"]
    async with MllpClient("127.0.0.1", partner.server.port) as client:
        wait = await out.deliver_one(dest, client)
        assert wait == out.settings.retry_initial  # backing off from the first failure
        assert await out.deliver_one(dest, client) == wait  # not due yet: nothing sent
        now += wait - 0.5
        assert await out.deliver_one(dest, client) == 0.5
        assert len(partner.received) == 1  # nothing overtook the failing message
        first = (await out.pending())[0]
        assert first["attempts"] == 1 and first["last_error"].startswith("AE")
        await ix.repo.store.doc_put("hl7v2.outbox", first["key"], jsonio.dumps(
            {**{k: v for k, v in first.items() if k != "key"}, "next_at": 0}))
        assert await out.deliver_one(dest, client) is None  # AR: dead letter
        assert await out.deliver_one(dest, client) is None  # the next one goes out
    assert [d.key for d in await ix.repo.store.doc_list(DEAD)] == [first["key"]]
    assert await out.pending() == []
    assert parser.parse(partner.received[-1]).header.event == "S12"


async def test_unreachable_partner_keeps_the_message(ix: Interactions) -> None:
    dest = Destination(name="down", host="127.0.0.1", port=9)  # discard port: refused
    out = Outbound(ix.repo.store, Hl7Settings(destinations=[dest], retry_initial=60))
    await put(ix, PATIENT)
    await pump(out)
    client = MllpClient("127.0.0.1", 9, timeout=2)
    assert await out.deliver_one(dest, client) is not None
    (entry,) = await out.pending()
    assert entry["attempts"] == 1 and "send failed" in entry["last_error"]


@pytest.mark.usefixtures("conditional")
async def test_round_trip_s12_back_in_updates_nothing(ix: Interactions, partner: Partner,
                                                      inbound: Inbound) -> None:
    out = Outbound(ix.repo.store, settings_for(partner))
    await put(ix, PATIENT)
    await put(ix, APPOINTMENT)
    await pump(out)
    siu = (await out.pending())[-1]["message"]
    store = ix.repo.store
    before = {t: await store.history_count(HistoryQuery(type=t))
              for t in ("Patient", "Appointment")}
    outcome = await inbound.receive(siu.encode())
    assert outcome.message.status == "processed", outcome.message.error
    after = {t: await store.history_count(HistoryQuery(type=t))
             for t in ("Patient", "Appointment")}
    assert after == before


async def test_outbox_and_cursor_survive_a_restart(ix: Interactions, partner: Partner) -> None:
    first = Outbound(ix.repo.store, settings_for(partner))
    await put(ix, PATIENT)
    assert await pump(first) == ["ADT^A04"]
    restarted = Outbound(ix.repo.store, settings_for(partner))  # a new process, same store
    assert await pump(restarted) == ["ADT^A04"]  # still queued once, not re-queued
    await put(ix, APPOINTMENT)
    assert await pump(restarted) == ["ADT^A04", "SIU^S12"]
