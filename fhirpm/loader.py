"""Bulk loading of FHIR files (`fhirpm load`): Bundles, single resources, NDJSON, folders.

Everything goes through `Interactions.dispatch`, the path REST requests take, so a loaded
transaction behaves exactly like one POSTed to the server: transaction and batch Bundles are
dispatched as they are; a resource with an id is PUT (reloading is idempotent and keeps the
ids references use), one without is POSTed; collection and searchset Bundles are unpacked
into their resources; other Bundles (document, message) are stored as Bundle resources.

Folders are walked recursively. Synthea writes the organisations and practitioners that
patient bundles refer to (by conditional reference) in `hospitalInformation*` and
`practitionerInformation*` files, so those load first. This module knows nothing of HTTP,
the command line or the store.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from fhirpm.errors import FhirError
from fhirpm.fhir import jsonio
from fhirpm.repository.interactions import FhirRequest, Interactions

FIRST = ("hospitalInformation", "practitionerInformation")  # Synthea's shared resources
_SUFFIXES = (".json", ".ndjson", ".jsonl")
_UNPACKED_BUNDLES = ("collection", "searchset")
_MINIMAL = {"prefer": "return=minimal"}


class Progress(Protocol):
    """What the loader needs from a progress bar (tqdm fits)."""

    def update(self, n: int) -> Any: ...

    def set_postfix_str(self, s: str, refresh: bool = True) -> Any: ...


@dataclass(frozen=True, slots=True)
class LoadError:
    source: str  # file, with the line or entry number when the file holds many resources
    status: int
    message: str


@dataclass
class LoadReport:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)  # new versions or already there
    errors: list[LoadError] = field(default_factory=list)
    files: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values())

    def count(self, type: str, status: int) -> None:
        (self.created if status == 201 else self.updated)[type] += 1


def discover(paths: Iterable[Path]) -> list[Path]:
    """The loadable files under `paths` (folders recursively), Synthea's shared ones first."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and _loadable(p)))
        else:
            found.append(path)
    return sorted(found, key=_priority)  # stable: keeps the given order otherwise


def _loadable(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    # package.json: the manifest of a FHIR NPM package folder, not a resource
    return name.endswith(_SUFFIXES) and not name.startswith(".") and name != "package.json"


def _priority(path: Path) -> int:
    for rank, prefix in enumerate(FIRST):
        if path.name.startswith(prefix):
            return rank
    return len(FIRST)


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _is_ndjson(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith((".ndjson", ".jsonl"))


class Loader:
    def __init__(self, interactions: Interactions, base: str,
                 progress: Progress | None = None) -> None:
        self.interactions = interactions
        self.base = base
        self.progress = progress
        self.report = LoadReport()

    async def load(self, files: Iterable[Path]) -> LoadReport:
        started = time.perf_counter()
        for path in files:
            await self.load_file(path)
        self.report.seconds += time.perf_counter() - started
        return self.report

    async def load_file(self, path: Path) -> None:
        self.report.files += 1
        try:
            if _is_ndjson(path):
                await self._load_ndjson(path)
            else:
                with _open(path) as f:
                    data = f.read()
                await self._load_document(str(path), jsonio.loads(data))
                self._advance(path.stat().st_size)
        except FhirError as err:
            self._error(str(path), err.status, err.diagnostics)
        except OSError as err:
            self._error(str(path), 0, f"cannot read: {err.strerror or err}")

    async def _load_ndjson(self, path: Path) -> None:
        with _open(path) as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    source = f"{path}:{number}"
                    try:
                        await self._load_resource(source, jsonio.loads(line))
                    except FhirError as err:
                        self._error(source, err.status, err.diagnostics)
                self._advance(len(line))

    async def _load_document(self, source: str, doc: Any) -> None:
        if not isinstance(doc, dict):
            self._error(source, 400, "not a FHIR resource (expected a JSON object)")
        elif doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction",
                                                                          "batch"):
            await self._load_bundle(source, doc)
        elif doc.get("resourceType") == "Bundle" and doc.get("type") in _UNPACKED_BUNDLES:
            for n, entry in enumerate(doc.get("entry") or ()):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if resource is not None:
                    await self._load_entry(f"{source} entry {n}", resource)
        else:
            await self._load_entry(source, doc)

    async def _load_entry(self, source: str, resource: Any) -> None:
        try:
            await self._load_resource(source, resource)
        except FhirError as err:
            self._error(source, err.status, err.diagnostics)

    async def _load_resource(self, source: str, resource: Any) -> None:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            self._error(source, 400, "not a FHIR resource (no resourceType)")
            return
        type_ = resource["resourceType"]
        rid = resource.get("id")
        method, path = ("PUT", f"{type_}/{rid}") if isinstance(rid, str) else ("POST", type_)
        response = await self.interactions.dispatch(FhirRequest(
            method=method, path=path, base=self.base, headers=_MINIMAL, resource=resource))
        self.report.count(type_, response.status)

    async def _load_bundle(self, source: str, bundle: dict[str, Any]) -> None:
        response = await self.interactions.dispatch(FhirRequest(
            method="POST", path="", base=self.base, resource=bundle))
        answer = jsonio.loads(response.body) if response.body else {}
        requests = bundle.get("entry") or []
        for n, (sent, got) in enumerate(zip(requests, answer.get("entry") or (), strict=False)):
            self._count_entry(f"{source} entry {n}", sent, got)

    def _count_entry(self, source: str, sent: Any, got: Any) -> None:
        reply = got.get("response") or {} if isinstance(got, dict) else {}
        status = _status(reply.get("status"))
        request = sent.get("request") or {} if isinstance(sent, dict) else {}
        if status >= 400 or status == 0:
            self._error(source, status, _outcome_text(reply.get("outcome")))
        elif request.get("method") in ("POST", "PUT", "PATCH"):
            resource = sent.get("resource") or {}
            type_ = resource.get("resourceType") or str(request.get("url", "")).split("/")[0]
            self.report.count(type_.split("?")[0], status)

    def _error(self, source: str, status: int, message: str) -> None:
        self.report.errors.append(LoadError(source, status, message))

    def _advance(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.update(nbytes)
            self.progress.set_postfix_str(
                f"{self.report.total} resources, {len(self.report.errors)} errors",
                refresh=False)


def _status(text: Any) -> int:
    head = str(text or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


def _outcome_text(outcome: Any) -> str:
    if not isinstance(outcome, dict):
        return "failed (no OperationOutcome)"
    texts = [str(i.get("diagnostics") or i.get("code")) for i in outcome.get("issue") or ()
             if isinstance(i, dict)]
    return "; ".join(texts) or "failed"


def total_bytes(files: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in files if p.exists())


def summary_lines(report: LoadReport, max_errors: int = 50) -> Iterator[str]:
    """A human summary: totals, a table by resource type, then the errors."""
    rate = report.total / report.seconds if report.seconds > 0 else 0.0
    yield (f"Loaded {report.total} resources from {report.files} files in "
           f"{report.seconds:.1f} s ({rate:,.0f}/s), {len(report.errors)} errors")
    types = sorted(set(report.created) | set(report.updated))
    if types:
        width = max(len(t) for t in types)
        yield f"  {'type':<{width}}  {'created':>8}  {'updated':>8}"
        for t in types:
            yield f"  {t:<{width}}  {report.created[t]:>8}  {report.updated[t]:>8}"
    if report.errors:
        yield f"Errors ({len(report.errors)}):"
        for err in report.errors[:max_errors]:
            status = f"{err.status} " if err.status else ""
            yield f"  {err.source}: {status}{err.message}"
        if len(report.errors) > max_errors:
            yield f"  ... and {len(report.errors) - max_errors} more"
