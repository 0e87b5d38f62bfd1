"""FHIRPath Patch (R4 fhirpatch.html): a `Parameters` resource of operations applied to a
resource's JSON.

Operations: add (path, name, value), insert (path, index, value), delete (path),
replace (path, value), move (path, source, destination). Paths are located with
`fhirpath_locate`. Values are a `value[x]` part, or `part`s building an anonymous
(backbone) element.

Cardinality: JSON needs to know whether an added element repeats (`identifier` is a list,
`birthDate` is not). Rather than carry a table of every element's cardinality, an added
element is written as a single value and fhirkit-rs, which knows the exact R4 definitions,
is asked whether that shape is wrong ("expected an array"); such elements are then wrapped.
Anything else it reports is left to the validation every write does.
"""

from __future__ import annotations

from typing import Any

import fhirkit

from fhirpm.errors import Category, FhirError
from fhirpm.fhir import jsonio
from fhirpm.fhir.fhirpath_locate import Node, locate

OPERATIONS = ("add", "insert", "delete", "replace", "move")
_WRONG_SHAPE = "expected an array"


def _bad(message: str, where: str) -> FhirError:
    return FhirError(Category.INVALID, message, expression=(where,))


def _unprocessable(message: str, where: str) -> FhirError:
    return FhirError(Category.UNPROCESSABLE, message, expression=(where,))


def apply(resource: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`resource` with the FHIRPath Patch `patch` applied (changed in place, returned)."""
    try:
        return _apply(resource, patch)
    except RecursionError:
        raise _bad("The patch is nested too deeply", "Parameters") from None


def _apply(resource: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    added: set[str] = set()
    for n, operation in enumerate(_operations(patch)):
        where = f"Parameters.parameter[{n}]"
        parts = _parts(operation, where)
        kind = parts.get("type")
        if kind not in OPERATIONS:
            raise _bad(f"operation type must be one of {', '.join(OPERATIONS)}, not {kind!r}",
                       f"{where}.part")
        path = parts.get("path")
        if not isinstance(path, str) or not path:
            raise _bad(f"a {kind} operation needs a path", f"{where}.part")
        _APPLY[kind](resource, path, parts, where, added)
    _fix_cardinality(resource, added)
    return resource


def _operations(patch: dict[str, Any]) -> list[dict[str, Any]]:
    params = patch.get("parameter", [])
    if not isinstance(params, list):
        raise _bad("parameter must be a list", "Parameters.parameter")
    for n, p in enumerate(params):
        if not isinstance(p, dict) or p.get("name") != "operation":
            raise _bad("every parameter of a FHIRPath Patch is named 'operation'",
                       f"Parameters.parameter[{n}].name")
    return params


def _parts(operation: dict[str, Any], where: str) -> dict[str, Any]:
    """An operation's parts by name, each turned into its JSON value."""
    out: dict[str, Any] = {}
    for n, part in enumerate(operation.get("part") or []):
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise _bad("each part needs a name", f"{where}.part[{n}]")
        out[part["name"]] = _value(part, f"{where}.part[{n}]")
    return out


def _value(part: dict[str, Any], where: str) -> Any:
    """A part's `value[x]`, or the element its own parts build (anonymous types)."""
    values = [k for k in part if k.startswith("value")]
    if len(values) > 1:
        raise _bad("a part has at most one value[x]", where)
    if values:
        return part[values[0]]
    if "resource" in part:
        return part["resource"]
    if "part" in part:
        return {p["name"]: _value(p, f"{where}.part[{n}]")
                for n, p in enumerate(part["part"])
                if isinstance(p, dict) and isinstance(p.get("name"), str)}
    return None


def _one(resource: dict[str, Any], path: str, kind: str, where: str) -> Node:
    found = locate(resource, path)
    if not found:
        raise _unprocessable(f"No content found at {path} when {kind}", where)
    if len(found) > 1:
        raise _unprocessable(f"{path} matches {len(found)} elements; {kind} needs exactly one",
                             where)
    return found[0]


def _needs(parts: dict[str, Any], name: str, kind: str, where: str) -> Any:
    if parts.get(name) is None:
        raise _bad(f"a {kind} operation needs a {name}", f"{where}.part")
    return parts[name]


def _add(resource: dict[str, Any], path: str, parts: dict[str, Any], where: str,
         added: set[str]) -> None:
    name = _needs(parts, "name", "add", where)
    value = _needs(parts, "value", "add", where)
    node = _one(resource, path, "adding", where)
    if not isinstance(node.value, dict):
        raise _unprocessable(f"{path} is a primitive; add works on elements with children",
                             where)
    current = node.value.get(name)
    if isinstance(current, list):
        current.append(value)
    elif current is None:
        node.value[name] = value
        added.add(f"{node.path}.{name}")
    else:
        raise _unprocessable(f"{node.path}.{name} already has a value; use replace", where)


def _list_at(resource: dict[str, Any], path: str, kind: str,
             where: str) -> tuple[list[Any], list[Node]]:
    """The list a path names (`Patient.identifier`): every item must share one holder."""
    found = locate(resource, path)
    holders = {(id(n.holder), n.key) for n in found}
    if len(holders) != 1 or any(n.index is None for n in found):
        raise _unprocessable(f"{path} does not name one list of elements to {kind}", where)
    first = found[0]
    return first.holder[first.key], found  # type: ignore[index]


def _index(parts: dict[str, Any], name: str, kind: str, size: int, where: str) -> int:
    value = _needs(parts, name, kind, where)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= size:
        raise _unprocessable(f"{name} {value!r} is outside 0..{size}", where)
    return value


def _insert(resource: dict[str, Any], path: str, parts: dict[str, Any], where: str,
            added: set[str]) -> None:
    value = _needs(parts, "value", "insert", where)
    items, _ = _list_at(resource, path, "insert into", where)
    items.insert(_index(parts, "index", "insert", len(items), where), value)


def _move(resource: dict[str, Any], path: str, parts: dict[str, Any], where: str,
          added: set[str]) -> None:
    items, _ = _list_at(resource, path, "move within", where)
    source = _index(parts, "source", "move", len(items) - 1, where)
    destination = _index(parts, "destination", "move", len(items) - 1, where)
    items.insert(destination, items.pop(source))


def _replace(resource: dict[str, Any], path: str, parts: dict[str, Any], where: str,
             added: set[str]) -> None:
    value = _needs(parts, "value", "replace", where)
    node = _one(resource, path, "replacing", where)
    _store(node, value)


def _delete(resource: dict[str, Any], path: str, parts: dict[str, Any], where: str,
            added: set[str]) -> None:
    found = locate(resource, path)
    if not found:
        return  # deleting what is not there leaves the resource as it is
    if len(found) > 1:
        raise _unprocessable(f"{path} matches {len(found)} elements; delete needs one", where)
    node = found[0]
    if node.holder is None:
        raise _unprocessable("the resource itself cannot be deleted by a patch", where)
    _remove(node)


def _store(node: Node, value: Any) -> None:
    if node.holder is None:
        raise _bad("the resource itself cannot be replaced by a patch", node.path)
    if node.index is None:
        node.holder[node.key] = value  # type: ignore[index]
    else:
        node.holder[node.key][node.index] = value  # type: ignore[index]


def _remove(node: Node) -> None:
    """Remove a node (and its primitive extensions), then any object left empty above it."""
    holder, key = node.holder, node.key
    assert holder is not None and key is not None
    if node.index is None:
        holder.pop(key, None)
        holder.pop(f"_{key}", None)
    else:
        del holder[key][node.index]
        extras = holder.get(f"_{key}")
        if isinstance(extras, list) and node.index < len(extras):
            del extras[node.index]
        if not holder[key]:
            holder.pop(key)
            holder.pop(f"_{key}", None)
    parent = node.parent
    if not holder and parent is not None and parent.holder is not None:
        _remove(parent)


def _fix_cardinality(resource: dict[str, Any], added: set[str]) -> None:
    """Wrap added single values whose element repeats (see the module docstring)."""
    for _ in range(4):  # nested additions surface one level per pass
        wrong = {i.path for i in fhirkit.validate(jsonio.dumps(resource))
                 if i.message.startswith(_WRONG_SHAPE) and i.path in added}
        if not wrong:
            return
        for path in wrong:
            for node in locate(resource, path):
                if not isinstance(node.value, list):
                    _store(node, [node.value])


_APPLY = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace,
          "move": _move}
