"""AuthServer: the authorization server's parts, wired once from settings and a store.

`fhirpm.app` builds one and mounts `routes.build(server)`; the CLI builds one to add clients
and users or issue an EHR launch; the resource server uses `server.verifier`.
"""

from __future__ import annotations

from typing import Any

from fhirpm.auth.assertions import AssertionVerifier, ClientKeys
from fhirpm.auth.authorize import AuthorizeFlow
from fhirpm.auth.clients import Clients
from fhirpm.auth.discovery import Urls, capability_security
from fhirpm.auth.grants import ClientAuthenticator, TokenEndpoint
from fhirpm.auth.introspection import Introspection
from fhirpm.auth.keys import KeyRing
from fhirpm.auth.launch import Launches
from fhirpm.auth.records import AuthDocs
from fhirpm.auth.sessions import Sessions
from fhirpm.auth.tokens import Tokens
from fhirpm.auth.users import Users
from fhirpm.auth.verify import TokenVerifier
from fhirpm.config import Settings
from fhirpm.storage.port import ResourceStore


class AuthServer:
    def __init__(self, settings: Settings, store: ResourceStore) -> None:
        conf = settings.auth
        self.settings = conf
        self.urls = urls = Urls.from_settings(settings)
        self.store = store
        self.docs = docs = AuthDocs(store)
        self.keys = KeyRing(docs)
        self.clients = Clients(docs)
        self.users = Users(docs, conf)
        self.sessions = Sessions(docs, conf.login_seconds)
        self.tokens = Tokens(docs, self.keys, conf, issuer=urls.issuer,
                             audience=urls.fhir_base, style_url=urls.style)
        self.verifier = TokenVerifier(self.keys, self.tokens, issuer=urls.issuer,
                                      audience=urls.fhir_base)
        self.launches = Launches(docs, self.clients, store, fhir_base=urls.fhir_base,
                                 lifetime=conf.launch_seconds)
        self.authorize = AuthorizeFlow(docs, self.clients, self.users, self.launches, store,
                                       fhir_base=urls.fhir_base, code_seconds=conf.code_seconds)
        assertions = AssertionVerifier(docs, ClientKeys(conf.jwks_fetch_seconds),
                                       conf.assertion_max_seconds)
        self.client_auth = ClientAuthenticator(self.clients, assertions, urls.token)
        self.token_endpoint = TokenEndpoint(docs, self.client_auth, self.tokens, self.users)
        self.introspection = Introspection(self.client_auth, self.verifier, self.tokens,
                                           urls.issuer)

    def security(self) -> dict[str, Any]:
        """CapabilityStatement.rest[0].security: SMART service and oauth-uris."""
        return capability_security(self.urls, registration=self.settings.registration_enabled)
