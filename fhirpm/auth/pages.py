"""Server-rendered HTML for the login, patient picker, consent, launch and error pages.

Jinja2 with autoescaping on, so nothing a client or a record supplies (app names, patient
names, error text) can inject markup. Pages are never framed (clickjacking on a consent
page would grant scopes) and never cached.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from fhirpm.auth.scopes import parse_scope

_env = Environment(loader=PackageLoader("fhirpm.auth", "templates"),
                   autoescape=select_autoescape(default=True), auto_reload=False)

HEADERS = {
    "Cache-Control": "no-store", "Pragma": "no-cache", "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
}

_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_OTHER = {
    "openid": "Confirm your identity to the app",
    "fhirUser": "Tell the app which person record is yours",
    "profile": "Tell the app your name and person record",
    "launch": "Open in the context of the current record",
    "launch/patient": "Work with one patient's record",
    "launch/encounter": "Work with the current encounter",
    "offline_access": "Keep access when you are not using the app",
    "online_access": "Keep access while you are signed in",
    "fhirpm/admin": "Administer this server's apps and user accounts",
}
_WHOSE = {"patient": "of the selected patient", "user": "that you can access",
          "system": "on this server"}


def describe(scope: str) -> str:
    """A plain-language line for one scope on the consent page."""
    if scope in _OTHER:
        return _OTHER[scope]
    parsed = parse_scope(scope)
    if parsed is None:
        return scope
    verbs = [v for k, v in _VERBS.items() if k in parsed.permissions]
    what = "all records" if parsed.type == "*" else f"{parsed.type} records"
    text = f"{', '.join(verbs).capitalize()} {what} {_WHOSE[parsed.context]}"
    if parsed.query:
        text += " where " + ", ".join(f"{k}={v}" for k, v in parsed.query)
    return text


def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _env.get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(message: str, status: int = 400) -> HTMLResponse:
    return render("error.html", status, message=message)
