"""v2 -> log -> one transaction -> ACK, on a real store: idempotency, merges, nulls,
dedup, crash recovery, errors, enhanced mode, the message log's searches."""

from __future__ import annotations

from typing import Any

import pytest

from fhirpm.fhir import jsonio
from fhirpm.hl7v2 import ack, parser
from fhirpm.hl7v2.inbound import Inbound
from fhirpm.repository.interactions import Interactions
from fhirpm.storage.port import HistoryQuery
from tests.conftest import shared_path
from tests.hl7v2.samples import adt, siu

needs_conditional = pytest.mark.usefixtures("conditional")


async def search(ix: Interactions, type_: str, **params: str) -> list[dict[str, Any]]:
    """What conditional matching finds (at most 2: enough to tell none, one, several)."""
    from urllib.parse import urlencode

    from fhirpm.repository.conditional import find_matches

    found = await find_matches(ix, type_, urlencode(params), None)
    return [jsonio.loads(v.body) for v in found]


async def versions(ix: Interactions) -> int:
    """Versions of data written (the audit trail keeps its records apart, in its log)."""
    return await ix.repo.store.history_count(HistoryQuery())


def code(acks: list[str]) -> list[str]:
    return [ack.read(a).code for a in acks]


def expected_acks(accept: str, app: str, enhanced: bool) -> list[str]:
    if not enhanced:
        return ["AA"]
    return [c for c, cond in (("CA", accept), ("AA", app)) if ack.wanted(cond, ok=True)]


def with_control_id(raw: bytes, control: str) -> bytes:
    """The samples share MSH-10 values (MSG00001): give each its own, as senders must."""
    return raw.replace(parser.parse(raw).header.control_id.encode(), control.encode(), 1)


@needs_conditional
async def test_every_sample_commits_and_a_resend_changes_nothing(inbound: Inbound,
                                                                 ix: Interactions) -> None:
    for path in sorted(shared_path("hl7v2").glob("*.hl7")):
        raw = with_control_id(path.read_bytes(), "F-" + path.stem)
        first = await inbound.receive(raw)
        assert first.message.status == "processed", (path.name, first.message.error)
        h = parser.parse(raw).header
        assert code(first.acks) == expected_acks(h.accept_ack, h.app_ack, h.enhanced)
        before = await versions(ix)
        again = await inbound.receive(raw)  # same control id: answered from the log
        assert again.duplicate and again.acks == first.acks
        assert await versions(ix) == before
        resent = await inbound.receive(with_control_id(raw, "R-" + path.stem))
        assert resent.message.status == "processed", resent.message.error
        changed = await versions(ix) - before
        assert changed == 0, f"{path.name}: a resend wrote {changed} versions"
        assert not any(r.startswith("Provenance/") for r in resent.resources), path.name


@needs_conditional
async def test_patient_is_found_by_identifier_and_merged(inbound: Inbound,
                                                         ix: Interactions) -> None:
    assert code((await inbound.receive(adt("A04", "1").encode())).acks) == ["AA"]
    update = adt("A08", "2", pid='PID|1||MRN1^^^PRACTICE^MR||Doe^Janet||""|F')
    assert code((await inbound.receive(update.encode())).acks) == ["AA"]
    (patient,) = await search(ix, "Patient", identifier="MRN1")
    assert patient["name"] == [{"family": "Doe", "given": ["Janet"]}]  # sent: replaced
    assert patient["address"][0]["city"] == "Springfield"  # empty: kept
    assert "birthDate" not in patient  # "": deleted
    assert patient["meta"]["versionId"] == "2"


@needs_conditional
async def test_the_provenance_targets_what_the_message_wrote(inbound: Inbound,
                                                             ix: Interactions) -> None:
    first = await inbound.receive(adt("A04", "P1").encode())
    (provenance,) = [jsonio.loads(v.body) for v in (await ix.repo.store.history(
        HistoryQuery(type="Provenance")))]
    assert {t["reference"] for t in provenance["target"]} == {
        r for r in first.resources if not r.startswith("Provenance/")}

    update = adt("A08", "P2", pid="PID|1||MRN1^^^PRACTICE^MR||Doe^Janet")
    second = await inbound.receive(update.encode())
    patient = next(r for r in second.resources if r.startswith("Patient/"))
    provenances = [jsonio.loads(v.body) for v in (await ix.repo.store.history(
        HistoryQuery(type="Provenance")))]
    (latest,) = [p for p in provenances if p["id"] != provenance["id"]]
    assert [t["reference"] for t in latest["target"]] == [patient]  # the rest: unchanged
    assert f"Provenance/{latest['id']}" in second.resources


@needs_conditional
async def test_duplicate_control_id_is_not_reprocessed(inbound: Inbound,
                                                       ix: Interactions) -> None:
    first = await inbound.receive(adt("A04", "DUP").encode())
    count = await versions(ix)
    changed = adt("A08", "DUP", pid="PID|1||MRN1^^^PRACTICE^MR||Other^Name")
    second = await inbound.receive(changed.encode())
    assert second.duplicate and second.acks == first.acks
    assert await versions(ix) == count


@needs_conditional
async def test_crash_between_receive_and_ack_is_processed_on_resend(
        inbound: Inbound, ix: Interactions) -> None:
    raw = adt("A04", "CRASH").encode()
    header = parser.parse(raw).header
    await inbound.log.create(raw, header)  # logged, then the process died: no ACK went out
    outcome = await inbound.receive(raw)
    assert not outcome.duplicate and code(outcome.acks) == ["AA"]
    assert len(await search(ix, "Patient", identifier="MRN1")) == 1
    again = await inbound.receive(raw)
    assert again.duplicate
    assert len(await inbound.log.list(sender="EHR")) == 1


@needs_conditional
async def test_a_claim_cut_off_before_its_record_is_listed_and_processed_on_resend(
        inbound: Inbound, ix: Interactions) -> None:
    raw = adt("A04", "CUT").encode()
    claimed = inbound.log.new(raw, parser.parse(raw).header)
    await inbound.log.claim(claimed)  # the key claimed with the raw message, then a crash
    (waiting,) = await inbound.log.list(status="received")
    assert waiting.id == claimed.id and waiting.raw_bytes == raw
    outcome = await inbound.receive(raw)
    assert not outcome.duplicate and code(outcome.acks) == ["AA"]
    assert len(await search(ix, "Patient", identifier="MRN1")) == 1
    (record,) = await inbound.log.list(sender="EHR")
    assert record.id == claimed.id and record.status == "processed"
    assert (await inbound.receive(raw)).duplicate


@needs_conditional
async def test_latin1_and_z_segments(inbound: Inbound, ix: Interactions) -> None:
    text = adt("A04", "L1", sender="LATIN", pid="PID|1||MRN9^^^PRACTICE^MR||Müller^José",
               extra="ZPI|1|Grün")
    outcome = await inbound.receive(text.encode("latin-1"))
    assert code(outcome.acks) == ["AA"]
    (patient,) = await search(ix, "Patient", identifier="MRN9")
    assert patient["name"][0] == {"family": "Müller", "given": ["José"]}
    stored = await inbound.log.get(outcome.message.id)
    assert stored.raw_bytes == text.encode("latin-1")  # Z-segment and bytes kept exactly


async def test_garbage_is_rejected_logged_and_answered(inbound: Inbound) -> None:
    outcome = await inbound.receive(b"this is not HL7")
    info = ack.read(outcome.acks[0])
    assert info.code == "AR" and info.error
    assert outcome.message.status == "rejected"


async def test_unknown_event_gets_ar_with_err(inbound: Inbound) -> None:
    outcome = await inbound.receive(adt("A99", "U1").encode())
    msg = parser.parse(outcome.acks[0])
    assert msg.first("MSA").value(1) == "AR" and msg.first("MSA").value(2) == "U1"
    assert msg.first("ERR").value(3) == "201"
    assert outcome.message.status == "rejected"


@needs_conditional
async def test_mapping_failure_gets_ae_and_keeps_the_raw_message(inbound: Inbound) -> None:
    bad = adt("A04", "BAD", extra="IN1|1|PLAN|||||||||||||||||||||||||||||||||||||||||||||M99")
    outcome = await inbound.receive(bad.encode())  # a Coverage without payer is invalid
    assert code(outcome.acks) == ["AE"]
    stored = await inbound.log.get(outcome.message.id)
    assert stored.status == "error" and "Coverage" in stored.error
    assert stored.raw_bytes == bad.encode()


@needs_conditional
async def test_enhanced_mode_accept_then_application_ack(inbound: Inbound) -> None:
    always = await inbound.receive(adt("A04", "E1", msh15_16=("AL", "AL")).encode())
    assert code(always.acks) == ["CA", "AA"]
    on_error = await inbound.receive(adt("A04", "E2", msh15_16=("AL", "ER")).encode())
    assert code(on_error.acks) == ["CA"]
    early: list[str] = []

    async def send(text: str) -> None:
        early.append(text)

    streamed = await inbound.receive(adt("A04", "E3", msh15_16=("AL", "AL")).encode(),
                                     early=send)
    assert code(early) == ["CA"] and code(streamed.acks) == ["AA"]


@needs_conditional
async def test_message_log_is_searchable(inbound: Inbound) -> None:
    await inbound.receive(adt("A04", "S1").encode())
    await inbound.receive(siu("S12", "S2").encode())
    assert [m.control_id for m in await inbound.log.list(sender="EHR")] == ["S1"]
    assert [m.control_id for m in await inbound.log.list(type="SIU^S12")] == ["S2"]
    patient = (await inbound.log.list(type="ADT^A04"))[0].patient
    assert patient.startswith("Patient/")
    assert {m.control_id for m in await inbound.log.list(patient=patient)} == {"S1", "S2"}
    today = (await inbound.log.list())[0].received[:10]
    assert len(await inbound.log.list(date=today)) == 2


@needs_conditional
@pytest.mark.usefixtures("reference_search")
async def test_a40_links_patients_and_moves_references(inbound: Inbound,
                                                       ix: Interactions) -> None:
    old = adt("A04", "O1", pid="PID|1||OLD1^^^PRACTICE^MR||Doe^Jane")
    assert code((await inbound.receive(old.encode())).acks) == ["AA"]
    new = adt("A28", "N1", pid="PID|1||NEW1^^^PRACTICE^MR||Doe^Jane")
    assert code((await inbound.receive(new.encode())).acks) == ["AA"]
    merge = ("MSH|^~\\&|EHR|CLINIC|F|P|20240101||ADT^A40|M1|P|2.5.1\rEVN|A40\r"
             "PID|1||NEW1^^^PRACTICE^MR||Doe^Jane\rMRG|OLD1^^^PRACTICE^MR\r")
    outcome = await inbound.receive(merge.encode())
    assert code(outcome.acks) == ["AA"], outcome.message.error
    (survivor,) = await search(ix, "Patient", identifier="NEW1")
    (gone,) = await search(ix, "Patient", identifier="OLD1")
    assert gone["active"] is False
    assert gone["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                             "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{gone['id']}"},
                                 "type": "replaces"}]
    (encounter,) = await search(ix, "Encounter", identifier="V100")
    assert encounter["subject"]["reference"] == f"Patient/{survivor['id']}"


@needs_conditional
async def test_siu_status_follows_events(inbound: Inbound, ix: Interactions) -> None:
    await inbound.receive(siu("S12", "A1").encode())
    await inbound.receive(siu("S15", "A2", status="").encode())
    (appt,) = await search(ix, "Appointment", identifier="APT1")
    assert appt["status"] == "cancelled" and appt["meta"]["versionId"] == "2"


async def test_mangled_input_always_gets_an_ack(inbound: Inbound) -> None:
    import random

    source = adt("A04", "Z0", extra="IN1|1|P^Plan|PAY1^^^PRACTICE|Payer Inc||||||||||||||||||"
                 "||||||||||||||M1").encode()
    rng = random.Random(7)
    variants = [source[:cut] for cut in range(0, len(source), 23)]
    for _ in range(60):
        data = bytearray(source)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.choice(b"|^~\\&\r\n\"\x00\xff0A")
        variants.append(bytes(data))
    for n, data in enumerate(variants):
        outcome = await inbound.receive(data.replace(b"Z0", f"Z{n}".encode(), 1))
        assert outcome.acks or outcome.message.status in ("processed", "error", "rejected")
        for reply in outcome.acks:
            assert ack.read(reply).code in ("AA", "AE", "AR", "CA", "CE", "CR")


@needs_conditional
async def test_the_same_message_twice_at_once_is_processed_once(inbound: Inbound,
                                                                ix: Interactions) -> None:
    import asyncio

    raw = adt("A04", "TWICE").encode()
    first, second = await asyncio.gather(inbound.receive(raw), inbound.receive(raw))
    assert sorted([code(first.acks), code(second.acks)]) == [["AA"], ["AE"]]
    busy = first if code(first.acks) == ["AE"] else second
    assert "being processed" in ack.read(busy.acks[0]).error
    again = await inbound.receive(raw)  # after: answered from the log
    assert again.duplicate and code(again.acks) == ["AA"]
    assert len(await inbound.log.list(sender="EHR")) == 1


@needs_conditional
async def test_a_copy_arriving_while_the_first_is_processed_is_told_to_resend(
        inbound: Inbound) -> None:
    raw = adt("A04", "MID", msh15_16=("AL", "AL")).encode()
    during: list[list[str]] = []

    async def accept_sent(text: str) -> None:  # the first copy is logged, not yet processed
        during.append(code((await inbound.receive(raw)).acks))

    first = await inbound.receive(raw, early=accept_sent)
    assert code(first.acks) == ["AA"] and during == [["AE"]]
    assert len(await inbound.log.list(sender="EHR")) == 1
