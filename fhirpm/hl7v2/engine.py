"""The one mapping engine: a parsed v2 message + the files in `mappings/` -> FHIR resources.

Owns the interpretation of the IG's four layers, each a kind of mapping file:
  events      trigger event -> message structure (HL7 table 0354) and event overrides
  messages    per structure: which segment becomes (or feeds) which resource, and references
  segments    per segment flavour (`PID[Patient]`): field -> FHIR path, datatype, vocabulary
  datatypes   per datatype flavour (`CX[Identifier]`): component -> path (may build a resource)
  vocabulary  code maps (HL7 tables -> FHIR codes) and coding-system names -> URIs
The format is documented in docs/hl7v2.md. The engine is pure: no I/O, no store. It yields
`Mapped`: each resource as a *partial* body (only what the message said), the top-level
elements the message nulled (`""`), defaults, and how to find it again (a conditional query
on a business identifier, or a deterministic id). `inbound` merges that over what is stored
and submits one transaction; `Mapped.bundle()` shows the same thing with nothing stored.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from fhirpm.errors import Category
from fhirpm.hl7v2.parser import NULL, Message, Segment, V2Error

NAMESPACE = uuid.UUID("6f0c1a52-3c1e-4c55-9a7b-2f3c1d0e7a11")
V2_TABLE = re.compile(r"^HL7(\d{4})$")
OURS = "urn:fhirpm:hl7v2"  # systems we mint where a message names no URI (marked as ours)

Comps = list[list[str]]  # components -> subcomponents (one repetition of a field)


def default_mappings_dir() -> Path:
    """mappings/: installed inside the package by the wheel, else the checkout's top level."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "mappings"
    return installed if installed.is_dir() else package.parent / "mappings"


# -- the mapping files ------------------------------------------------------------------


@dataclass
class MappingSet:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    datatypes: dict[str, dict[str, Any]] = field(default_factory=dict)
    vocabulary: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, *dirs: Path | str) -> MappingSet:
        """Read the base directory, then each site directory over it (same names win)."""
        out = cls()
        for d in dirs or (default_mappings_dir(),):
            root = Path(d)
            if not root.is_dir():
                raise FileNotFoundError(f"mapping directory {root} does not exist")
            for kind in ("events", "messages", "segments", "datatypes", "vocabulary"):
                table = getattr(out, kind)
                for path in sorted([*root.glob(f"{kind}.yaml"), *root.glob(f"{kind}/*.yaml")]):
                    table.update(_read_yaml(path))
        return out


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
_CACHE: dict[tuple[str, float], dict[str, Any]] = {}


def _read_yaml(path: Path) -> dict[str, Any]:
    """A mapping file's definitions (cached until the file changes)."""
    key = (str(path), path.stat().st_mtime)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping file holds a map of names to definitions")
    _CACHE[key] = data
    return data


# -- what the engine produces -------------------------------------------------------------


@dataclass
class Identity:
    """How a resource is found again: `Type?identifier=sys|val`, or `Type/<id>`."""

    type: str
    system: str | None = None
    value: str | None = None
    id: str | None = None

    @property
    def url(self) -> str:
        if self.id is not None:
            return f"{self.type}/{self.id}"
        token = _search_escape(self.value or "")
        if self.system:
            token = f"{_search_escape(self.system)}|{token}"
        return f"{self.type}?identifier={quote(token, safe='')}"

    @property
    def key(self) -> str:
        return self.id or f"{self.system or ''}|{self.value}"


def _search_escape(text: str) -> str:
    return re.sub(r"([\\,$|])", r"\\\1", text)


@dataclass
class MappedResource:
    type: str
    key: str  # the message map's key ("Patient", "Coverage#2", "Practitioner:<hash>")
    body: dict[str, Any]
    identity: Identity | None = None
    deletes: set[str] = field(default_factory=set)
    defaults: dict[str, Any] = field(default_factory=dict)
    full_url: str = ""
    origin: tuple[str, int] = ("", 0)  # the segment (name, occurrence) that first fed it
    # top-level element -> the fullUrls it references only if the message writes them
    # (`written: true` references rows: a Provenance's targets; see the committer)
    if_written: dict[str, set[str]] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        """The body as it would be stored when nothing was there before."""
        out = {"resourceType": self.type, **self.body}
        for name, value in self.defaults.items():
            out.setdefault(name, value)
        if self.identity and self.identity.id:
            out["id"] = self.identity.id
        return out


@dataclass(frozen=True)
class Link:
    """A reference found by searching what is stored (`links:` in a message map): the
    resource `key` gets, at its element `path`, references to the `type` resources that
    `where` finds; each criterion's value is read from the resource itself (a dotted path;
    references to the message's other resources are resolved to their ids first)."""

    key: str
    path: str
    type: str
    where: tuple[tuple[str, str], ...]  # (search parameter, path in the resource)


@dataclass
class Mapped:
    message: Message
    event: str
    structure: str
    resources: list[MappedResource]
    merges: list[tuple[str, str]] = field(default_factory=list)  # (survivor, old) keys
    links: list[Link] = field(default_factory=list)

    def by_type(self, type: str) -> list[MappedResource]:
        return [r for r in self.resources if r.type == type]

    def bundle(self) -> dict[str, Any]:
        """The transaction as it would be submitted with nothing stored yet."""
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": r.full_url, "resource": r.resource(),
             "request": {"method": "PUT" if r.identity else "POST",
                         "url": r.identity.url if r.identity else r.type}}
            for r in self.resources]}


# -- the engine ---------------------------------------------------------------------------


@dataclass
class Options:
    """Per-sender settings that change how values read."""

    timezone: str = ""  # zone of times sent without one: "+01:00" or "Europe/Berlin"
    authorities: dict[str, str] = field(default_factory=dict)  # HD namespace -> system URI


class Engine:
    def __init__(self, mappings: MappingSet | None = None) -> None:
        self.maps = mappings or MappingSet.load()

    def structure_for(self, msg: Message) -> tuple[str, str, dict[str, Any]]:
        """(event key, structure, event definition): the structure comes from table 0354
        through events.yaml, never from MSH-9.3 (senders put event codes there)."""
        h = msg.header
        key = f"{h.message_code}^{h.event}"
        spec = self.maps.events.get(key)
        if spec is None:
            raise V2Error(Category.NOT_SUPPORTED, f"Unsupported message type/event {key}",
                          hl7_code="201" if h.message_code in _known_codes(self.maps) else "200",
                          segment="MSH", sequence=1, position=9)
        structure = spec["structure"]
        if structure not in self.maps.messages:
            raise V2Error(Category.NOT_SUPPORTED, f"No message map for structure {structure}",
                          hl7_code="200", segment="MSH", sequence=1, position=9)
        return key, structure, spec

    def map(self, msg: Message, options: Options | None = None) -> Mapped:
        key, structure, event = self.structure_for(msg)
        run = _Run(self, msg, options or Options())
        run.apply_message(self.maps.messages[structure])
        run.apply_event(event)
        return run.finish(key, structure)


def _known_codes(maps: MappingSet) -> set[str]:
    return {k.split("^")[0] for k in maps.events}


class _Run:
    """One message's mapping: resources by key, built segment by segment."""

    def __init__(self, engine: Engine, msg: Message, options: Options) -> None:
        self.maps = engine.maps
        self.msg = msg
        self.options = options
        self.resources: dict[str, MappedResource] = {}
        self.keys: dict[str, list[tuple[str, str]]] = {}  # identity-key candidates per resource
        self.merges: list[tuple[str, str]] = []
        self.links: list[Link] = []
        self.segment: Segment | None = None  # the segment being mapped
        self.creates: set[str] = set()  # keys always created anew (the Provenance)
        self.late_refs: list[tuple[MappedResource, str, str]] = []  # datatype resources
        h = msg.header
        # an identifier without assigning authority is the sender's own: scope it so that
        # conditional updates match exactly (never "any system with this value")
        self.local_system = f"{OURS}:local:{quote(h.sending_application, safe='')}" + (
            f":{quote(h.sending_facility, safe='')}" if h.sending_facility else "")

    # -- message level -----------------------------------------------------------------

    def apply_message(self, spec: dict[str, Any]) -> None:
        counts: dict[str, int] = {}
        previous, run_length = "", 0  # NTE belongs to the segment before its run
        for seg in self.msg.segments:
            counts[seg.name] = counts.get(seg.name, 0) + 1
            if seg.name == "NTE":
                run_length += 1
            else:
                run_length = 0
            for row in spec.get("segments", ()):
                if row["segment"] != seg.name:
                    continue
                if "only_after" in row and (previous not in row["only_after"]
                                            or run_length > 1):
                    continue
                self._apply_row(row, seg, counts)
            if seg.name != "NTE":
                previous = seg.name
        for row in spec.get("references", ()):
            self._reference_row(row)
        for survivor, old in spec.get("merge", {}).items():
            for res in self._keyed(survivor):
                n = res.key.partition("#")[2]
                gone = self.resources.get(f"{old}#{n}" if n else old)
                if gone is not None:
                    self.merges.append((res.key, gone.key))
        for row in spec.get("links", ()):
            self._link_row(row)

    def _link_row(self, row: dict[str, Any]) -> None:
        """`links:` rows: {from: Key, path: element, search: Type, where: {param: path}}."""
        where = row.get("where")
        if not isinstance(where, dict) or not where or "." in row["path"] \
                or "[" in row["path"]:
            raise V2Error(Category.INTERNAL, f"mappings: a link needs a top-level `path` "
                          f"and `where` criteria: {row!r}")
        for res in self._keyed(row["from"]):
            self.links.append(Link(res.key, row["path"], row["search"],
                                   tuple((str(k), str(v)) for k, v in where.items())))

    def _apply_row(self, row: dict[str, Any], seg: Segment, counts: dict[str, int]) -> None:
        after = row.get("follows")
        key = row["key"]
        if row.get("each"):
            key = f"{key}#{counts.get(after, 0) if after else seg.occurrence}"
        elif after:
            key = f"{key}#{counts.get(after, 0)}"
        smap = self._segment_map(row["map"])
        created = key not in self.resources
        res = self._resource(key, smap["resource"])
        if created:
            res.origin = (seg.name, seg.occurrence)
        for name, value in (smap.get("defaults") or {}).items():
            res.defaults.setdefault(name, copy_json(value))
        if row.get("create"):
            self.creates.add(key)
        try:
            self._apply_rules(res, smap.get("rules", ()), seg)
        except V2Error:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise V2Error(Category.UNPROCESSABLE, f"{seg.name} ({row['map']}): {exc}",
                          hl7_code="207", segment=seg.name, sequence=seg.occurrence) from None
        if created and not res.body and not res.deletes:
            del self.resources[key]  # the segment said nothing this map uses (PID-18 empty)
            return
        occurrence = key.partition("#")[2]
        for path, target in (row.get("refs") or {}).items():
            found = self.resources.get(f"{target}#{occurrence}") if occurrence else None
            found = found or self.resources.get(target)
            if found is not None and not _has_ref(res.body, path, self._ref(found)):
                _set(res.body, path, self._ref(found))

    def _reference_row(self, row: dict[str, Any]) -> None:
        """`references:` rows: {from: Key, path: x, to: Key} for every resource of a key;
        `written: true`: only to the resources the message writes (`path` top-level)."""
        sources = self._keyed(row["from"])
        targets = (list(self.resources.values()) if row["to"] == "*"
                   else self._keyed(row["to"]))
        element = row["path"].removesuffix("[]")
        if row.get("written") and ("." in element or "[" in element):
            raise V2Error(Category.INTERNAL, f"mappings: a `written` reference needs a "
                          f"top-level `path`: {row!r}")
        for res in sources:
            for target in targets:
                if target is not res:
                    ref = self._ref(target)
                    _set(res.body, row["path"], ref, row.get("with"))
                    if row.get("written"):
                        res.if_written.setdefault(element, set()).add(ref["reference"])

    def _keyed(self, key: str) -> list[MappedResource]:
        return [r for k, r in self.resources.items() if k == key or k.startswith(key + "#")]

    def _segment_map(self, name: str) -> dict[str, Any]:
        smap = self.maps.segments.get(name)
        if smap is None:
            raise V2Error(Category.INTERNAL, f"mappings: no segment map {name!r}")
        return smap

    def _resource(self, key: str, type: str) -> MappedResource:
        res = self.resources.get(key)
        if res is None:
            res = self.resources[key] = MappedResource(type, key, {})
        return res

    # -- event level ------------------------------------------------------------------

    def apply_event(self, event: dict[str, Any]) -> None:
        for key, values in (event.get("set") or {}).items():
            for res in self._keyed(key):
                res.body.update(copy_json(values))
                res.deletes.difference_update(values)
        for key, values in (event.get("default") or {}).items():
            for res in self._keyed(key):
                res.defaults.update(copy_json(values))

    # -- segment level ----------------------------------------------------------------

    def _apply_rules(self, res: MappedResource, rules: Any, seg: Segment) -> None:
        self.segment = seg  # functions may read sibling fields (SCH-10 units of SCH-9)
        for r in _compiled(rules):
            rule = r.rule
            if r.constant:
                if r.when is None or _condition(r.when, seg.field):
                    _set(res.body, r.path, copy_json(rule["value"]))
                continue
            if not seg.raw(r.f):  # an empty field: nothing to split or convert
                continue
            reps = seg.field(r.f)
            if r.when is not None and not _condition(r.when, seg.field):
                continue
            if r.has_value:
                if reps != [[[NULL]]]:
                    _set(res.body, r.path, copy_json(rule["value"]))
                continue
            if reps == [[[NULL]]]:
                res.deletes.add(r.top)
                continue
            if not r.repeats:
                reps = reps[:1]
            for n, rep in enumerate(reps):
                if r.prim is not None:  # a leaf, read as _typed reads it
                    text = rep[0][0] if rep and rep[0] else ""
                    value = r.prim(self, text, r.vocab) if text and text != NULL else None
                else:
                    value = self._convert(rule, rep)
                if value is None:
                    continue
                if r.has_key and n == 0:
                    self.keys.setdefault(res.key, []).append((rule["key"], value))
                _set(res.body, r.path, value, r.with_)
            res.deletes.discard(r.top)

    def _convert(self, rule: dict[str, Any], comps: Comps) -> Any:
        if "ref" in rule:
            target = self._datatype_resource(rule["ref"], comps)
            return self._ref(target) if target else None
        if "fn" in rule:
            return FUNCTIONS[rule["fn"]](self, comps, rule)
        return self._typed(rule.get("type", "string"), comps, rule.get("vocab"))

    # -- datatype level ---------------------------------------------------------------

    def _typed(self, type: str, comps: Comps, vocab: str | None) -> Any:
        prim = PRIMITIVES.get(type)
        if prim is not None:
            text = comps[0][0] if comps and comps[0] else ""
            if not text or text == NULL:
                return None
            return prim(self, text, vocab)
        dmap = self.maps.datatypes.get(type)
        if dmap is None:
            raise V2Error(Category.INTERNAL, f"mappings: unknown datatype {type!r}")
        if dmap.get("resource"):
            target = self._datatype_resource(type, comps)
            return self._ref(target) if target else None
        out = self._build(dmap, comps)
        if out and vocab and isinstance(out, dict):
            out = self._recode(out, vocab)
        return out or None

    def _build(self, dmap: dict[str, Any], comps: Comps) -> dict[str, Any]:
        out: dict[str, Any] = {}
        got_data = False
        size = len(comps)

        def present(n: int) -> str:
            return _comp(comps, n)

        rules, constants = _compiled_datatype(dmap.get("rules", ()))
        for r in rules:
            rule, c = r.rule, r.c
            if c is not None and c > size:
                continue  # the component is not there: nothing to read
            if r.when is not None and not _condition(r.when, present):
                continue
            if c is None:
                if r.fn is not None:
                    value = r.fn(self, comps, rule)
                    if value is not None:
                        _set(out, r.path, value)
                continue
            # component c seen as a datatype of its own: its subcomponents are components
            leaves = comps[c - 1]
            if r.sub is not None:  # one subcomponent (SAD.2 street name inside XAD.1)
                leaves = leaves[r.sub - 1:r.sub]
            if not any(leaves) or leaves == [NULL]:
                continue
            if r.has_value:
                _set(out, r.path, copy_json(rule["value"]))
                continue
            if r.fn is not None:
                value = r.fn(self, [[s] for s in leaves], rule)
            elif r.prim is not None:  # a leaf: its first subcomponent, as _typed reads it
                text = leaves[0]
                value = r.prim(self, text, r.vocab) if text and text != NULL else None
            else:
                value = self._typed(r.type, [[s] for s in leaves], r.vocab)
            if value is None:
                continue
            _set(out, r.path, value)
            got_data = True
        if not got_data:
            return {}
        for rule in constants:
            if _condition(rule.get("when"), present):
                _set(out, rule["path"], copy_json(rule["value"]))
        out = _compact(out)
        return out.get("value", {}) if dmap.get("scalar") else out

    def _datatype_resource(self, name: str, comps: Comps) -> MappedResource | None:
        """A datatype flavour that builds a resource (XCN[Practitioner], PL[Location]...)."""
        dmap = self.maps.datatypes.get(name)
        if dmap is None:
            raise V2Error(Category.INTERNAL, f"mappings: unknown datatype {name!r}")
        body = self._build(dmap, comps)
        if not body:
            return None
        self._scope(body)
        type = dmap["resource"]
        identity = _identifier_identity(type, body) if dmap.get("identity") == "identifier" \
            else None
        # one resource per content within the message (a guarantor named in IN1-16 and in
        # GT1-3); across messages the same content stands for the same resource unless it
        # refers to others (`refs`: a RelatedPerson is its patient's), whose content id
        # then waits for those references (`finish`)
        key = f"{type}:{identity.key if identity else _content_id(type, body)}"
        if identity is None and not dmap.get("refs"):
            identity = Identity(type, id=key.partition(":")[2])
        res = self.resources.get(key)
        if res is None:
            res = self.resources[key] = MappedResource(type, key, body, identity)
            if self.segment is not None:
                res.origin = (self.segment.name, self.segment.occurrence)
        else:
            for name_, value in body.items():
                res.body.setdefault(name_, value)
        for name_, value in (dmap.get("defaults") or {}).items():
            res.defaults.setdefault(name_, value)
        for path, target in (dmap.get("refs") or {}).items():
            self.late_refs.append((res, path, target))
        return res

    # -- vocabulary ---------------------------------------------------------------------

    def vocab(self, name: str) -> dict[str, Any]:
        found = self.maps.vocabulary.get(name)
        if found is None:
            raise V2Error(Category.INTERNAL, f"mappings: unknown vocabulary {name!r}")
        return found

    def code(self, text: str, vocab: str | None) -> str | None:
        if not vocab:
            return text
        table = self.vocab(vocab)
        mapped = (table.get("codes") or {}).get(text)
        if mapped is None:
            mapped = (table.get("codes") or {}).get(text.upper())
        if isinstance(mapped, dict):
            mapped = mapped.get("code")
        if mapped is None and table.get("unmapped") == "keep":
            return text
        return mapped

    def coding(self, text: str, vocab: str) -> dict[str, Any] | None:
        table = self.vocab(vocab)
        entry = (table.get("codes") or {}).get(text)
        if entry is None and table.get("unmapped") != "keep":
            return None
        entry = entry if isinstance(entry, dict) else {"code": entry or text}
        out = {"system": entry.get("system", table.get("system")), "code": entry["code"]}
        if entry.get("display"):
            out["display"] = entry["display"]
        return {k: v for k, v in out.items() if v}

    def _recode(self, concept: dict[str, Any], vocab: str) -> dict[str, Any]:
        """Apply a use-site vocabulary to a CodeableConcept's first coding (or a Coding)."""
        codings = concept.get("coding") if "coding" in concept else None
        first = codings[0] if codings else concept
        code = first.get("code")
        mapped = self.coding(code, vocab) if code else None
        if mapped is None:
            return concept
        if "display" in first and "display" not in mapped:
            mapped["display"] = first["display"]
        if codings is None:
            return mapped
        return {**concept, "coding": [mapped, *codings[1:]]}

    def system(self, name: str) -> str:
        """A coding-system name (CWE.3, table 0396) -> URI."""
        table = self.vocab("CodingSystem")
        found = (table.get("codes") or {}).get(name)
        if found:
            return found
        m = V2_TABLE.match(name)
        if m:
            return f"http://terminology.hl7.org/CodeSystem/v2-{m[1]}"
        if name.startswith(("http:", "https:", "urn:")):
            return name
        return f"{OURS}:codesystem:{quote(name, safe='')}"

    # -- references and results -------------------------------------------------------

    def _ref(self, target: MappedResource) -> dict[str, str]:
        if not target.full_url:
            target.full_url = f"urn:uuid:{_uuid(target.key)}"
        return {"reference": target.full_url}

    def finish(self, event: str, structure: str) -> Mapped:
        for res, path, target in self.late_refs:
            found = self.resources.get(target)
            if found is not None and path not in res.body:
                _set(res.body, path, self._ref(found))
        for res in self.resources.values():
            self._scope(res.body)
            if not res.full_url:
                res.full_url = f"urn:uuid:{_uuid(res.key)}"
            if res.identity is None and res.key not in self.creates:
                res.identity = self._keyed_identity(res)
        by_url = {r.full_url: r for r in self.resources.values()}
        for res in self.resources.values():
            if res.identity is None and res.key not in self.creates:
                res.identity = Identity(res.type, id=self._content_identity(res, by_url, set()))
        return Mapped(self.msg, event, structure, list(self.resources.values()), self.merges,
                      self.links)

    def _content_identity(self, res: MappedResource, by_url: dict[str, MappedResource],
                          seen: set[str]) -> str:
        """A deterministic id from content, references replaced by their targets'
        identities, so equal content about different patients never collides."""
        seen = seen | {res.key}

        def resolve(value: Any) -> Any:
            if isinstance(value, dict):
                ref = value.get("reference")
                target = by_url.get(ref) if isinstance(ref, str) else None
                if target is not None and len(value) == 1:
                    if target.identity is None and target.key not in seen:
                        target.identity = Identity(target.type, id=self._content_identity(
                            target, by_url, seen))
                    return {"reference": target.identity.url if target.identity else ""}
                return {k: resolve(v) for k, v in value.items()}
            if isinstance(value, list):
                return [resolve(v) for v in value]
            return value

        return _content_id(res.type, resolve(res.body))

    def _keyed_identity(self, res: MappedResource) -> Identity | None:
        candidates = sorted(self.keys.get(res.key, ()), key=lambda c: c[0])
        for _, value in candidates:
            if isinstance(value, dict) and value.get("value"):
                return Identity(res.type, value.get("system") or self.local_system,
                                value["value"])
        return None

    def _scope(self, body: dict[str, Any]) -> None:
        for ident in body.get("identifier") or ():
            if isinstance(ident, dict) and ident.get("value") and not ident.get("system"):
                ident["system"] = self.local_system


# -- segment rules, read once per mapping file ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """A segment rule's keys looked up once (the rule itself is kept for functions)."""

    rule: dict[str, Any]
    f: int
    path: str
    top: str
    when: dict[str, Any] | None
    constant: bool  # `value` without `f`: set whatever the segment says
    has_value: bool
    repeats: bool  # every repetition is mapped (`a[]` paths, `repeat`)
    has_key: bool
    with_: dict[str, Any] | None
    # neither `ref` nor `fn`, and `type` a primitive: the field's first leaf, converted
    prim: Callable[[_Run, str, str | None], Any] | None
    vocab: str | None


_COMPILED: dict[int, tuple[Any, tuple[_Rule, ...]]] = {}


def _compiled(rules: Any) -> tuple[_Rule, ...]:
    """A segment map's rules, compiled once per rules list (the loaded mapping files are
    kept for the process, so their identity is stable; the list is kept beside its
    compiled form so that a recycled id can never match)."""
    found = _COMPILED.get(id(rules))
    if found is not None and found[0] is rules:
        return found[1]
    out = []
    for rule in rules:
        constant = "value" in rule and "f" not in rule
        path = rule["path"]
        out.append(_Rule(rule, rule.get("f", 0) if constant else rule["f"], path, _top(path),
                         rule.get("when") or None, constant, "value" in rule,
                         "[]" in path or bool(rule.get("repeat")), "key" in rule,
                         rule.get("with"),
                         None if "ref" in rule or "fn" in rule
                         else PRIMITIVES.get(rule.get("type", "string")),
                         rule.get("vocab")))
    compiled = tuple(out)
    _COMPILED[id(rules)] = (rules, compiled)
    return compiled


@dataclass(frozen=True, slots=True)
class _DatatypeRule:
    """A datatype rule's keys looked up once (`fn` resolved to its function)."""

    rule: dict[str, Any]
    c: int | None
    path: str
    when: dict[str, Any] | None
    fn: Callable[..., Any] | None
    sub: int | None
    has_value: bool
    type: str
    vocab: str | None
    prim: Callable[[_Run, str, str | None], Any] | None  # `type` is a primitive: its leaf


_COMPILED_DATATYPES: dict[int, tuple[Any, tuple[tuple[_DatatypeRule, ...],
                                                tuple[dict[str, Any], ...]]]] = {}


def _compiled_datatype(rules: Any) -> tuple[tuple[_DatatypeRule, ...],
                                             tuple[dict[str, Any], ...]]:
    """A datatype map's rules compiled once (as `_compiled`), and its constants: rules
    with a `value` and neither `c` nor `fn`, applied once the datatype has data."""
    found = _COMPILED_DATATYPES.get(id(rules))
    if found is not None and found[0] is rules:
        return found[1]
    compiled = tuple(_DatatypeRule(
        rule, rule.get("c"), rule["path"], rule.get("when") if "when" in rule else None,
        _function(rule["fn"]) if "fn" in rule else None, rule.get("sub"), "value" in rule,
        rule.get("type", "string"), rule.get("vocab"),
        PRIMITIVES.get(rule.get("type", "string"))) for rule in rules)
    constants = tuple(rule for rule in rules
                      if "c" not in rule and "fn" not in rule and "value" in rule)
    _COMPILED_DATATYPES[id(rules)] = (rules, (compiled, constants))
    return compiled, constants


def _function(name: str) -> Callable[..., Any]:
    """`fn:` by name; an unknown name fails where it is used, as a mapping error."""
    found = FUNCTIONS.get(name)
    if found is not None:
        return found

    def unknown(*args: Any) -> Any:
        raise KeyError(name)
    return unknown


# -- conditions, paths ---------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)  # bounded: keys include identifiers from every message
def _uuid(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


def _condition(spec: Any, lookup: Callable[[int], Any]) -> bool:
    """`when: {f|c: n, is: valued|empty|<value>|[values]}`; absent: true."""
    if not spec:
        return True
    n = spec.get("f", spec.get("c"))
    found = lookup(n)
    value = _first_text(found)
    wanted = spec.get("is", "valued")
    if wanted == "valued":
        return bool(value) and value != NULL
    if wanted == "empty":
        return not value or value == NULL
    if isinstance(wanted, list):
        return value in wanted
    return value == str(wanted)


def _first_text(found: Any) -> str:
    while isinstance(found, list):
        if not found:
            return ""
        found = found[0]
    return found or ""


def _comp(comps: Comps, n: int) -> str:
    return comps[n - 1][0] if n <= len(comps) and comps[n - 1] else ""


_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d*)\])?$")


@functools.cache  # paths come from the mapping files: a bounded set
def _steps(path: str) -> tuple[tuple[str, int | str | None], ...]:
    """`a.b[0].c[]` -> ((a, None), (b, 0), (c, "+")); parsed once per path."""
    out = []
    for part in path.split("."):
        m = _STEP.match(part)
        if not m:
            raise ValueError(f"bad mapping path {path!r}")
        name, index = m[1], m[2]
        out.append((name, None if index is None and "[" not in part else (
            "+" if index == "" else int(index))))
    return tuple(out)


def _set(obj: dict[str, Any], path: str, value: Any, with_: dict[str, Any] | None = None
         ) -> None:
    """Set `value` at a path: `a.b` (object), `a[]` (append), `a[0]` (that element)."""
    steps = _steps(path)
    if len(steps) == 1 and steps[0][1] is None:  # `name`: the commonest rule path
        obj[path] = value
        return
    cur: Any = obj
    for i, (name, index) in enumerate(steps):
        last = i == len(steps) - 1
        if index is None:
            if last:
                cur[name] = value
                return
            cur = cur.setdefault(name, {})
            continue
        items = cur.setdefault(name, [])
        if index == "+":
            if last:
                if with_ and isinstance(value, dict):
                    value = {**copy_json(with_), **value}
                items.append(value)
                return
            items.append({})
            cur = items[-1]
            if with_:
                for k, v in with_.items():
                    _set(cur, k, copy_json(v))
            continue
        while len(items) <= index:
            items.append({} if not last else None)
        if last:
            items[index] = value
            return
        if items[index] is None:
            items[index] = {}
        cur = items[index]


def copy_json(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars): cheaper than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def _has_ref(obj: dict[str, Any], path: str, ref: dict[str, str]) -> bool:
    name = _steps(path)[0][0]
    found = obj.get(name)
    return found == ref or (isinstance(found, list) and ref in found)


def _top(path: str) -> str:
    return _steps(path)[0][0]


_EMPTY = (None, {}, [], "")


def _compact(value: Any) -> Any:
    """Drop empty objects/lists and None placeholders left by indexed paths."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                v = _compact(v)
            if v not in _EMPTY:
                out[k] = v
        return out
    if isinstance(value, list):
        items = [_compact(v) if isinstance(v, (dict, list)) else v for v in value]
        return [v for v in items if v not in _EMPTY]
    return value


def _identifier_identity(type: str, body: dict[str, Any]) -> Identity | None:
    for ident in body.get("identifier") or ():
        if ident.get("value"):
            return Identity(type, ident.get("system"), ident["value"])
    return None


def _content_id(type: str, body: dict[str, Any]) -> str:
    """A deterministic id for resources with no business identifier (Location from PL)."""
    from fhirpm.fhir import jsonio

    digest = hashlib.sha256(type.encode() + jsonio.dumps(body, sort_keys=True))
    return "v2-" + digest.hexdigest()[:40]


# -- primitive conversions (the leaves of every datatype) ---------------------------------

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?\d*([+-]\d{4})?$")


def v2_date(text: str) -> str | None:
    m = _DTM.match(text.strip())
    if not m:
        return None
    return "-".join(p for p in (m[1], m[2], m[3]) if p)


def v2_datetime(text: str, default_tz: str = "") -> str | None:
    """DTM -> FHIR dateTime. A time needs seconds and a zone in FHIR: seconds are padded;
    a time without zone gets the sender's zone (an offset like `+01:00` or an IANA name like
    `Europe/Berlin`, DST-aware), or with no zone configured falls back to its date."""
    m = _DTM.match(text.strip())
    if not m:
        return None
    date = "-".join(p for p in (m[1], m[2], m[3]) if p)
    if not m[4] or not m[3]:
        return date
    wall = f"{date}T{m[4]}:{m[5] or '00'}:{m[6] or '00'}{m[7] or ''}"
    if m[8]:
        return f"{wall}{m[8][:3]}:{m[8][3:]}"
    tz = _zone_offset(wall, default_tz) if default_tz else ""
    return f"{wall}{tz}" if tz else date


def v2_instant(text: str, default_tz: str = "") -> str | None:
    """DTM -> FHIR instant (a time and a zone are required; UTC when none is configured)."""
    value = v2_datetime(text, default_tz or "UTC")
    return value if value and "T" in value else None


def _zone_offset(wall: str, zone: str) -> str:
    if zone[:1] in "+-" or zone == "Z":
        return zone
    from datetime import datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        offset = datetime.fromisoformat(wall[:19]).replace(tzinfo=ZoneInfo(zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return ""
    if offset is None or not offset:
        return "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _positive(text: str) -> int | None:
    value = _decimal(text)
    return int(value) if value is not None and value == int(value) and value > 0 else None


PRIMITIVES: dict[str, Callable[[_Run, str, str | None], Any]] = {
    "string": lambda run, t, v: t,
    "code": lambda run, t, v: run.code(t, v),
    "Coding": lambda run, t, v: run.coding(t, v) if v else {"code": t},
    "CodeableConcept": lambda run, t, v: (
        {"coding": [c]} if v and (c := run.coding(t, v)) else ({"text": t} if not v else None)),
    "date": lambda run, t, v: v2_date(t),
    "dateTime": lambda run, t, v: v2_datetime(t, run.options.timezone),
    "instant": lambda run, t, v: v2_instant(t, run.options.timezone),
    "decimal": lambda run, t, v: _decimal(t),
    "positiveInt": lambda run, t, v: _positive(t),
    "boolean": lambda run, t, v: {"Y": True, "N": False}.get(t.upper()),
    "system": lambda run, t, v: run.system(t),
    "id": lambda run, t, v: re.sub(r"[^A-Za-z0-9\-.]", "-", t)[:64],
}


# -- functions: the few mappings that combine several sources -----------------------------


def _authority(run: _Run, comps: Comps, rule: dict[str, Any]) -> str | None:
    """HD -> a system URI: universal id by its type (ISO: urn:oid), else the namespace via the
    sender's authority table, else a URI we mint (marked as ours)."""
    ns, uid, kind = _comp(comps, 1), _comp(comps, 2), _comp(comps, 3).upper()
    if uid and kind == "ISO":
        return f"urn:oid:{uid}"
    if uid and kind in ("URI", "URL"):
        return uid
    if uid and kind == "UUID":
        return f"urn:uuid:{uid}"
    name = ns or uid
    if not name:
        return None
    return run.options.authorities.get(name) or f"{OURS}:authority:{quote(name, safe='')}"


def _authority_ei(run: _Run, comps: Comps, rule: dict[str, Any]) -> str | None:
    """EI.2-4 (namespace, universal id, type) read as an HD."""
    return _authority(run, comps[1:4], rule) if len(comps) > 1 else None


def _duration_minutes(run: _Run, comps: Comps, rule: dict[str, Any]) -> int | None:
    """SCH-9 with SCH-10 units (or AIS-7/8): a positive whole number of minutes."""
    amount = _decimal(_comp(comps, 1))
    if amount is None:
        return None
    unit = run.segment.value(rule["unit_f"]) if "unit_f" in rule else rule.get("unit", "")
    unit = (unit or "min").lower()
    factor = {"s": Decimal(1) / 60, "sec": Decimal(1) / 60, "min": 1, "m": 1, "h": 60,
              "hr": 60, "d": 1440}.get(unit, 1)
    minutes = int(amount * factor)
    return minutes if minutes > 0 else None


def _money(run: _Run, comps: Comps, rule: dict[str, Any]) -> dict[str, Any] | None:
    """MO/CP: amount (&currency) -> Money."""
    amount = _decimal(_comp(comps, 1))
    if amount is None:
        return None
    out: dict[str, Any] = {"value": amount}
    # CP.1 is an MO in subcomponents (100&USD); a bare MO field has components (100^USD)
    currency = comps[0][1] if len(comps[0]) > 1 else _comp(comps, 2)
    if currency:
        out["currency"] = currency
    return out


def _member_identifier(run: _Run, comps: Comps, rule: dict[str, Any]) -> dict[str, Any] | None:
    """IN1-49 (insured's id) or IN1-36 (policy number), scoped by the payer (IN1-3), as a
    Coverage.identifier of type MB: the identity conditional updates of Coverage use."""
    value = _comp(comps, 1)
    if not value or value == NULL:
        return None
    payer = run.segment.field(3)
    system = None
    if payer:
        first = payer[0]
        system = _authority(run, [[s] for s in first[3]] if len(first) > 3 else [], rule)
        if system is None and first[0][0]:
            system = f"{OURS}:payer:{quote(first[0][0], safe='')}"
    out: dict[str, Any] = {"type": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB",
        "display": "Member Number"}]}, "value": value}
    if system:
        out["system"] = system
    return out


FUNCTIONS: dict[str, Callable[[_Run, Comps, dict[str, Any]], Any]] = {
    "authority": _authority,
    "authority_ei": _authority_ei,
    "member_identifier": _member_identifier,
    "duration_minutes": _duration_minutes,
    "money": _money,
}
