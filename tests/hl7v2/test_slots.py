"""SIU messages and Slots: `links:` in mappings/messages/siu.yaml point Appointment.slot at
the Slot of a participant's Schedule at the appointment's start, so the scheduling write
rule (no double booking) applies to HL7 v2 writes too. Over a real MLLP socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhirpm.app import create_app
from fhirpm.config import Hl7Settings, Settings
from fhirpm.fhir import jsonio
from fhirpm.hl7v2 import ack, parser
from fhirpm.hl7v2.engine import Engine
from fhirpm.hl7v2.mllp import MllpClient
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.storage.port import HistoryQuery
from tests.conftest import BASE
from tests.hl7v2.samples import siu

START = "2024-03-01T09:00:00+01:00"


def test_the_siu_map_declares_the_slot_link() -> None:
    mapped = Engine().map(parser.parse(siu("S12", "L0")))
    (link,) = mapped.links
    assert (link.path, link.type) == ("slot", "Slot")
    assert dict(link.where) == {"schedule.actor": "participant.actor", "start": "start"}


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[Interactions, MllpClient]]:
    """The whole app (scheduling's write rules included) with its MLLP listener."""
    app = create_app(settings.model_copy(update={"hl7": Hl7Settings(enabled=True, port=0)}))
    async with app.router.lifespan_context(app), \
            MllpClient("127.0.0.1", app.state.hl7.server.port) as client:
        yield app.state.interactions, client


async def send(client: MllpClient, text: str) -> ack.AckInfo:
    (reply,) = await client.send(text)
    return ack.read(reply)


async def put(ix: Interactions, resource: dict[str, Any]) -> None:
    await ix.dispatch(FhirRequest("PUT", f"{resource['resourceType']}/{resource['id']}",
                                  BASE, resource=resource))


async def read(ix: Interactions, type_: str, id_: str) -> dict[str, Any]:
    return jsonio.loads((await ix.repo.read(type_, id_)).body)


async def find(ix: Interactions, type_: str, **params: str) -> list[dict[str, Any]]:
    answer = await ix.dispatch(FhirRequest("GET", type_, BASE, tuple(params.items())))
    return [e["resource"] for e in jsonio.loads(answer.body).get("entry", ())
            if e.get("search", {}).get("mode") == "match"]


async def schedule_for_the_practitioner(ix: Interactions, client: MllpClient) -> str:
    """The practitioner of AIP-3 (stored by a first message), with a Schedule and a free
    Slot at START; returns the Slot id."""
    assert (await send(client, siu("S12", "P0", filler="SETUP", start="20240201080000+0100"))
            ).code == "AA"
    (practitioner,) = await find(ix, "Practitioner")
    await put(ix, {"resourceType": "Schedule", "id": "sch1",
                   "actor": [{"reference": f"Practitioner/{practitioner['id']}"}]})
    await put(ix, {"resourceType": "Slot", "id": "slot1", "schedule": {"reference":
                   "Schedule/sch1"}, "status": "free", "start": "2024-03-01T08:00:00Z",
                   "end": "2024-03-01T08:30:00Z"})
    await put(ix, {"resourceType": "Slot", "id": "later", "schedule": {"reference":
                   "Schedule/sch1"}, "status": "free", "start": "2024-03-01T10:00:00Z",
                   "end": "2024-03-01T10:30:00Z"})
    return "slot1"


async def data_versions(ix: Interactions) -> int:
    return await ix.repo.store.history_count(HistoryQuery())  # the audit log is apart


async def test_s12_links_the_slot_and_a_second_booking_of_it_is_refused(
        served: tuple[Interactions, MllpClient]) -> None:
    ix, mllp = served
    slot_id = await schedule_for_the_practitioner(ix, mllp)
    assert (await send(mllp, siu("S12", "B1", filler="APT1"))).code == "AA"
    (appointment,) = await find(ix, "Appointment", identifier="APT1")
    assert appointment["slot"] == [{"reference": f"Slot/{slot_id}"}]
    assert (await read(ix, "Slot", slot_id))["status"] == "busy"

    before = await data_versions(ix)
    resent = await send(mllp, siu("S12", "B1-again", filler="APT1"))  # a new control id
    assert resent.code == "AA" and await data_versions(ix) == before  # not a Provenance

    (reply,) = await mllp.send(siu("S12", "B2", filler="APT2"))
    taken = ack.read(reply)
    assert taken.code == "AE"
    assert f"Slot/{slot_id} is already booked" in taken.error
    assert parser.parse(reply).first("ERR").value(2) == "SCH"  # where: the appointment
    assert await find(ix, "Appointment", identifier="APT2") == []  # nothing half-written
    assert await data_versions(ix) == before


async def test_a_moved_appointment_leaves_its_old_slot(
        served: tuple[Interactions, MllpClient]) -> None:
    ix, mllp = served
    slot_id = await schedule_for_the_practitioner(ix, mllp)
    assert (await send(mllp, siu("S12", "M1", filler="APT1"))).code == "AA"
    moved = siu("S13", "M2", filler="APT1", start="20240301110000+0100")  # 10:00Z
    assert (await send(mllp, moved)).code == "AA"
    (appointment,) = await find(ix, "Appointment", identifier="APT1")
    assert appointment["slot"] == [{"reference": "Slot/later"}]
    assert (await read(ix, "Slot", slot_id))["status"] == "free"
    assert (await read(ix, "Slot", "later"))["status"] == "busy"
    nowhere = siu("S13", "M3", filler="APT1", start="20240301150000+0100")  # no Slot then
    assert (await send(mllp, nowhere)).code == "AA"
    (appointment,) = await find(ix, "Appointment", identifier="APT1")
    assert "slot" not in appointment
    assert (await read(ix, "Slot", "later"))["status"] == "free"


async def test_cancelling_frees_the_slot(served: tuple[Interactions, MllpClient]) -> None:
    ix, mllp = served
    slot_id = await schedule_for_the_practitioner(ix, mllp)
    assert (await send(mllp, siu("S12", "C1", filler="APT1"))).code == "AA"
    assert (await send(mllp, siu("S15", "C2", filler="APT1", status=""))).code == "AA"
    assert (await read(ix, "Slot", slot_id))["status"] == "free"
    assert (await send(mllp, siu("S12", "C3", filler="APT2"))).code == "AA"  # free again


async def test_a_slotted_appointment_echoed_back_changes_nothing(
        served: tuple[Interactions, MllpClient]) -> None:
    from fhirpm.config import Destination
    from fhirpm.hl7v2.outbound import CONSUMER, Outbound

    ix, mllp = served
    await schedule_for_the_practitioner(ix, mllp)
    assert (await send(mllp, siu("S12", "E1", filler="APT1"))).code == "AA"
    out = Outbound(ix.repo.store, Hl7Settings(destinations=[Destination(
        name="ehr", host="127.0.0.1", port=9, events=["SIU^S12"])]))
    await out.feed.catch_up(CONSUMER, out.enqueue)
    (echo,) = [e["message"] for e in await out.pending() if "|APT1" in e["message"]]
    store = ix.repo.store
    kinds = ("Appointment", "Slot", "Patient", "Practitioner", "Schedule")
    before = {k: await store.history_count(HistoryQuery(type=k)) for k in kinds}
    assert "AIP|" in echo and "SCH|" in echo
    assert (await send(mllp, echo)).code == "AA"
    assert {k: await store.history_count(HistoryQuery(type=k)) for k in kinds} == before
