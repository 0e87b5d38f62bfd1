"""Virtual visits: a booked virtual Appointment gets a join link from the configured video
provider, on every write path, unique per appointment and stable across updates."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirpm.app import create_app
from fhirpm.config import SchedulingSettings, Settings
from fhirpm.scheduling import model, video, visit
from tests.conftest import FHIR_JSON

MEET = "https://meet.example.org/"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"scheduling": SchedulingSettings(video_base_url=MEET)})


def _appointment(patient: str, status: str, *, virtual: bool = True) -> dict[str, Any]:
    kind = model.VIRTUAL if virtual else model.IN_PERSON
    return {"resourceType": "Appointment", "status": status,
            "serviceType": [{"coding": [kind]}],
            "start": "2030-03-04T09:00:00Z", "end": "2030-03-04T09:15:00Z",
            "participant": [{"actor": {"reference": f"Patient/{patient}"},
                             "status": "accepted"}]}


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(resource["resourceType"], json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    stored = (await client.get(f"{resource['resourceType']}/{r.json()['id']}")).json()
    assert r.json() == stored  # the answer is what the unit committed, link included
    return stored


async def _patient(client: httpx.AsyncClient) -> str:
    return (await _create(client, {"resourceType": "Patient"}))["id"]


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = await client.put(f"Appointment/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    stored = (await client.get(f"Appointment/{resource['id']}")).json()
    assert r.json() == stored  # the answer is what the unit committed, link included
    return stored


async def test_booked_virtual_visit_gets_a_unique_link(client: httpx.AsyncClient) -> None:
    patient = await _patient(client)
    one = await _create(client, _appointment(patient, "booked"))
    two = await _create(client, _appointment(patient, "booked"))
    links = [video.join_link(one), video.join_link(two)]
    assert all(link and link.startswith(MEET + "fhirpm-") for link in links)
    assert links[0] != links[1]
    room = links[0].removeprefix(MEET)
    assert len(room) >= len("fhirpm-") + 22  # 128 random bits, URL-safe
    ext = model.extension(one, video.VIRTUAL_SERVICE)
    assert {"url": "channelType",
            "valueCoding": {"system": video.CHANNELS, "code": "jitsi"}} in ext["extension"]
    assert {"url": "sessionKey", "valueString": room} in ext["extension"]


async def test_link_added_when_booked_and_kept(client: httpx.AsyncClient) -> None:
    patient = await _patient(client)
    appt = await _create(client, _appointment(patient, "proposed"))
    assert video.join_link(appt) is None  # not booked yet
    appt = await _put(client, {**appt, "status": "booked"})
    link = video.join_link(appt)
    assert link is not None
    # a client that drops the extension gets the same link back
    dropped = {k: v for k, v in appt.items() if k != "extension"}
    appt = await _put(client, {**dropped, "comment": "bring your insurance card"})
    assert video.join_link(appt) == link
    # check-in keeps it, and the visit is a virtual Encounter
    appt = await _put(client, {**appt, "status": "checked-in"})
    assert video.join_link(appt) == link
    enc = (await client.get(f"Encounter/{visit.encounter_id(appt['id'])}")).json()
    assert enc["class"]["code"] == "VR"
    # a link the practice put itself (a pasted meeting) is respected
    own = video.virtual_service("zoom", video.VideoRoom("https://zoom.example/j/1"))
    other = await _create(client, {**_appointment(patient, "booked"), "extension": [own]})
    assert video.join_link(other) == "https://zoom.example/j/1"


async def test_transaction_and_in_person(client: httpx.AsyncClient) -> None:
    patient = await _patient(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _appointment(patient, "booked"),
         "request": {"method": "POST", "url": "Appointment"}},
        {"resource": _appointment(patient, "booked", virtual=False),
         "request": {"method": "POST", "url": "Appointment"}}]}
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    ids = [e["response"]["location"].split("Appointment/")[1].split("/")[0]
           for e in r.json()["entry"]]
    virtual, in_person = [(await client.get(f"Appointment/{i}")).json() for i in ids]
    assert video.join_link(virtual) is not None
    assert video.join_link(in_person) is None


class FixedRooms:
    """A provider of the test's own: proves the interface is all a provider needs."""

    name = "fixed"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def room(self, appointment: dict[str, Any]) -> video.VideoRoom:
        return video.VideoRoom(self.base_url + "room-1")


async def test_pluggable_provider(settings: Settings) -> None:
    video.register_provider("fixed", FixedRooms)
    scheduling = SchedulingSettings(video_base_url=MEET, video_provider="fixed")
    provider = video.provider_from_settings(scheduling)
    assert isinstance(provider, FixedRooms)
    assert (await provider.room({})).url == MEET + "room-1"
    assert video.provider_from_settings(SchedulingSettings()) is None  # no base: no links
    with pytest.raises(ValueError, match="unknown video provider"):
        create_app(settings.model_copy(update={"scheduling": SchedulingSettings(
            video_base_url=MEET, video_provider="nope")}))


async def test_no_links_without_a_base(tmp_path: Any) -> None:
    app: FastAPI = create_app(Settings(store_url=f"sqlite:///{tmp_path / 'x.db'}",
                                       auth={"enabled": False}, log_json=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://testserver/fhir/") as client:
            patient = await _patient(client)
            appt = await _create(client, _appointment(patient, "booked"))
            assert video.join_link(appt) is None


async def test_book_a_virtual_slot(client: httpx.AsyncClient, app: FastAPI) -> None:
    """$book (staff, and a patient booking for themselves) of a virtual Schedule's Slot:
    the booking rule takes the Slot and the video rule adds the link, in one unit."""
    from tests.bearer import bearer, mint
    from tests.scheduling import booking_world as world

    place = await world.practice(client, virtual=True)
    await world.generate(client, place["schedule"]["id"], "2030-03-04", "2030-03-05")
    free = await world.slots(client, place["schedule"]["id"], status="free")
    links = []
    for n, slot in enumerate(free[:2]):
        pid = await world.patient(client)
        proposal = {**world.booked(slot["id"], pid, "proposed"),
                    "serviceType": slot.get("serviceType") or place["schedule"]["serviceType"]}
        headers = FHIR_JSON if n == 0 else {**FHIR_JSON, **bearer(await mint(
            app.state.auth, "patient/Appointment.cruds patient/Slot.rs", patient=pid))}
        r = await client.post("Appointment/$book", headers=headers, json={
            "resourceType": "Parameters",
            "parameter": [{"name": "appointment", "resource": proposal}]})
        assert r.status_code == 201, r.text
        appt_id = r.json()["entry"][0]["resource"]["id"]
        appt = (await client.get(f"Appointment/{appt_id}")).json()
        assert appt["status"] == "booked"
        links.append(video.join_link(appt))
        assert (await client.get(f"Slot/{slot['id']}")).json()["status"] == "busy"
    assert all(links) and links[0] != links[1]
