"""EHR launch: a short-lived opaque `launch` bound to client, user, patient and encounter.

The EHR (our launch page, the CLI or an admin action) issues it and sends the browser to
the app's launch URL with `iss` (the FHIR base) and `launch`; the app hands `launch` back
at the authorization endpoint, which resolves it into the token's launch context.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from fhirpm.auth.clients import Clients
from fhirpm.auth.records import LAUNCHES, AuthDocs, random_token
from fhirpm.errors import Category, FhirError
from fhirpm.fhir.types import is_valid_id
from fhirpm.storage.port import ResourceStore


@dataclass(frozen=True, slots=True)
class LaunchContext:
    client_id: str
    user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool = False  # the EHR around the app shows the patient already

    @property
    def fhir_context(self) -> tuple[dict[str, Any], ...]:
        return ({"reference": f"Encounter/{self.encounter}"},) if self.encounter else ()


class Launches:
    def __init__(self, docs: AuthDocs, clients: Clients, store: ResourceStore, *,
                 fhir_base: str, lifetime: int) -> None:
        self.docs = docs
        self.clients = clients
        self.store = store
        self.fhir_base = fhir_base
        self.lifetime = lifetime

    async def create(self, client_id: str, *, user: str | None = None,
                     patient: str | None = None, encounter: str | None = None,
                     need_patient_banner: bool = False) -> tuple[str, str]:
        """Issue a launch; returns (launch, the app launch URL with iss and launch)."""
        client = await self.clients.get(client_id)
        if client is None:
            raise FhirError(Category.NOT_FOUND, f"No client {client_id!r} is registered")
        if not client.launch_uri:
            raise FhirError(Category.BUSINESS_RULE, f"Client {client_id!r} has no launch_uri")
        for type_, id_ in (("Patient", patient), ("Encounter", encounter)):
            if id_ is not None:
                await self._check_exists(type_, id_)
        context = LaunchContext(client_id, user, patient, encounter, need_patient_banner)
        launch = random_token(24)
        await self.docs.put(LAUNCHES, launch, asdict(context), expected_rev=0,
                            expires_at=int(time.time()) + self.lifetime)
        joiner = "&" if "?" in client.launch_uri else "?"
        url = client.launch_uri + joiner + urlencode({"iss": self.fhir_base, "launch": launch})
        return launch, url

    async def resolve(self, launch: str, client_id: str) -> LaunchContext | None:
        """The context of a live launch issued to `client_id`, else None."""
        if not launch or len(launch) > 100:
            return None
        record = await self.docs.get(LAUNCHES, launch)
        if record is None or record.body.get("client_id") != client_id:
            return None
        return LaunchContext(**record.body)

    async def _check_exists(self, type_: str, id_: str) -> None:
        found = await self.store.read(type_, id_) if is_valid_id(id_) else None
        if found is None or found.deleted:
            raise FhirError(Category.NOT_FOUND, f"{type_}/{id_} is not known")
