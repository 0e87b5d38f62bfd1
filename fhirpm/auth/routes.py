"""HTTP for the authorization server: Starlette routes under /auth, plus the SMART
configuration under the FHIR base.

This module only translates: forms and cookies in, JSON, pages and redirects out. OAuth
endpoints answer errors in OAuth's JSON format; pages answer errors as HTML and never
redirect to an unverified URI. Machine endpoints (discovery, token, introspection,
revocation) carry CORS headers for browser apps; the cookie-bearing pages never do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from fhirpm.audit.security import audit_of
from fhirpm.auth import admin_api, pages, registration
from fhirpm.auth.authorize import ClientRedirect, PageError
from fhirpm.auth.discovery import STYLE, openid_configuration, smart_configuration
from fhirpm.auth.errors import OAuthError, invalid_request
from fhirpm.auth.server import AuthServer
from fhirpm.auth.sessions import COOKIE, Session
from fhirpm.auth.users import LoginFailed
from fhirpm.errors import FhirError

log = logging.getLogger("fhirpm.auth")

FORM = "application/x-www-form-urlencoded"
MAX_FORM = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
Handler = Callable[[Request], Awaitable[Response]]


def oauth_error(err: OAuthError) -> JSONResponse:
    return JSONResponse(err.body(), err.status, headers={**NO_STORE, **err.headers})


async def read_pairs(request: Request) -> list[tuple[str, str]]:
    """A urlencoded form body as (name, value) pairs."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != FORM:
        raise invalid_request(f"send the parameters as {FORM}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise invalid_request("request body too large")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("malformed form body") from None


def single(pairs: list[tuple[str, str]], repeatable: tuple[str, ...] = ()) -> dict[str, str]:
    """Parameters as a dict; OAuth parameters must not repeat (RFC 6749 §3.1)."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out and key not in repeatable:
            raise invalid_request(f"parameter {key} is repeated")
        out[key] = value
    return out


class Cors:
    """CORS for the machine endpoints: no cookies are involved, so no credentials."""

    def __init__(self, origins: list[str]) -> None:
        self.origins = set(origins)

    def headers(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if not origin or not (origin in self.origins or "*" in self.origins):
            return {}
        return {"Access-Control-Allow-Origin": "*" if "*" in self.origins else origin,
                "Vary": "Origin"}

    def wrap(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            if request.method == "OPTIONS":
                response: Response = Response(status_code=204)
                if self.headers(request):
                    response.headers.update({
                        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                        "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept",
                        "Access-Control-Max-Age": "600"})
            else:
                response = await handler(request)
            response.headers.update(self.headers(request))
            return response
        return run


def guarded(handler: Handler, *, page: bool) -> Handler:
    """No 500 on bad input: known errors render; anything else is logged and answered."""
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except OAuthError as err:
            return pages.error_page(err.description, err.status) if page else oauth_error(err)
        except PageError as err:
            return pages.error_page(str(err))
        except ClientRedirect as err:
            return RedirectResponse(err.url, 303 if request.method == "POST" else 302)
        except FhirError as err:
            if page:
                return pages.error_page(err.diagnostics, err.status)
            return oauth_error(OAuthError("invalid_request", err.diagnostics, err.category))
        except Exception:
            log.exception("auth endpoint failed: %s %s", request.method, request.url.path)
            if page:
                return pages.error_page("Something went wrong on the server.", 500)
            return JSONResponse({"error": "server_error"}, 500, headers=NO_STORE)
    return run


class AuthRoutes:
    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.urls = server.urls
        self.secure = server.urls.issuer.startswith("https:")

    # -- helpers ----------------------------------------------------------------------

    def here(self, path: str) -> str:
        """An absolute URL for a path relative to the issuer ("/login?...")."""
        return self.urls.issuer + path

    async def session(self, request: Request) -> Session | None:
        session = await self.server.sessions.load(request.cookies.get(COOKIE))
        if session is not None and session.user is not None and not (
                await self.server.users.signed_in(session.user,
                                                  session.signed_in_at or session.auth_time)):
            return Session(session.sid, session.csrf, session.browser)  # signed out
        return session

    def set_cookie(self, response: Response, session: Session) -> Response:
        response.set_cookie(COOKIE, session.sid, max_age=self.server.settings.login_seconds,
                            path="/", secure=self.secure, httponly=True, samesite="lax")
        return response

    def go(self, path: str, request: Request) -> RedirectResponse:
        return RedirectResponse(self.here(path), 303 if request.method == "POST" else 302)

    async def posted(self, request: Request) -> tuple[dict[str, str], list[tuple[str, str]],
                                                       Session]:
        """A page's form, after checking its session and CSRF token."""
        pairs = await read_pairs(request)
        form = single(pairs, repeatable=("scope",))
        session = await self.session(request)
        if session is None or not session.csrf_ok(form.get("csrf")):
            raise PageError("This form has expired; please go back and try again.")
        return form, pairs, session

    # -- discovery --------------------------------------------------------------------

    async def smart_configuration(self, request: Request) -> Response:
        return JSONResponse(smart_configuration(
            self.urls, registration=self.server.settings.registration_enabled))

    async def openid_configuration(self, request: Request) -> Response:
        return JSONResponse(openid_configuration(
            self.urls, registration=self.server.settings.registration_enabled))

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(await self.server.keys.jwks(),
                            headers={"Cache-Control": "public, max-age=300"})

    async def style(self, request: Request) -> Response:
        return JSONResponse(STYLE)

    # -- authorization ----------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        if request.method == "POST":
            pairs = await read_pairs(request)
        else:
            pairs = list(request.query_params.multi_items())
        try:
            params = single(pairs)
        except OAuthError as err:
            raise PageError(err.description) from None
        session = await self.session(request) or await self.server.sessions.start()
        pending = await self.server.authorize.start(params, session)
        path = await self.server.authorize.next_url(pending, session)
        return self.set_cookie(self.go(path, request), session)

    async def resume(self, request: Request) -> Response:
        session = await self.session(request)
        pending = await self.server.authorize.load(request.query_params.get("txn"), session)
        assert session is not None  # load() refuses a request without a session
        return self.go(await self.server.authorize.next_url(pending, session), request)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            nxt = _local(request.query_params.get("next"))
            session = await self.session(request) or await self.server.sessions.start()
            return self.set_cookie(self.login_page(session, nxt), session)
        form, _, session = await self.posted(request)
        nxt = _local(form.get("next"))
        try:
            user = await self.server.users.authenticate(form.get("username", ""),
                                                        form.get("password", ""))
        except LoginFailed as err:
            await audit_of(self.server).login(request, form.get("username", ""), str(err))
            return self.login_page(session, nxt, str(err), 401)
        await audit_of(self.server).login(request, user.username)
        session = await self.server.sessions.login(session, user.username)
        return self.set_cookie(self.go(nxt, request), session)

    def login_page(self, session: Session, nxt: str, error: str | None = None,
                   status: int = 200) -> Response:
        return pages.render("login.html", status, base=self.urls.issuer, csrf=session.csrf,
                            next=nxt, error=error)

    async def patient(self, request: Request) -> Response:
        flow = self.server.authorize
        if request.method == "GET":
            session = await self.session(request)
            pending = await flow.load(request.query_params.get("txn"), session)
            assert session is not None
            return pages.render("patient.html", base=self.urls.issuer, csrf=session.csrf,
                                txn=pending.txn, app=pending.client_name,
                                patients=await flow.patient_choices())
        form, _, session = await self.posted(request)
        pending = await flow.load(form.get("txn"), session)
        chosen = (form.get("patient_id") or "").strip() or form.get("patient", "")
        return self.go(await flow.choose_patient(pending, session, chosen), request)

    async def consent(self, request: Request) -> Response:
        flow = self.server.authorize
        if request.method == "GET":
            session = await self.session(request)
            pending = await flow.load(request.query_params.get("txn"), session)
            assert session is not None
            if session.user is None:
                return self.go(await flow.next_url(pending, session), request)
            context = pending.context
            patient = await flow.patient_name(
                context.patient if context and context.patient else pending.patient)
            return pages.render(
                "consent.html", base=self.urls.issuer, csrf=session.csrf, txn=pending.txn,
                app=pending.client_name, user=session.user, patient=patient,
                scopes=[(s, pages.describe(s)) for s in pending.scopes.order])
        form, pairs, session = await self.posted(request)
        pending = await flow.load(form.get("txn"), session)
        if session.user is None:
            raise PageError("Please sign in first.")
        chosen = [v for k, v in pairs if k == "scope"]
        url = await flow.decide(pending, session, chosen, form.get("decision") == "allow")
        await audit_of(self.server).consent(request, session.user, pending, chosen,
                                            form.get("decision") == "allow")
        return RedirectResponse(url, 303)

    async def launch(self, request: Request) -> Response:
        """The EHR side of an EHR launch: a signed-in user opens an app for a patient."""
        if request.method == "GET":
            session = await self.session(request)
            if session is None or session.user is None:
                back = "/launch?" + urlencode(dict(request.query_params))
                return self.go("/login?" + urlencode({"next": back}), request)
            q = request.query_params
            return pages.render("launch.html", base=self.urls.issuer, csrf=session.csrf,
                                client_id=q.get("client_id", ""), patient=q.get("patient", ""),
                                encounter=q.get("encounter", ""))
        form, _, session = await self.posted(request)
        if session.user is None:
            raise PageError("Please sign in first.")
        user = await self.server.users.get(session.user)
        patient = form.get("patient") or None
        if user is None or (user.fhir_user_type == "Patient"
                            and f"Patient/{patient}" != user.fhir_user):
            raise PageError("You may only launch apps for your own record.")
        _, url = await self.server.launches.create(
            form.get("client_id", ""), user=session.user, patient=patient,
            encounter=form.get("encounter") or None)
        return RedirectResponse(url, 303)

    # -- token, introspection, revocation, registration -------------------------------

    async def token(self, request: Request) -> Response:
        form = single(await read_pairs(request))
        async with audit_of(self.server).token(request, form) as issued:
            body = await self.server.token_endpoint.handle(form,
                                                           request.headers.get("authorization"))
            issued(body)
        return JSONResponse(body, headers=NO_STORE)

    async def introspect(self, request: Request) -> Response:
        form = single(await read_pairs(request))
        body = await self.server.introspection.introspect(
            form, request.headers.get("authorization"))
        return JSONResponse(body, headers=NO_STORE)

    async def revoke(self, request: Request) -> Response:
        form = single(await read_pairs(request))
        async with audit_of(self.server).revoke(request, form):
            await self.server.introspection.revoke(form, request.headers.get("authorization"))
        return Response(status_code=200, headers=NO_STORE)

    async def register(self, request: Request) -> Response:
        if not self.server.settings.registration_enabled:
            return JSONResponse({"error": "invalid_request",
                                 "error_description": "registration is disabled"}, 404)
        try:
            body: Any = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise OAuthError("invalid_client_metadata", "the body is not JSON") from None
        answer = await registration.register(self.server.clients, body)
        return JSONResponse(answer, 201, headers=NO_STORE)


def _local(path: str | None) -> str:
    """A `next` path relative to the issuer; anything else (an open redirect) is refused."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        raise PageError("There is nothing to continue to; start again from the application.")
    return path


def build(server: AuthServer, fhir_mount: str, mount: str = "/auth") -> list[BaseRoute]:
    """The routes to mount: /auth/* and {fhir_mount}/.well-known/smart-configuration."""
    r = AuthRoutes(server)
    cors = Cors(server.settings.cors_origins)

    def api(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, cors.wrap(guarded(handler, page=False)), methods=[*methods,
                                                                              "OPTIONS"])

    def page(path: str, handler: Handler) -> Route:
        return Route(mount + path, guarded(handler, page=True), methods=["GET", "POST"])

    return [
        api(fhir_mount + "/.well-known/smart-configuration", r.smart_configuration, ["GET"]),
        api(mount + "/.well-known/openid-configuration", r.openid_configuration, ["GET"]),
        api(mount + "/jwks", r.jwks, ["GET"]),
        api(mount + "/smart-style.json", r.style, ["GET"]),
        api(mount + "/token", r.token, ["POST"]),
        api(mount + "/introspect", r.introspect, ["POST"]),
        api(mount + "/revoke", r.revoke, ["POST"]),
        api(mount + "/register", r.register, ["POST"]),
        page("/authorize", r.authorize),
        page("/continue", r.resume),
        page("/login", r.login),
        page("/patient", r.patient),
        page("/consent", r.consent),
        page("/launch", r.launch),
        *admin_api.build(server, mount),  # {mount}/admin/...: clients and users
    ]
