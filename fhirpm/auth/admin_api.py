"""The admin HTTP API: registered clients and users as JSON, under {issuer}/admin.

    GET    /auth/admin/clients                      list
    POST   /auth/admin/clients                      register (201; the secret, once)
    GET    /auth/admin/clients/{client_id}          read
    PATCH  /auth/admin/clients/{client_id}          change fields (e.g. {"disabled": true})
    DELETE /auth/admin/clients/{client_id}          remove (204)
    POST   /auth/admin/clients/{client_id}/secret   a new secret (shown once)
    GET    /auth/admin/users                        list
    POST   /auth/admin/users                        create with a password (201)
    GET    /auth/admin/users/{username}             read
    PATCH  /auth/admin/users/{username}             change fields
    DELETE /auth/admin/users/{username}             remove (204)
    POST   /auth/admin/users/{username}/password    reset the password

Every request needs a bearer access token with the `fhirpm/admin` scope, whose client (and
user, if any) is still enabled and admin: no token or a bad one is a 401, a token without
the scope a 403. What a request does is fhirpm.auth.manage's (the CLI runs the same code);
this module only translates HTTP. Errors are JSON `{"error", "error_description"}` like the
rest of the authorization server. No CORS: the API is not for apps on other origins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fhirpm.auth.errors import insufficient_scope, invalid_token
from fhirpm.auth.manage import Administration
from fhirpm.auth.principal import Principal
from fhirpm.auth.scopes import ADMIN_SCOPE
from fhirpm.auth.server import AuthServer
from fhirpm.errors import Category, FhirError

log = logging.getLogger("fhirpm.auth.admin")

MAX_BODY = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_ERRORS = {401: "invalid_token", 403: "insufficient_scope", 404: "not_found",
           405: "method_not_allowed", 409: "conflict", 413: "invalid_request",
           415: "invalid_request"}
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # JSON 405s

Handler = Callable[[Request], Awaitable[Response]]


def error_response(err: FhirError) -> JSONResponse:
    code = _ERRORS.get(err.status, "invalid_request" if err.status < 500 else "server_error")
    if err.status == 401 and "error=" not in err.headers.get("WWW-Authenticate", ""):
        code = "unauthorized"  # no token at all (RFC 6750 §3.1: no error code then)
    return JSONResponse({"error": code, "error_description": err.diagnostics}, err.status,
                        headers={**NO_STORE, **err.headers})


def answer(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json",
                    headers={**NO_STORE, **headers})


async def json_body(request: Request) -> Any:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise FhirError(Category.UNSUPPORTED_MEDIA, "send a JSON body (application/json)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise FhirError(Category.TOO_LARGE, "request body too large")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FhirError(Category.STRUCTURE, "the body is not valid JSON") from None


class AdminApi:
    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.admin = Administration(server)
        self.base = server.urls.issuer + "/admin"

    async def caller(self, request: Request) -> Principal:
        """The administrator making the request (401/403 otherwise)."""
        principal = await self.server.verifier.verify_header(
            request.headers.get("authorization"))
        if ADMIN_SCOPE not in principal.scopes:
            raise insufficient_scope(f"the admin API needs the {ADMIN_SCOPE} scope",
                                     ADMIN_SCOPE)
        # The grant was checked when issued; re-check who holds it, as revocation on
        # disable/delete may still be on its way for a token issued that very moment.
        client = await self.server.clients.get(principal.client_id)
        if client is None:
            raise invalid_token("the token's client is disabled or deleted")
        if not client.admin:
            raise insufficient_scope("the token's client is no longer an admin client")
        if principal.sub != principal.client_id:
            user = await self.server.users.get(principal.sub)
            if user is None:
                raise invalid_token("the token's user is disabled or deleted")
            if not user.may_administer:
                raise insufficient_scope("the token's user is no longer an administrator")
        return principal

    # -- clients ----------------------------------------------------------------------

    async def clients(self, request: Request) -> Response:
        if request.method == "GET":
            return answer({"clients": await self.admin.list_clients()})
        created = await self.admin.create_client(await json_body(request))
        return answer(created, 201, Location=f"{self.base}/clients/{created['client_id']}")

    async def client(self, request: Request) -> Response:
        client_id = request.path_params["client_id"]
        if request.method == "GET":
            return answer(await self.admin.client(client_id))
        if request.method == "PATCH":
            return answer(await self.admin.update_client(client_id, await json_body(request)))
        await self.admin.delete_client(client_id)
        return Response(status_code=204, headers=NO_STORE)

    async def client_secret(self, request: Request) -> Response:
        return answer(await self.admin.new_secret(request.path_params["client_id"]))

    # -- users ------------------------------------------------------------------------

    async def users(self, request: Request) -> Response:
        if request.method == "GET":
            return answer({"users": await self.admin.list_users()})
        created = await self.admin.create_user(await json_body(request))
        return answer(created, 201, Location=f"{self.base}/users/{created['username']}")

    async def user(self, request: Request) -> Response:
        username = request.path_params["username"]
        if request.method == "GET":
            return answer(await self.admin.user(username))
        if request.method == "PATCH":
            return answer(await self.admin.update_user(username, await json_body(request)))
        await self.admin.delete_user(username)
        return Response(status_code=204, headers=NO_STORE)

    async def password(self, request: Request) -> Response:
        username = request.path_params["username"]
        return answer(await self.admin.set_password(username, await json_body(request)))

    # -- plumbing ---------------------------------------------------------------------

    def endpoint(self, handler: Handler, methods: tuple[str, ...]) -> Handler:
        """Method check, then the caller check, then the handler; errors as JSON."""
        async def run(request: Request) -> Response:
            try:
                if request.method not in methods:
                    raise FhirError(Category.METHOD_NOT_ALLOWED,
                                    f"{request.method} is not allowed here",
                                    headers={"Allow": ", ".join(methods)})
                await self.caller(request)
                return await handler(request)
            except FhirError as err:
                return error_response(err)
            except Exception:
                log.exception("admin API failed: %s %s", request.method, request.url.path)
                return answer({"error": "server_error"}, 500)
        return run


def build(server: AuthServer, mount: str = "/auth") -> list[BaseRoute]:
    """The admin API's routes under `mount` (where the authorization server lives)."""
    api = AdminApi(server)
    base = mount + "/admin"

    def route(path: str, handler: Handler, *methods: str) -> Route:
        return Route(base + path, api.endpoint(handler, methods), methods=ANY_METHOD)

    return [
        route("/clients", api.clients, "GET", "POST"),
        route("/clients/{client_id}", api.client, "GET", "PATCH", "DELETE"),
        route("/clients/{client_id}/secret", api.client_secret, "POST"),
        route("/users", api.users, "GET", "POST"),
        route("/users/{username}", api.user, "GET", "PATCH", "DELETE"),
        route("/users/{username}/password", api.password, "POST"),
    ]
