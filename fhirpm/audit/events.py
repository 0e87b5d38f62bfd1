"""AuditEvent construction in the IHE Basic Audit Log Patterns (BALP) shapes. Pure: facts
in, AuditEvent JSON (dicts) out; no store, no HTTP, no clock (the caller says when).

- RESTful interactions (`rest_events`): read, vread, search, history, create, update,
  patch, delete, operations, batch and transaction. BALP records one patient per event
  (R4 AuditEvent has no patient element), so an access touching several patients yields
  one event per patient, each naming its patient as an entity in the patient role; an
  access touching none yields one event without. Searches carry the raw query, base64
  encoded, in `entity.query` (BALP keeps it byte for byte, malicious patterns included).
- Logins (`login_event`) and OAuth token issue, refresh and revocation (`token_event`,
  after IHE IUA ITI-71).

Agents follow BALP: the client application (its client_id and network address), this
server, and the user (their fhirUser reference and username) as the requestor when there
is one; the server is also the `source`. The outcome is 0 (success), 4 (the client's
error) or 8 (the server's), with the error text in `outcomeDesc`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, NamedTuple

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
IHE_EVENT = "urn:ihe:event-type-code"
# fhirpm's own identifiers (client ids, usernames, event subtypes without a standard code)
CLIENT_SYSTEM = "urn:fhirpm:client-id"
USER_SYSTEM = "urn:fhirpm:username"
SUBTYPE_SYSTEM = "urn:fhirpm:audit-subtype"

# interaction -> (BALP pattern, action)
_PATTERNS: dict[str, tuple[str, str]] = {
    "read": ("read", "R"), "vread": ("read", "R"), "history-instance": ("read", "R"),
    "search-type": ("query", "E"), "search-system": ("query", "E"),
    "history-type": ("query", "E"), "history-system": ("query", "E"),
    "capabilities": ("query", "E"), "operation": ("query", "E"),
    "batch": ("query", "E"), "transaction": ("query", "E"),
    "create": ("write", "C"), "update": ("write", "U"), "patch": ("write", "U"),
    "delete": ("delete", "D"),
}
INTERACTIONS = frozenset(_PATTERNS)
# search, history and capabilities: the subtype code R4's restful-interaction system uses
_SUBTYPE = {"search-type": "search-type", "search-system": "search-system"}
# redacted from a token request before it is recorded
SECRET_PARAMS = frozenset({"code", "code_verifier", "client_secret", "client_assertion",
                           "refresh_token", "password", "token"})


class Who(NamedTuple):
    """The requesting side: the access token's user, client and fhirUser, and the
    connection's address and request id."""

    client_id: str | None = None
    user: str | None = None  # username (token `sub`); None for backend services
    fhir_user: str | None = None  # "Practitioner/12"
    address: str | None = None  # client IP
    request_id: str | None = None  # X-Request-ID

    @classmethod
    def from_principal(cls, principal: Any, address: str | None = None,
                       request_id: str | None = None) -> Who:
        """From an `fhirpm.auth.principal.Principal` (or None: no authorization)."""
        if principal is None:
            return cls(address=address, request_id=request_id)
        user = None if principal.is_backend else principal.sub
        return cls(principal.client_id, user, principal.fhir_user, address, request_id)


@dataclass(frozen=True, slots=True)
class Server:
    """This server: the audit source and the server agent."""

    base_url: str  # the FHIR base, the server's network address (a URI)
    name: str = "fhirpm"
    site: str | None = None  # e.g. the practice's name


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int = 200  # the HTTP status answered
    description: str | None = None  # the error's diagnostics

    @property
    def code(self) -> str:
        if self.status < 400:
            return "0"
        return "4" if self.status < 500 else "8"


@dataclass(frozen=True, slots=True)
class Access:
    """What a RESTful interaction touched."""

    interaction: str  # a key of INTERACTIONS
    resources: tuple[str, ...] = ()  # references: "Observation/5" or ".../_history/2"
    patients: tuple[str, ...] = ()  # patient ids whose records were touched
    query: str | None = None  # the request relative to the base: "Observation?code=x"
    operation: str | None = None  # "$everything"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# -- agents -----------------------------------------------------------------------------


def _client_agent(who: Who, type_: dict[str, Any], requestor: bool) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "type": {"coding": [type_]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": who.client_id or "anonymous"}},
        "requestor": requestor,
    }
    if who.address:
        agent["network"] = {"address": who.address, "type": "2"}  # 2: IP address
    return agent


def _server_agent(server: Server, type_: dict[str, Any]) -> dict[str, Any]:
    return {"type": {"coding": [type_]},
            "who": {"display": server.name, "identifier": {"value": server.base_url}},
            "requestor": False, "network": {"address": server.base_url, "type": "5"}}  # URI


def _user_agent(who: Who, type_: dict[str, Any]) -> dict[str, Any] | None:
    if who.user is None and who.fhir_user is None:
        return None
    target: dict[str, Any] = {}
    if who.fhir_user:
        target["reference"] = who.fhir_user
    if who.user:
        target["identifier"] = {"system": USER_SYSTEM, "value": who.user}
    agent: dict[str, Any] = {"type": {"coding": [type_]}, "who": target, "requestor": True}
    if who.user:
        agent["altId"] = who.user
    return agent


def _agents(pattern: str, who: Who, server: Server) -> list[dict[str, Any]]:
    """BALP's agent types per pattern (reads name the client the destination: data flows
    to it; queries and writes name it the source, as DICOM does)."""
    source, destination = _coding(DCM, "110153", "Source Role ID"), _coding(
        DCM, "110152", "Destination Role ID")
    if pattern == "read":
        client_type, server_type = destination, source
        user_type = _coding(PARTICIPATION, "IRCP", "information recipient")
    elif pattern == "query":
        client_type, server_type = source, destination
        user_type = _coding(PARTICIPATION, "IRCP", "information recipient")
    elif pattern == "delete":
        client_type = _coding(DCM, "110150", "Application")
        server_type = _coding(PROVENANCE_AGENT, "custodian", "Custodian")
        user_type = _coding(PARTICIPATION, "AUT", "author (originator)")
    else:
        client_type, server_type = source, destination
        user_type = _coding(PARTICIPATION, "AUT", "author (originator)")
    user = _user_agent(who, user_type)
    agents = [_client_agent(who, client_type, requestor=user is None),
              _server_agent(server, server_type)]
    return [*agents, user] if user is not None else agents


# -- entities ---------------------------------------------------------------------------


def patient_entity(patient_id: str) -> dict[str, Any]:
    return {"what": {"reference": f"Patient/{patient_id}"},
            "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient")}


def data_entity(reference: str) -> dict[str, Any]:
    return {"what": {"reference": reference},
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource")}


def query_entity(query: str, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _coding(ENTITY_TYPE, "2", "System Object"),
                           "role": _coding(OBJECT_ROLE, "24", "Query"), "query": _b64(query)}
    if description:
        out["description"] = description
    return out


def request_entity(request_id: str) -> dict[str, Any]:
    return {"what": {"identifier": {"value": request_id}},
            "type": _coding(BALP_ENTITY, "XrequestId")}


# -- events -----------------------------------------------------------------------------


def _event(type_: dict[str, Any], subtype: dict[str, Any], action: str, recorded: str,
           outcome: Outcome, agents: list[dict[str, Any]], server: Server,
           entities: list[dict[str, Any]]) -> dict[str, Any]:
    event: dict[str, Any] = {"resourceType": "AuditEvent", "type": type_,
                             "subtype": [subtype], "action": action, "recorded": recorded,
                             "outcome": outcome.code}
    if outcome.description and outcome.code != "0":
        event["outcomeDesc"] = outcome.description
    source: dict[str, Any] = {"observer": {"display": server.name,
                                           "identifier": {"value": server.base_url}},
                              "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}
    if server.site:
        source["site"] = server.site
    event.update(agent=agents, source=source)
    if entities:
        event["entity"] = entities
    return event


def rest_events(access: Access, who: Who, server: Server, outcome: Outcome,
                recorded: str) -> list[dict[str, Any]]:
    """The AuditEvents for one RESTful interaction: one per patient touched (at least one).

    `recorded` is a FHIR instant; `access.patients` are ids (the caller decides which
    patients a resource belongs to, see `fhirpm.audit.patients`)."""
    if access.interaction not in _PATTERNS:
        raise ValueError(f"not an auditable interaction: {access.interaction!r}")
    pattern, action = _PATTERNS[access.interaction]
    subtype = _coding(RESTFUL, _SUBTYPE.get(access.interaction, access.interaction))
    type_ = _coding(EVENT_TYPE, "rest", "Restful Operation")
    agents = _agents(pattern, who, server)
    shared = _shared_entities(pattern, access, who)
    patients = list(dict.fromkeys(access.patients)) or [None]
    return [_event(type_, subtype, action, recorded, outcome, agents, server,
                   [*shared, patient_entity(p)] if p is not None else list(shared))
            for p in patients]


def _shared_entities(pattern: str, access: Access, who: Who) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if who.request_id:
        entities.append(request_entity(who.request_id))
    if pattern == "query":
        # searches and operations record what was asked, not every result (BALP Query)
        if access.query is not None:
            entities.append(query_entity(access.query, access.operation))
        if access.interaction == "operation":
            entities.extend(data_entity(r) for r in access.resources)
    else:
        entities.extend(data_entity(r) for r in access.resources)
    return entities


def login_event(username: str, who: Who, server: Server, outcome: Outcome,
                recorded: str, *, logout: bool = False) -> dict[str, Any]:
    """A login (or logout) at the authorization server's login page, successful or not."""
    subtype = _coding(DCM, "110123", "Logout") if logout else _coding(DCM, "110122", "Login")
    user = {"type": {"coding": [_coding(SECURITY_ROLE, "humanuser", "human user")]},
            "who": {"identifier": {"system": USER_SYSTEM, "value": username}},
            "altId": username, "requestor": True}
    if who.fhir_user:
        user["who"]["reference"] = who.fhir_user
    if who.address:
        user["network"] = {"address": who.address, "type": "2"}
    agents = [user, _server_agent(server, _coding(SECURITY_ROLE, "authserver",
                                                  "authorization server"))]
    entities = [request_entity(who.request_id)] if who.request_id else []
    return _event(_coding(DCM, "110114", "User Authentication"), subtype, "E", recorded,
                  outcome, agents, server, entities)


def token_event(kind: str, who: Who, server: Server, outcome: Outcome, recorded: str, *,
                request: dict[str, str] | None = None, token_id: str | None = None,
                patient: str | None = None) -> dict[str, Any]:
    """An OAuth token issued (`issue`: any grant), refreshed (`refresh`) or revoked
    (`revoke`). `request` is the token request's form (secrets are redacted here);
    `token_id` the issued or revoked token's id (jti); `patient` the launch patient."""
    if kind not in ("issue", "refresh", "revoke"):
        raise ValueError(f"not a token event kind: {kind!r}")
    subtype = (_coding(IHE_EVENT, "ITI-71", "Get Access Token") if kind != "revoke"
               else _coding(SUBTYPE_SYSTEM, "token-revoke", "Revoke Token"))
    agents = [_client_agent(who, _coding(DCM, "110150", "Application"),
                            requestor=who.user is None),
              _server_agent(server, _coding(SECURITY_ROLE, "authserver",
                                            "authorization server"))]
    user = _user_agent(who, _coding(PARTICIPATION, "IRCP", "information recipient"))
    if user is not None:
        agents.append(user)
    entities = [request_entity(who.request_id)] if who.request_id else []
    if request is not None:
        entities.append(query_entity(_form(request)))
    if token_id:
        entities.append({"what": {"identifier": {"value": token_id}},
                         "type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "13", "Security Resource")})
    if patient:
        entities.append(patient_entity(patient))
    return _event(_coding(DCM, "110114", "User Authentication"), subtype, "E", recorded,
                  outcome, agents, server, entities)


def _form(request: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, "[redacted]" if k in SECRET_PARAMS else v)
                      for k, v in sorted(request.items())])


def consent_event(who: Who, server: Server, outcome: Outcome, recorded: str, *,
                  granted: bool, scopes: tuple[str, ...] = (),
                  patient: str | None = None) -> dict[str, Any]:
    """A user's decision at the consent page: `granted` (or denied) `scopes` to the client
    (`who.client_id`), for the launch `patient` if there is one."""
    subtype = _coding(SUBTYPE_SYSTEM, "consent-grant" if granted else "consent-deny",
                      "Authorization granted" if granted else "Authorization denied")
    user = _user_agent(who, _coding(PARTICIPATION, "AUT", "author (originator)"))
    agents = [_client_agent(who, _coding(DCM, "110150", "Application"),
                            requestor=user is None),
              _server_agent(server, _coding(SECURITY_ROLE, "authserver",
                                            "authorization server"))]
    if user is not None:
        agents.append(user)
    entities = [request_entity(who.request_id)] if who.request_id else []
    entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                     "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
                     "description": " ".join(scopes) or "(no scopes)"})
    if patient:
        entities.append(patient_entity(patient))
    return _event(_coding(DCM, "110113", "Security Alert"), subtype, "E", recorded,
                  outcome, agents, server, entities)


def message_event(sender: str, who: Who, server: Server, outcome: Outcome, recorded: str, *,
                  message_type: str = "", control_id: str = "",
                  resources: tuple[str, ...] = (),
                  patient: str | None = None) -> dict[str, Any]:
    """An HL7 v2 message received (DICOM Import): `sender` is MSH-3^MSH-4, `control_id`
    MSH-10, `resources` what it wrote; the outcome follows the ACK (AA 0, AE 4, AR 8)."""
    agents = [{"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
               "who": {"identifier": {"system": CLIENT_SYSTEM, "value": sender or "unknown"}},
               "requestor": True}]
    if who.address:
        agents[0]["network"] = {"address": who.address, "type": "2"}
    agents.append(_server_agent(server, _coding(DCM, "110152", "Destination Role ID")))
    entities: list[dict[str, Any]] = [{
        "what": {"identifier": {"value": control_id or "unknown"}},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "3", "Report"), "description": message_type or "HL7v2"}]
    entities.extend(data_entity(r) for r in resources)
    if patient:
        entities.append(patient_entity(patient))
    return _event(_coding(DCM, "110107", "Import"),
                  _coding(SUBTYPE_SYSTEM, "hl7v2-receive", "HL7 v2 message received"), "C",
                  recorded, outcome, agents, server, entities)


def trail_event(kind: str, who: Who, server: Server, outcome: Outcome, recorded: str, *,
                description: str = "") -> dict[str, Any]:
    """The audit log itself used (DICOM 110101): `kind` is purge, export or verify."""
    agents = [_client_agent(who, _coding(DCM, "110150", "Application"), requestor=True),
              _server_agent(server, _coding(PROVENANCE_AGENT, "custodian", "Custodian"))]
    entities = [request_entity(who.request_id)] if who.request_id else []
    entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                     "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
                     "description": description or kind})
    return _event(_coding(DCM, "110101", "Audit Log Used"),
                  _coding(SUBTYPE_SYSTEM, f"audit-{kind}", f"Audit trail {kind}"),
                  "D" if kind == "purge" else "R", recorded, outcome, agents, server, entities)
