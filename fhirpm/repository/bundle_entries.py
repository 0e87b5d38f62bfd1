"""Bundle entries: what a batch/transaction entry asks for, checked and split up, and the
response entry each one gets. Malformed entries are 400s naming the element
(`Bundle.entry[3].request.method`); a failing entry's OperationOutcome names the entry.
Nothing here processes an entry: `bundle` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fhirpm.errors import Category, FhirError, Issue
from fhirpm.fhir import jsonio
from fhirpm.repository.interactions import FhirRequest, FhirResponse
from fhirpm.storage.port import UnitOfWork

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_HEADERS = (("ifNoneExist", "if-none-exist"), ("ifMatch", "if-match"),
            ("ifNoneMatch", "if-none-match"), ("ifModifiedSince", "if-modified-since"))


@dataclass(slots=True)
class Entry:
    """One bundle entry's request, checked and split up."""

    index: int
    method: str
    path: str  # relative to the base, without the query
    params: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    resource: Any
    full_url: str | None
    base: str = ""  # the server's base URL, as the client sees it
    assigned_id: str | None = None
    principal: Any = None  # who sent the bundle: every entry runs as them (access.py)

    @property
    def type(self) -> str | None:
        return self.path.split("/", 1)[0] or None

    @property
    def id(self) -> str | None:
        parts = self.path.split("/")
        return parts[1] if len(parts) == 2 else None

    @property
    def label(self) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in self.params) if self.params else ""
        return f"Bundle.entry[{self.index}] ({self.method} {self.path}{query})"

    def request(self, base: str, prefer: str | None, uow: UnitOfWork | None) -> FhirRequest:
        headers = dict(self.headers)
        if prefer:
            headers["prefer"] = prefer
        return FhirRequest(method="GET" if self.method == "HEAD" else self.method,
                           path=self.path, base=base, params=self.params, headers=headers,
                           resource=self.resource, uow=uow, assigned_id=self.assigned_id,
                           principal=self.principal)


def _invalid(message: str, path: str) -> FhirError:
    return FhirError(Category.INVALID, f"{path}: {message}", expression=(path,))


def bundle_type(body: Any) -> str:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        found = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise _invalid(f"POST to the base takes a Bundle, not {found!r}", "Bundle")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise _invalid(f"type must be 'batch' or 'transaction', not {kind!r}", "Bundle.type")
    return kind


def parse_entries(body: dict[str, Any], base: str, max_entries: int, *,
                  principal: Any) -> list[Entry]:
    """`principal`: the bundle's FhirRequest.principal, which every entry carries."""
    raw = body.get("entry", [])
    if not isinstance(raw, list):
        raise _invalid("entry must be a list", "Bundle.entry")
    if len(raw) > max_entries:
        raise FhirError(Category.TOO_COSTLY,
                        f"Bundle has {len(raw)} entries; this server takes at most "
                        f"{max_entries} per bundle", expression=("Bundle.entry",))
    entries = [_parse_entry(n, item, base) for n, item in enumerate(raw)]
    for entry in entries:
        entry.principal = principal
    seen: dict[str, int] = {}
    for e in entries:
        if e.full_url is not None and e.full_url in seen and e.method in ("POST", "PUT"):
            raise _invalid(f"fullUrl {e.full_url!r} is also used by entry[{seen[e.full_url]}]",
                           f"Bundle.entry[{e.index}].fullUrl")
        if e.full_url is not None:
            seen.setdefault(e.full_url, e.index)
    return entries


def _parse_entry(n: int, item: Any, base: str) -> Entry:
    at = f"Bundle.entry[{n}]"
    if not isinstance(item, dict):
        raise _invalid("an entry must be an object", at)
    request = item.get("request")
    if not isinstance(request, dict):
        raise _invalid("request is required in batch and transaction entries", f"{at}.request")
    method = request.get("method")
    if method not in METHODS:
        raise _invalid(f"method must be one of {', '.join(METHODS)}, not {method!r}",
                       f"{at}.request.method")
    path, params = _split_url(request.get("url"), base, f"{at}.request.url")
    if not path and method != "GET":
        raise _invalid("nested batch/transaction (POST to the base) is not supported",
                       f"{at}.request.url")
    resource = item.get("resource")
    if method in ("POST", "PUT", "PATCH") and not isinstance(resource, dict):
        raise _invalid(f"a {method} entry needs a resource", f"{at}.resource")
    full_url = item.get("fullUrl")
    if full_url is not None and (not isinstance(full_url, str) or not full_url):
        raise _invalid("fullUrl must be a non-empty string", f"{at}.fullUrl")
    return Entry(n, method, path, params, _headers(request, at), resource, full_url, base)


def _split_url(url: Any, base: str, at: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    if not isinstance(url, str) or not url.strip():
        raise _invalid("url is required", at)
    url = url.strip()
    if url.startswith(base + "/") or url == base:
        url = url[len(base):]
    elif url.startswith(("http://", "https://")):
        raise _invalid(f"{url!r} is not on this server (base {base})", at)
    path, _, query = url.partition("?")
    return path.strip("/"), tuple(parse_qsl(query, keep_blank_values=True))


def _headers(request: dict[str, Any], at: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for member, header in _HEADERS:
        value = request.get(member)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _invalid(f"{member} must be a string", f"{at}.request.{member}")
        headers[header] = _http_date(value) if member == "ifModifiedSince" else value
    return headers


def _http_date(instant: str) -> str:
    """A FHIR instant as the HTTP date If-Modified-Since carries."""
    try:
        return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")),
                               usegmt=True)
    except (ValueError, TypeError):
        return instant  # the interaction ignores a date it cannot read, as over HTTP


def entry_failure(entry: Entry, err: FhirError) -> FhirError:
    issues = [Issue(i.code, f"{entry.label}: {i.diagnostics}", i.severity, i.expression)
              for i in err.issues]
    return FhirError(err.category, issues[0].diagnostics, issues=issues, headers=err.headers)


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def response_entry(base: str, entry: Entry, answer: FhirResponse,
                   prefer: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    v = answer.version
    if v is not None and not v.deleted:
        out["fullUrl"] = f"{base}/{v.type}/{v.id}"
    if answer.body is not None and entry.method != "HEAD":
        as_outcome = "OperationOutcome" in (prefer or "") and entry.method not in ("GET",)
        if not as_outcome:
            out["resource"] = jsonio.raw(answer.body)
    response: dict[str, Any] = {"status": _status(answer.status)}
    if "Location" in answer.headers:
        response["location"] = answer.headers["Location"]
    if "ETag" in answer.headers:
        response["etag"] = answer.headers["ETag"]
    if v is not None:
        response["lastModified"] = v.last_updated
    if answer.body is not None and "resource" not in out and entry.method != "HEAD":
        response["outcome"] = jsonio.raw(answer.body)
    out["response"] = response
    return out


def error_entry(err: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status(err.status), "outcome": err.outcome()}}
