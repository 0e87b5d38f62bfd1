"""Content negotiation: which media types we read and write, and `_format`/`_pretty`."""

from __future__ import annotations

from fhirpm.errors import Category, FhirError

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
_JSON_TYPES = {FHIR_JSON, "application/json", "text/json", "json"}
_XML_TYPES = {"application/fhir+xml", "application/xml", "text/xml", "xml"}
# Bulk output files ($bulk-publish) answer NDJSON themselves; errors are still FHIR JSON.
_NDJSON_TYPES = {"application/fhir+ndjson", "application/ndjson"}
_FORMAT_ALIASES = {"json": FHIR_JSON, "application/json": "application/json",
                   "application/fhir+json": FHIR_JSON, "text/json": "application/json"}


def response_media_type(format_param: str | None, accept: str | None) -> str:
    """The media type to answer in; 406 for formats we cannot produce (XML, Turtle)."""
    if format_param:
        wanted = format_param.split(";")[0].strip().lower()
        if wanted in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[wanted]
        raise FhirError(Category.NOT_ACCEPTABLE,
                        f"_format={format_param} is not supported; this server speaks JSON "
                        "(application/fhir+json)")
    if not accept:
        return FHIR_JSON
    known = _ACCEPTED.get(accept)
    if known is not None:
        return known
    media = _from_accept(accept)
    if len(_ACCEPTED) < 256:  # clients send a handful of distinct Accept headers
        _ACCEPTED[accept] = media
    return media


_ACCEPTED: dict[str, str] = {}  # Accept header -> the media type it gets (answerable ones)


def _from_accept(accept: str) -> str:
    offered = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    for media in offered:
        if media in (FHIR_JSON, "*/*", "application/*", "") or media.endswith("+json"):
            return FHIR_JSON
        if media in _NDJSON_TYPES:
            return FHIR_JSON
        if media in _JSON_TYPES:
            return "application/json"
    if any(m in _XML_TYPES for m in offered):
        raise FhirError(Category.NOT_ACCEPTABLE,
                        "XML is not supported; ask for application/fhir+json")
    raise FhirError(Category.NOT_ACCEPTABLE,
                    f"Cannot answer in {accept}; this server speaks application/fhir+json")


def check_request_media_type(content_type: str | None, method: str) -> None:
    """415 unless the body is FHIR JSON (or a JSON Patch document for PATCH)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _JSON_TYPES or (method == "PATCH" and media == JSON_PATCH):
        return
    if not media:
        raise FhirError(Category.UNSUPPORTED_MEDIA,
                        "Missing Content-Type; send application/fhir+json")
    if media in _XML_TYPES:
        raise FhirError(Category.UNSUPPORTED_MEDIA,
                        "XML bodies are not supported; send application/fhir+json")
    raise FhirError(Category.UNSUPPORTED_MEDIA,
                    f"Content-Type {media} is not supported; send application/fhir+json")


def wants_pretty(value: str | None) -> bool:
    return (value or "").lower() == "true"
