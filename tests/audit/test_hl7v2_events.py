"""An HL7 v2 message received leaves an AuditEvent: the sender, the message, what it wrote
and its patient, the outcome following the ACK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirpm.app import build_interactions
from fhirpm.audit.recorder import Recorder
from fhirpm.config import Hl7Settings
from fhirpm.hl7v2.inbound import Inbound
from fhirpm.repository.interactions import Interactions
from fhirpm.storage.factory import store_from_settings
from tests.audit.conftest import audit_settings, data_refs, patient_of, subtype
from tests.conftest import BASE
from tests.hl7v2.samples import adt


@pytest.fixture
async def ix(tmp_path: Path) -> AsyncIterator[Interactions]:
    settings = audit_settings(tmp_path)
    store = store_from_settings(settings)
    await store.open()
    try:
        yield build_interactions(settings, store)
    finally:
        await store.close()


async def events(ix: Interactions) -> list[dict]:
    recorder = ix.observer
    assert isinstance(recorder, Recorder)
    return [e async for _, e in recorder.trail.events() if e is not None]


async def test_message_receipt_is_recorded(ix: Interactions) -> None:
    inbound = Inbound(ix, Hl7Settings(port=0), BASE)
    recorder = ix.observer
    assert isinstance(recorder, Recorder)
    groups = recorder.batch.groups
    outcome = await inbound.receive(adt("A04", "CTRL-1").encode("latin-1"), "192.0.2.7")
    assert outcome.acks
    stored = await events(ix)
    received = [e for e in stored if subtype(e) == "hl7v2-receive"]
    # the receipt is the one event: the message's writes are its steps, not events of
    # their own; committed with the message's data, not by a commit of its own
    assert len(received) == 1 and stored == received
    assert recorder.batch.groups == groups
    event = received[0]
    assert event["outcome"] == "0" and event["action"] == "C"
    assert event["agent"][0]["who"]["identifier"]["value"] == "EHR^CLINIC"
    assert event["agent"][0]["network"]["address"] == "192.0.2.7"
    message = event["entity"][0]
    assert message["what"]["identifier"]["value"] == "CTRL-1"
    assert message["description"] == "ADT^A04"
    patient = patient_of(event)
    assert patient is not None and patient.startswith("Patient/")
    assert f"{patient}" in [r.rsplit("/_history", 1)[0] for r in data_refs(event)]
    # every version the message wrote, exactly: the current versions of what it names
    written = data_refs(event)
    assert sorted(r.rsplit("/_history", 1)[0] for r in written) == sorted(
        outcome.message.resources)
    for ref in written:
        type_, id_, _, version = ref.split("/")
        current = await ix.repo.store.read(type_, id_)
        assert current is not None and str(current.version) == version


async def test_an_update_by_a_resend_with_a_new_control_id_lists_the_new_versions(
        ix: Interactions) -> None:
    inbound = Inbound(ix, Hl7Settings(port=0), BASE)
    await inbound.receive(adt("A04", "CTRL-1").encode("latin-1"), "192.0.2.7")
    changed = adt("A08", "CTRL-2").replace("Doe^Jane", "Doe^Janet")
    assert "Doe^Janet" in changed
    await inbound.receive(changed.encode("latin-1"), "192.0.2.7")
    first, second = [e for e in await events(ix) if subtype(e) == "hl7v2-receive"]
    patient = patient_of(second)
    assert patient is not None
    before = [r for r in data_refs(first) if r.startswith(patient + "/")]
    after = [r for r in data_refs(second) if r.startswith(patient + "/")]
    assert before == [f"{patient}/_history/1"] and after == [f"{patient}/_history/2"]


async def test_garbage_is_recorded_as_refused(ix: Interactions) -> None:
    inbound = Inbound(ix, Hl7Settings(port=0), BASE)
    await inbound.receive(b"this is not HL7", "192.0.2.8")
    [event] = [e for e in await events(ix) if subtype(e) == "hl7v2-receive"]
    assert event["outcome"] == "4" and event["outcomeDesc"]
