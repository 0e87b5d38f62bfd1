"""The commit path (fhirpm.hl7v2.commit): one unit of work per message, reads inside it,
few trips to the SQLite writer thread; and the store property it relies on (a put based
on what the unit's own search returned needs no second read)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirpm.hl7v2 import ack
from fhirpm.hl7v2.inbound import Inbound
from fhirpm.repository.interactions import FhirRequest, Interactions
from fhirpm.search.query import Param, SearchQuery, TokenPred
from fhirpm.storage.port import ResourceVersion, VersionConflict
from fhirpm.storage.sqlite.store import SqliteResourceStore
from tests.conftest import BASE
from tests.hl7v2.samples import adt

pytestmark = pytest.mark.usefixtures("conditional")


class Trips:
    """Counts the trips to the SQLite writer thread (instrumenting the real store)."""

    def __init__(self, store: SqliteResourceStore) -> None:
        self.count = 0
        self.reads = 0  # trips to the reader pool
        self._read = store._read
        # where every trip to the writer thread passes: `_submit` (queues at once, the
        # unit's hops and `_write` use it) where the store has one, else `_write`
        name = "_submit" if hasattr(store, "_submit") else "_write"
        submit = getattr(store, name)

        def counted(fn: Any) -> Any:
            self.count += 1
            return submit(fn)

        async def counted_read(fn: Any) -> Any:
            self.reads += 1
            return await self._read(fn)

        setattr(store, name, counted)
        store._read = counted_read  # type: ignore[method-assign]


def sqlite(ix: Interactions) -> SqliteResourceStore:
    store = ix.repo.store
    store = getattr(store, "inner", store)  # under the audit trail's view (AuditView)
    if not isinstance(store, SqliteResourceStore):
        pytest.skip("counts SQLite writer-thread trips")
    return store


async def test_a_small_message_takes_few_writer_trips(inbound: Inbound,
                                                      ix: Interactions) -> None:
    # (with the audit trail on, a processed message's events ride in its unit's COMMIT)
    assert ack.read((await inbound.receive(adt("A04", "T1").encode())).acks[0]).code == "AA"
    trips = Trips(sqlite(ix))
    update = adt("A08", "T2", pid="PID|1||MRN1^^^PRACTICE^MR||Doe^Janet||19800102|F")
    outcome = await inbound.receive(update.encode())
    assert ack.read(outcome.acks[0]).code == "AA", outcome.message.error
    # message log: the dedup claim carrying the record as received (1 document write, no
    # read); the unit: one trip for its lookups (BEGIN and a search per type: Patient,
    # Encounter, Practitioner by identifier; Location by content id) and the COMMIT,
    # whose trip also carries the buffered puts, the record with its outcome, the
    # patient index entry and the AuditEvents. No trip per resource: the writes
    # (dispatched like transaction entries) reuse what the lookups read.
    assert trips.count == 1 + 1 + 1
    assert trips.reads == 0


async def test_a_put_based_on_the_units_own_search_is_still_version_checked(
        ix: Interactions) -> None:
    store = sqlite(ix)
    body = b'{"resourceType":"Patient","id":"p1"}'
    async with store.unit_of_work() as unit:
        await unit.put(ResourceVersion("Patient", "p1", 1, "2024-01-01T00:00:00.000000Z",
                                       "PUT", body), [], expected_version=0)
    query = SearchQuery(types=("Patient",), where=(Param("_id", "token",
                                                         (TokenPred(code="p1"),)),))
    trips = Trips(store)
    with pytest.raises(VersionConflict):
        async with store.unit_of_work() as unit:
            (found,) = (await unit.search(query)).matches
            before = trips.count
            v2 = ResourceVersion("Patient", "p1", 2, "2024-01-01T00:00:01.000000Z", "PUT", body)
            await unit.put(v2, [], expected_version=found.version)
            assert trips.count == before  # known from the search: buffered, no trip
            stale = ResourceVersion("Patient", "p1", 3, "2024-01-01T00:00:02.000000Z",
                                    "PUT", body)
            await unit.put(stale, [], expected_version=1)  # the unit already wrote 2
    assert (await store.read("Patient", "p1")).version == 1  # nothing of the unit stayed


async def test_a40_naming_one_patient_twice_is_refused(inbound: Inbound) -> None:
    assert ack.read((await inbound.receive(adt("A04", "S1").encode())).acks[0]).code == "AA"
    merge = ("MSH|^~\\&|EHR|CLINIC|F|P|20240101||ADT^A40|S2|P|2.5.1\rEVN|A40\r"
             "PID|1||MRN1^^^PRACTICE^MR||Doe^Jane\rMRG|MRN1^^^PRACTICE^MR\r")
    outcome = await inbound.receive(merge.encode())
    assert ack.read(outcome.acks[0]).code == "AE"
    assert "same patient" in outcome.message.error


async def test_a_content_id_a_deletion_left_a_tombstone_is_updated_not_created(
        inbound: Inbound, ix: Interactions) -> None:
    # A new content-id resource (the PV1 location) is created with its id, no read first;
    # one deleted since has a tombstone, so that create is refused at commit and the
    # message is rebuilt reading first: the location comes back as the next version.
    first = await inbound.receive(adt("A04", "D1").encode())
    assert ack.read(first.acks[0]).code == "AA"
    (location,) = [r for r in first.resources if r.startswith("Location/")]
    assert (await ix.repo.store.read(*location.split("/"))).version == 1
    await ix.dispatch(FhirRequest("DELETE", location, BASE))
    again = await inbound.receive(adt("A08", "D2").encode())
    assert ack.read(again.acks[0]).code == "AA", again.message.error
    assert location in again.resources
    back = await ix.repo.store.read(*location.split("/"))
    assert back.version == 3 and not back.deleted  # 1 created, 2 deleted, 3 written again


async def test_searches_in_one_trip_see_the_units_writes_and_spare_later_reads(
        ix: Interactions) -> None:
    """`search_many` (the lookups' trip): results in order, as `search` gives them one by
    one, the unit's own buffered puts included; a put based on them needs no trip."""
    store = sqlite(ix)
    body = b'{"resourceType":"Patient","id":"%s"}'
    lu = "2024-01-01T00:00:00.000000Z"
    by_id = lambda type_, id_: SearchQuery(types=(type_,), where=(  # noqa: E731
        Param("_id", "token", (TokenPred(code=id_),)),))
    async with store.unit_of_work() as unit:
        await unit.put(ResourceVersion("Patient", "a", 1, lu, "PUT", body % b"a"), [],
                       expected_version=0)
    trips = Trips(store)
    async with store.unit_of_work() as unit:
        await unit.put(ResourceVersion("Patient", "b", 1, lu, "PUT", body % b"b"), [],
                       expected_version=0)  # buffered: rides with the searches' trip
        queries = [by_id("Patient", "b"), by_id("Patient", "nope"), by_id("Patient", "a")]
        many = await unit.search_many(queries)
        assert trips.count == 1
        one_by_one = [await unit.search(q) for q in queries]
        assert [[v.id for v in r.matches] for r in many] == [["b"], [], ["a"]]
        assert [[v.id for v in r.matches] for r in one_by_one] == [["b"], [], ["a"]]
        before = trips.count
        await unit.put(ResourceVersion("Patient", "a", 2, lu, "PUT", body % b"a"), [],
                       expected_version=many[2].matches[0].version)
        assert trips.count == before  # its version known from the search: no trip
    assert (await store.read("Patient", "a")).version == 2


async def test_stored_bodies_parsed_once_are_never_modified(inbound: Inbound) -> None:
    """The lookups keep stored bodies parsed across messages (the same practitioner and
    location come back in every message): merging over them must never change them."""
    from fhirpm.fhir import jsonio

    messages = [adt("A04", "P1"), adt("A08", "P2", pid="PID|1||MRN1^^^PRACTICE^MR||"
                                                       "Doe^Janet||19800102|F"),
                adt("A08", "P3", pid="PID|1||MRN1^^^PRACTICE^MR||Doe^Janet||\"\"|F"),
                adt("A04", "P4", pid="PID|1||MRN2^^^PRACTICE^MR||Roe^Ann||19700101|F")]
    for text in messages:
        outcome = await inbound.receive(text.encode())
        assert ack.read(outcome.acks[0]).code == "AA", outcome.message.error
    parsed = inbound.committer._parsed
    assert parsed  # the practitioner, the location, the patient ...
    assert all(body == jsonio.loads(raw) for raw, body in parsed.items())
