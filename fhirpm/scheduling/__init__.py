"""Scheduling and online self-booking (issue #6): availability, $find/$hold/$book, the visit.

Everything here is FHIR workflow on top of the repository: operations registered with the
interactions router, write rules (Repository.add_rule) that keep Appointments and Slots
consistent on every write path, and periodic jobs (fhirpm.jobs) shared by every server
process. `install` is the one entry point the composition root calls; each module installs
its own part in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirpm.config import Settings
    from fhirpm.jobs import Jobs
    from fhirpm.repository.interactions import Interactions


def install(interactions: Interactions, jobs: Jobs, settings: Settings) -> None:
    """Register scheduling's operations, write rules and jobs (each module adds its own)."""
    from fhirpm.scheduling import booking, booking_rule, find, slots

    config = settings.scheduling
    booking_rule.install(interactions.repo)  # no double booking, on every write path
    slots.GenerateSlots(config).install(interactions, jobs)  # $generate-slots + job
    find.Find(config).install(interactions)  # Appointment/$find
    booking.Booking(config).install(interactions, jobs)  # $hold $book $cancel $reschedule
    booking.install_access()  # who may call them (repository.access.OPERATIONS)
    from fhirpm.scheduling import publish, video, visit, waitlist

    visit.install(interactions.repo, config)  # check-in/out -> Encounter, charge capture
    video.install(interactions.repo, config)  # join links of virtual visits
    publish.install(interactions, config)  # public $bulk-publish (SMART Scheduling Links)
    waitlist.install(interactions)  # Slot/[id]/$waitlist: who fits a freed slot
