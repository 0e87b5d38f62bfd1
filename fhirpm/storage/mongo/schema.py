"""MongoDB layout: collection names, stored document shapes and the indexes behind them.

Collections (one database, named in the URL path, default `fhirpm`):

- one collection per resource type, named exactly like the type (`Patient`): the current
  version of each resource, `{_id: id, v, lu, m, seq, c, lv, del, k, body, ix}` (`c`: the
  seq that created it, the order of unsorted searches; `lv`: the seq since which it is live,
  for pinned search snapshots; `k`: it holds unique keys). `body` is the served
  JSON as BSON binary (never re-encoded: decimals such as `72.50` survive byte for byte);
  `ix` holds the search index values as typed arrays, one per value kind
  (`ix.tok: [{p: "identifier", s: system, c: code}, ...]`), so one generic compound index
  per kind serves every parameter of that kind, custom SearchParameters included. Local
  references also carry `k: "param|Type/id"`, the join key of `_has` and `_revinclude`.
- `history`: every version ever committed, immutable, `{_id: seq, t, i, v, lu, m, body}`;
  `_id` is the change-log sequence number (see `unit` for why it is commit ordered).
- `unique_keys` (`{_id: key, t, i}`): conditional-create match keys, claimed atomically.
- `counters` (`{_id: "seq", n}`), `cursors` (`{_id: consumer, seq}`), `documents`
  (`{c, k, rev, body, expires_at, exp}`: small compare-and-swap records, TTL on `exp`).

Why a collection per type rather than one `resources` collection keyed by (type, id): every
FHIR read and search names its type, so per-type collections are the natural partition;
each type can be sharded on its own terms (big clinical types such as Observation hashed on
`_id`, small reference types such as Organization left unsharded where `$lookup` for
chained search stays on one shard), and a type's indexes only cover that type's documents.
See docs/deploy.md for the shard keys.

Names: lower-case internal collections cannot clash with resource types, which start with
an upper-case letter; `collection_for` refuses anything else, so a type never becomes an
arbitrary namespace. Nothing here knows FHIR beyond "type" and "id".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bson import Binary

from fhirpm.search.values import (
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from fhirpm.storage.port import ResourceVersion

HISTORY = "history"
UNIQUE_KEYS = "unique_keys"
COUNTERS = "counters"
CURSORS = "cursors"
DOCUMENTS = "documents"
SEQ_COUNTER = "seq"

_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")


def is_type_name(type: object) -> bool:
    return isinstance(type, str) and bool(_TYPE_NAME.match(type))


def check_type_name(type: object) -> str:
    """The collection name for a resource type; anything not shaped like one is refused."""
    if not is_type_name(type):
        raise ValueError(f"not a resource type name: {type!r}")
    return type  # type: ignore[return-value]


def check_text(name: str, value: object) -> str:
    """Ids and keys reach Mongo only as string values (never as documents or operators)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return value


# -- index values -----------------------------------------------------------------------

# kind -> (value class, fields as (attribute, stored name))
KINDS: dict[str, tuple[type, tuple[tuple[str, str], ...]]] = {
    "str": (StringValue, (("norm", "n"), ("raw", "r"))),
    "tok": (TokenValue, (("system", "s"), ("code", "c"), ("text", "x"))),
    "ref": (ReferenceValue, (("type", "t"), ("id", "i"), ("url", "u"), ("version", "v"))),
    "date": (DateValue, (("lo", "lo"), ("hi", "hi"))),
    "num": (NumberValue, (("value", "v"), ("lo", "lo"), ("hi", "hi"))),
    "qty": (QuantityValue, (("value", "v"), ("lo", "lo"), ("hi", "hi"), ("system", "s"),
                            ("code", "c"), ("unit", "u"))),
    "uri": (UriValue, (("uri", "u"),)),
}
_KIND_OF = {cls: kind for kind, (cls, _) in KINDS.items()}


def index_document(entries: Sequence[IndexEntry]) -> dict[str, list[dict[str, Any]]]:
    """IndexEntries as `{kind: [{p: param, field: value, ...}]}`; None fields are left out
    (a query for `field: null` matches a missing field)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        value = entry.value
        kind = _KIND_OF.get(type(value))
        if kind is None:
            raise TypeError(f"unknown index value {type(value).__name__}")
        item: dict[str, Any] = {"p": entry.param}
        for attribute, stored in KINDS[kind][1]:
            field = getattr(value, attribute)
            if field is not None:
                item[stored] = field
        if isinstance(value, ReferenceValue):
            _reference_extras(entry.param, value, item)
        out.setdefault(kind, []).append(item)
    return out


def local_key(param: str, type: str, id: str) -> str:
    """`k` of a local reference: one indexed string for "param points at Type/id", which
    `_has` and `_revinclude` join on (ids and type names never contain `|` or `/`)."""
    return f"{param}|{type}/{id}"


def _reference_extras(param: str, value: ReferenceValue, item: dict[str, Any]) -> None:
    if value.url is None and value.type is not None and value.id is not None:
        item["k"] = local_key(param, value.type, value.id)
    if value.identifier is not None:
        item["ih"] = True
        if value.identifier.system is not None:
            item["is"] = value.identifier.system
        if value.identifier.code is not None:
            item["iv"] = value.identifier.code


def index_entries(ix: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[IndexEntry]:
    """The inverse of `index_document` (tests, diagnostics)."""
    entries: list[IndexEntry] = []
    for kind, items in ix.items():
        cls, fields = KINDS[kind]
        for item in items:
            kwargs = {attribute: item.get(stored) for attribute, stored in fields}
            if cls is ReferenceValue and item.get("ih"):
                kwargs["identifier"] = TokenValue(item.get("is"), item.get("iv"))
            entries.append(IndexEntry(item["p"], cls(**kwargs)))
    return entries


# -- stored documents <-> ResourceVersion ---------------------------------------------------

def current_fields(v: ResourceVersion, entries: Sequence[IndexEntry], *,
                   has_keys: bool) -> dict[str, Any]:
    """A current-version document without `_id` and `c` (the creation seq, kept across
    versions) and with `seq` still 0: the unit's commit sets both."""
    return {"v": v.version, "lu": v.last_updated, "m": v.method, "seq": 0, "del": v.deleted,
            "body": Binary(v.body), "k": has_keys,
            "ix": {} if v.deleted else index_document(entries)}


def history_document(v: ResourceVersion, seq: int) -> dict[str, Any]:
    return {"_id": seq, "t": v.type, "i": v.id, "v": v.version, "lu": v.last_updated,
            "m": v.method, "body": Binary(v.body)}


def version_from_current(type: str, doc: Mapping[str, Any]) -> ResourceVersion:
    return ResourceVersion(type=type, id=doc["_id"], version=doc["v"], last_updated=doc["lu"],
                           method=doc["m"], body=bytes(doc["body"]), seq=doc.get("seq") or 0)


def version_from_history(doc: Mapping[str, Any]) -> ResourceVersion:
    return ResourceVersion(type=doc["t"], id=doc["i"], version=doc["v"], last_updated=doc["lu"],
                           method=doc["m"], body=bytes(doc["body"]), seq=doc["_id"])


CURRENT_FIELDS = {"_id": 1, "v": 1, "lu": 1, "m": 1, "seq": 1, "body": 1}


# -- indexes (created at start-up and before a type's first write; idempotent) ------------

def _ix(kind: str, *fields: str) -> list[tuple[str, int]]:
    # Every field lies inside the same array (`ix.<kind>`): a compound multikey index may
    # hold at most one array-valued path, and this is one.
    return [(f"ix.{kind}.p", 1), *((f"ix.{kind}.{f}", 1) for f in fields)]


RESOURCE_INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    ([("del", 1), ("c", 1)], {"name": "live"}),
    ([("lu", 1)], {"name": "last_updated"}),
    (_ix("str", "n"), {"name": "ix_str"}),
    (_ix("str", "r"), {"name": "ix_str_raw"}),
    (_ix("tok", "c", "s"), {"name": "ix_tok_code"}),
    (_ix("tok", "s"), {"name": "ix_tok_system"}),
    (_ix("ref", "i", "t"), {"name": "ix_ref_target"}),
    (_ix("ref", "u"), {"name": "ix_ref_url"}),
    (_ix("ref", "iv", "is"), {"name": "ix_ref_identifier"}),
    ([("ix.ref.k", 1)], {"name": "ix_ref_key"}),
    (_ix("date", "lo"), {"name": "ix_date_lo"}),
    (_ix("date", "hi"), {"name": "ix_date_hi"}),
    (_ix("num", "v"), {"name": "ix_num"}),
    (_ix("qty", "v"), {"name": "ix_qty"}),
    (_ix("uri", "u"), {"name": "ix_uri"}),
]

SYSTEM_INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    HISTORY: [
        ([("t", 1), ("i", 1), ("v", 1)], {"name": "version", "unique": True}),
        ([("t", 1), ("_id", 1)], {"name": "type_seq"}),
        ([("lu", 1)], {"name": "last_updated"}),
    ],
    UNIQUE_KEYS: [([("t", 1), ("i", 1)], {"name": "holder"})],
    DOCUMENTS: [
        ([("c", 1), ("k", 1)], {"name": "key", "unique": True}),
        ([("exp", 1)], {"name": "expiry", "expireAfterSeconds": 0}),
    ],
}
