"""A compiler of the FHIRPath subset that search-parameter expressions use, into Python
closures over plain JSON (dicts, lists, str, bool, Decimal).

Why not a general engine: extraction runs on every write, and a tree-walking interpreter
costs milliseconds per resource. Here each expression is parsed once, specialised to the
resource type it runs on (`AllergyIntolerance.code | Condition.code | ...` keeps only the
branch for the type at hand) and turned into nested closures.

Supported: paths, `|`, indexers, `where`, `select`, `exists`, `empty`, `not`, `first`,
`last`, `count`, `hasValue`, `extension(url)`, `as`/`is`/`ofType` (choice elements such as
`value.as(Quantity)` compile to the JSON name `valueQuantity`), `resolve()` (to a stub
`{"resourceType": T, "id": ...}` read from the reference text, or the contained resource for
`#id`, so `x.where(resolve() is Patient)` means "references in x to a Patient"), `=`, `!=`,
`~`, `!~`, `<`, `<=`, `>`, `>=`, `in`, `contains`, `and`, `or`, `xor`, `implies`, literals,
`%resource`, `%context`, `$this`. Anything else raises `FhirPathError` at compile time, so a
caller can skip (and report) an expression instead of indexing it wrongly.

This module knows nothing of search parameter types or index values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from fhirpm.fhir.types import RESOURCE_TYPES
from fhirpm.search.normalize import split_reference

Env = tuple[Any, Any]  # (%resource, %context)
Fn = Callable[[list[Any], Env], list[Any]]
Node = tuple[Any, ...]

_ABSTRACT_ROOTS = ("Resource", "DomainResource")


class FhirPathError(ValueError):
    """The expression is malformed or uses FHIRPath this compiler does not support."""


def _load_choices() -> dict[str, frozenset[str]]:
    table = resources.files("fhirpm.fhir").joinpath("tables/choice_elements.json")
    return {k: frozenset(v) for k, v in json.loads(table.read_bytes()).items()}


CHOICES = _load_choices()


# -- tokens ---------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    \s+ | //[^\n]* | /\*.*?\*/                                   # skipped
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<date>@[0-9T:.+\-Z]+)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]*`|'[^']*'))
  | (?P<special>\$(?:this|index|total))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
  | (?P<op>!=|!~|<=|>=|[=~<>|&+\-*/.()\[\],{}])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}


def _unescape(body: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m[1][1:], 16)) if m[1][0] == "u" and len(m[1]) == 5
                  else _ESCAPES.get(m[1], m[1]), body)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FhirPathError(f"unexpected {text[pos:pos + 10]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            continue
        value = m[kind]
        if kind == "ident" and value.startswith("`"):
            value = value[1:-1]
        out.append((kind, value))
    out.append(("end", ""))
    return out


# -- parser (Pratt) -------------------------------------------------------------------

_INFIX = {
    "implies": 10, "or": 20, "xor": 20, "and": 30, "in": 40, "contains": 40,
    "=": 50, "~": 50, "!=": 50, "!~": 50, "<": 60, ">": 60, "<=": 60, ">=": 60,
    "|": 70, "is": 80, "as": 80, "+": 90, "-": 90, "&": 90, "*": 100, "/": 100,
    "div": 100, "mod": 100, ".": 120, "[": 120,
}
_WORD_OPS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        if value is not None and tok[1] != value:
            raise FhirPathError(f"expected {value!r}, found {tok[1]!r}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek()[0] != "end":
            raise FhirPathError(f"unexpected {self.peek()[1]!r}")
        return node

    def _infix_power(self, tok: tuple[str, str]) -> int:
        kind, value = tok
        if kind == "op" or (kind == "ident" and value in _WORD_OPS):
            return _INFIX.get(value, 0)
        return 0

    def expression(self, rbp: int) -> Node:
        left = self.prefix()
        while True:
            power = self._infix_power(self.peek())
            if power <= rbp:
                return left
            _, op = self.take()
            if op == ".":
                left = self.invocation(left)
            elif op == "[":
                index = self.expression(0)
                self.take("]")
                left = ("index", left, index)
            elif op in ("is", "as"):
                left = ("type", op, left, self.type_name())
            else:
                left = ("op", op, left, self.expression(power))

    def prefix(self) -> Node:
        kind, value = self.take()
        if kind == "str":
            return ("lit", [_unescape(value[1:-1])])
        if kind == "num":
            return ("lit", [Decimal(value) if "." in value else int(value)])
        if kind == "date":
            return ("lit", [value[1:]])
        if kind == "var":
            return ("var", value[1:].strip("`'"))
        if kind == "special":
            if value != "$this":
                raise FhirPathError(f"{value} is not supported")
            return ("this",)
        if kind == "op" and value == "(":
            inner = self.expression(0)
            self.take(")")
            return inner
        if kind == "op" and value == "{":
            self.take("}")
            return ("lit", [])
        if kind == "op" and value in ("-", "+"):
            operand = self.expression(110)
            return ("neg", operand) if value == "-" else operand
        if kind == "ident":
            if value in ("true", "false"):
                return ("lit", [value == "true"])
            if self.peek()[1] == "(":
                return self.call(("focus",), value)
            return ("ident", value)
        raise FhirPathError(f"unexpected {value!r}")

    def invocation(self, base: Node) -> Node:
        kind, name = self.take()
        if kind != "ident":
            raise FhirPathError(f"expected a name after '.', found {name!r}")
        if self.peek()[1] == "(":
            return self.call(base, name)
        return ("member", base, name)

    def call(self, base: Node, name: str) -> Node:
        self.take("(")
        args: list[Node] = []
        if self.peek()[1] != ")":
            if name in ("as", "is", "ofType"):
                args.append(("typename", self.type_name()))
            else:
                args.append(self.expression(0))
                while self.peek()[1] == ",":
                    self.take(",")
                    args.append(self.expression(0))
        self.take(")")
        return ("fn", base, name, tuple(args))

    def type_name(self) -> str:
        kind, name = self.take()
        if kind != "ident":
            raise FhirPathError(f"expected a type name, found {name!r}")
        while self.peek()[1] == "." and self.tokens[self.pos + 1][0] == "ident":
            self.take(".")
            name = self.take()[1]  # FHIR.Quantity / System.String -> the last part
        return name


def parse(expression: str) -> Node:
    return _Parser(expression).parse()


def member_chains(expression: str, root_type: str) -> list[tuple[str, ...]] | None:
    """The element paths a plain expression selects on `root_type`.

    `Patient.gender | Person.gender` on Patient -> [("gender",)]; None when a branch for
    `root_type` is anything but a chain of child names (where(), as(), indexers, ...).
    """
    chains: list[tuple[str, ...]] = []
    branches = [parse(expression)]
    while branches:
        node = branches.pop()
        if node[0] == "op" and node[1] == "|":
            branches.extend((node[3], node[2]))
            continue
        names: list[str] = []
        while node[0] == "member":
            names.append(node[2])
            node = node[1]
        if node[0] != "ident":
            return None
        if _is_type_name(node[1]):
            if node[1] != root_type and node[1] not in _ABSTRACT_ROOTS:
                continue
        else:
            names.append(node[1])
        if names:
            chains.append(tuple(reversed(names)))
    return chains


# -- values ---------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, int | Decimal | float) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _equivalent(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return _equal(a, b)


def _truth(values: list[Any]) -> bool | None:
    """Singleton evaluation of a collection as a boolean (None = empty)."""
    if not values:
        return None
    if len(values) > 1:
        raise FhirPathError("a boolean was expected but the collection has several items")
    value = values[0]
    return value if isinstance(value, bool) else True


_PRIMITIVE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "decimal": _is_number,
}
for _name in ("string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid",
              "date", "dateTime", "instant", "time", "base64Binary"):
    _PRIMITIVE_CHECKS[_name] = lambda v: isinstance(v, str)
_PRIMITIVE_CHECKS.update({k[0].upper() + k[1:]: f for k, f in list(_PRIMITIVE_CHECKS.items())})


def _type_check(type_name: str) -> Callable[[Any], bool]:
    if type_name in RESOURCE_TYPES or type_name in _ABSTRACT_ROOTS:
        if type_name in _ABSTRACT_ROOTS:
            return lambda v: type(v) is dict and "resourceType" in v
        return lambda v: type(v) is dict and v.get("resourceType") == type_name
    check = _PRIMITIVE_CHECKS.get(type_name)
    if check is None:
        raise FhirPathError(f"type test on {type_name!r} needs a type model (not supported)")
    return check


# -- compiler -------------------------------------------------------------------------

def _empty(focus: list[Any], env: Env) -> list[Any]:
    return []


def _focus(focus: list[Any], env: Env) -> list[Any]:
    return focus


def _children(items: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if type(item) is dict:
            value = item.get(name)
            if value is not None:
                if type(value) is list:
                    out.extend(v for v in value if v is not None)
                else:
                    out.append(value)
    return out


def _is_type_name(name: str) -> bool:
    return name in RESOURCE_TYPES or name in _ABSTRACT_ROOTS


def _path(base: Fn, names: list[str]) -> Fn:
    """Plain child steps `names` from whatever `base` selects."""
    steps = tuple(names)

    def path(focus: list[Any], env: Env) -> list[Any]:
        items = base(focus, env)
        for name in steps:
            if not items:
                return items
            out: list[Any] = []
            for item in items:
                if type(item) is dict:
                    value = item.get(name)
                    if value is not None:
                        if type(value) is list:
                            out.extend(value)
                        else:
                            out.append(value)
            items = out
        return [v for v in items if v is not None] if None in items else items
    return path


def _member(base: Fn, name: str) -> Fn:
    suffixes = CHOICES.get(name)
    if suffixes is None and base is _focus:
        return lambda focus, env: _children(focus, name)
    if suffixes is None:
        def member(focus: list[Any], env: Env) -> list[Any]:
            return _children(base(focus, env), name)
        return member
    keys = frozenset(name + suffix for suffix in suffixes)

    def choice(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in base(focus, env):
            if type(item) is not dict:
                continue
            value = item.get(name)
            if value is None:
                # which of the typed keys (`effectiveDateTime`, ...) it has: one set
                # operation in C rather than a test of every key of the element
                hits = keys.intersection(item)
                if len(hits) == 1:
                    value = item[next(iter(hits))]
                elif hits:  # several (invalid): the first in the element's order
                    value = next(item[k] for k in item if k in hits)
            if value is not None:
                if type(value) is list:
                    out.extend(v for v in value if v is not None)
                else:
                    out.append(value)
        return out
    return choice


class _Compiler:
    def __init__(self, root_type: str | None) -> None:
        self.root_type = root_type

    def compile(self, node: Node) -> Fn:
        handler = getattr(self, "_" + node[0])
        return handler(node)

    # leaves

    def _lit(self, node: Node) -> Fn:
        values = node[1]
        return lambda focus, env: values

    def _focus(self, node: Node) -> Fn:
        return _focus

    def _this(self, node: Node) -> Fn:
        return _focus

    def _var(self, node: Node) -> Fn:
        name = node[1]
        if name == "resource" or name == "rootResource":
            return lambda focus, env: [env[0]]
        if name == "context":
            return lambda focus, env: [env[1]]
        if name == "ucum":
            return lambda focus, env: ["http://unitsofmeasure.org"]
        raise FhirPathError(f"%{name} is not supported")

    def _ident(self, node: Node) -> Fn:
        """A leading name: a type name that tests the focus (`Patient.name`), or a child."""
        name = node[1]
        if _is_type_name(name):
            if self.root_type is not None:
                known = name in _ABSTRACT_ROOTS or name == self.root_type
                return _focus if known else _empty
            check = _type_check(name)
            return lambda focus, env: [v for v in focus if check(v)]
        return _member(_focus, name)

    # navigation

    def _member(self, node: Node) -> Fn:
        # Fuse a run of plain (non-choice) steps `a.b.c` into one loop: fewer calls.
        names = [node[2]]
        base_node = node[1]
        while (names[-1] not in CHOICES and base_node[0] == "member"
               and base_node[2] not in CHOICES):
            names.append(base_node[2])
            base_node = base_node[1]
        if names[-1] not in CHOICES and base_node[0] == "ident" and base_node[1] not in CHOICES \
                and not _is_type_name(base_node[1]):
            names.append(base_node[1])
            base_node = ("focus",)
        base = self.compile(base_node)
        if base is _empty:
            return _empty
        names.reverse()
        if len(names) == 1:
            return _member(base, names[0])
        if names[0] in CHOICES:
            return _path(_member(base, names[0]), names[1:])
        return _path(base, names)

    def _index(self, node: Node) -> Fn:
        base = self.compile(node[1])
        index = self.compile(node[2])

        def at(focus: list[Any], env: Env) -> list[Any]:
            found = index(focus, env)
            items = base(focus, env)
            if len(found) != 1 or not isinstance(found[0], int) or found[0] < 0:
                return []
            return items[found[0]:found[0] + 1]
        return at

    def _choice_key(self, target: Node, type_name: str) -> Node | None:
        """`x.value` as Quantity -> `x.valueQuantity` (None when not a choice element)."""
        if target[0] not in ("member", "ident"):
            return None
        name = target[-1]
        suffixes = CHOICES.get(name)
        if suffixes is None:
            return None
        suffix = type_name[0].upper() + type_name[1:]
        if suffix not in suffixes:
            return ("lit", [])
        key = name + suffix
        return ("member", target[1], key) if target[0] == "member" else ("ident", key)

    def _type(self, node: Node) -> Fn:
        _, op, target, type_name = node
        if op == "as":
            return self._as(target, type_name)
        return self._is(target, type_name)

    def _as(self, target: Node, type_name: str) -> Fn:
        rewritten = self._choice_key(target, type_name)
        if rewritten is not None:
            return self.compile(rewritten)
        base = self.compile(target)
        if base is _empty:
            return _empty
        check = _type_check(type_name)
        return lambda focus, env: [v for v in base(focus, env) if check(v)]

    def _is(self, target: Node, type_name: str) -> Fn:
        rewritten = self._choice_key(target, type_name)
        if rewritten is not None:
            found = self.compile(rewritten)
            plain = self.compile(target)

            def is_choice(focus: list[Any], env: Env) -> list[Any]:
                if not plain(focus, env):
                    return []
                return [bool(found(focus, env))]
            return is_choice
        base = self.compile(target)
        check = _type_check(type_name)

        def is_type(focus: list[Any], env: Env) -> list[Any]:
            items = base(focus, env)
            if len(items) != 1:
                return []
            return [check(items[0])]
        return is_type

    # operators

    def _neg(self, node: Node) -> Fn:
        inner = self.compile(node[1])

        def negate(focus: list[Any], env: Env) -> list[Any]:
            return [-v for v in inner(focus, env) if _is_number(v)]
        return negate

    def _op(self, node: Node) -> Fn:
        _, op, left_node, right_node = node
        left = self.compile(left_node)
        right = self.compile(right_node)
        if op == "|":
            return _union(left, right)
        if op in ("and", "or", "xor", "implies"):
            return _logic(op, left, right)
        if op in ("=", "!=", "~", "!~"):
            return _equality(op, left, right)
        if op in ("<", "<=", ">", ">="):
            return _comparison(op, left, right)
        if op in ("in", "contains"):
            return _membership(op, left, right)
        raise FhirPathError(f"operator {op!r} is not supported")

    # functions

    def _fn(self, node: Node) -> Fn:
        _, base_node, name, args = node
        if name in ("as", "ofType", "is"):
            if len(args) != 1 or args[0][0] != "typename":
                raise FhirPathError(f"{name}() takes one type name")
            if name == "is":
                return self._is(base_node, args[0][1])
            return self._as(base_node, args[0][1])
        base = self.compile(base_node)
        build = getattr(self, "_fn_" + name, None)
        if build is None:
            raise FhirPathError(f"function {name}() is not supported")
        return build(base, [self.compile(a) for a in args], args)

    def _fn_where(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        (criterion,) = _arity("where", args, 1)
        if base is _empty:
            return _empty

        def where(focus: list[Any], env: Env) -> list[Any]:
            return [v for v in base(focus, env) if _truth(criterion([v], env)) is True]
        return where

    def _fn_select(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        (projection,) = _arity("select", args, 1)

        def select(focus: list[Any], env: Env) -> list[Any]:
            out: list[Any] = []
            for v in base(focus, env):
                out.extend(projection([v], env))
            return out
        return select

    def _fn_exists(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        if args:
            (criterion,) = _arity("exists", args, 1)
            return lambda focus, env: [any(_truth(criterion([v], env)) is True
                                           for v in base(focus, env))]
        return lambda focus, env: [bool(base(focus, env))]

    def _fn_empty(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("empty", args, 0)
        return lambda focus, env: [not base(focus, env)]

    def _fn_not(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("not", args, 0)

        def negate(focus: list[Any], env: Env) -> list[Any]:
            value = _truth(base(focus, env))
            return [] if value is None else [not value]
        return negate

    def _fn_first(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("first", args, 0)
        return lambda focus, env: base(focus, env)[:1]

    def _fn_last(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("last", args, 0)
        return lambda focus, env: base(focus, env)[-1:]

    def _fn_count(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("count", args, 0)
        return lambda focus, env: [len(base(focus, env))]

    def _fn_hasValue(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("hasValue", args, 0)

        def has_value(focus: list[Any], env: Env) -> list[Any]:
            items = base(focus, env)
            return [len(items) == 1 and not isinstance(items[0], dict | list)]
        return has_value

    def _fn_extension(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("extension", args, 1)
        if raw[0][0] != "lit" or len(raw[0][1]) != 1:
            raise FhirPathError("extension() takes a literal url")
        url = raw[0][1][0]

        def extension(focus: list[Any], env: Env) -> list[Any]:
            return [e for e in _children(base(focus, env), "extension")
                    if type(e) is dict and e.get("url") == url]
        return extension

    def _fn_resolve(self, base: Fn, args: list[Fn], raw: tuple) -> Fn:
        _arity("resolve", args, 0)

        def resolve(focus: list[Any], env: Env) -> list[Any]:
            out: list[Any] = []
            for item in base(focus, env):
                target = _resolve_one(item, env[0])
                if target is not None:
                    out.append(target)
            return out
        return resolve


def _arity(name: str, args: list[Fn], n: int) -> list[Fn]:
    if len(args) != n:
        raise FhirPathError(f"{name}() takes {n} argument(s), got {len(args)}")
    return args


def _resolve_one(item: Any, resource: Any) -> dict[str, Any] | None:
    """What a reference points at, as far as the reference itself tells."""
    if type(item) is dict:
        ref = item.get("reference")
        if not isinstance(ref, str):
            kind = item.get("type")
            return {"resourceType": kind} if isinstance(kind, str) and kind else None
    elif isinstance(item, str):
        ref = item
    else:
        return None
    if ref.startswith("#"):
        for inner in (resource or {}).get("contained") or ():
            if type(inner) is dict and inner.get("id") == ref[1:]:
                return inner
        return None
    type_name, id_, _, _ = split_reference(ref)
    return {"resourceType": type_name, "id": id_} if type_name else None


def _union(left: Fn, right: Fn) -> Fn:
    if left is _empty:
        return right
    if right is _empty:
        return left
    return lambda focus, env: left(focus, env) + right(focus, env)


def _logic(op: str, left: Fn, right: Fn) -> Fn:
    def combine(focus: list[Any], env: Env) -> list[Any]:
        a = _truth(left(focus, env))
        if op == "and" and a is False:
            return [False]
        if op == "or" and a is True:
            return [True]
        if op == "implies" and a is False:
            return [True]
        b = _truth(right(focus, env))
        if op == "and":
            result = False if b is False else (True if a and b else None)
        elif op == "or":
            result = True if b is True else (False if a is False and b is False else None)
        elif op == "xor":
            result = None if a is None or b is None else a != b
        else:  # implies, a is True or None
            result = True if b is True else (None if a is None or b is None else False)
        return [] if result is None else [result]
    return combine


def _equality(op: str, left: Fn, right: Fn) -> Fn:
    same = _equivalent if op in ("~", "!~") else _equal
    negate = op.startswith("!")

    def compare(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        if not a or not b:
            return [negate] if op in ("~", "!~") and not a and not b else []
        equal = len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return [equal != negate]
    return compare


def _comparison(op: str, left: Fn, right: Fn) -> Fn:
    def compare(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        if len(a) != 1 or len(b) != 1:
            return []
        x, y = a[0], b[0]
        if not ((_is_number(x) and _is_number(y)) or (isinstance(x, str)
                                                      and isinstance(y, str))):
            return []
        return [{"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]]
    return compare


def _membership(op: str, left: Fn, right: Fn) -> Fn:
    def member(focus: list[Any], env: Env) -> list[Any]:
        a, b = left(focus, env), right(focus, env)
        item, collection = (a, b) if op == "in" else (b, a)
        if not item:
            return []
        if len(item) != 1:
            return []
        return [any(_equal(item[0], v) for v in collection)]
    return member


# -- public API -----------------------------------------------------------------------

class Compiled:
    """A compiled expression: `compiled(resource)` -> the collection it selects.

    `compiled(node, resource)` evaluates relative to `node` (components of composite
    parameters), with `%resource` bound to `resource`.
    """

    __slots__ = ("expression", "fn", "root_keys", "root_type")

    def __init__(self, expression: str, fn: Fn, root_type: str | None,
                 root_keys: tuple[str, ...] | None = None) -> None:
        self.expression = expression
        self.fn = fn
        self.root_type = root_type
        # JSON keys of the root of which one must be present for a non-empty result (None:
        # unknown), so callers can skip an expression without running it
        self.root_keys = root_keys

    def __call__(self, context: Any, resource: Any = None) -> list[Any]:
        return self.fn([context], (context if resource is None else resource, context))

    @property
    def never_matches(self) -> bool:
        """True when the expression cannot select anything on `root_type`."""
        return self.fn is _empty


@lru_cache(maxsize=8192)
def compile(expression: str, root_type: str | None = None) -> Compiled:
    """Compile `expression` once; with `root_type`, branches for other types are dropped.

    Raises FhirPathError for syntax or features this compiler does not support.
    """
    tree = parse(expression)
    keys = _root_keys(tree, root_type)
    return Compiled(expression, _Compiler(root_type).compile(tree), root_type,
                    None if keys is None else tuple(sorted(keys)))


_EMPTY_IN_EMPTY_OUT = {"where", "select", "first", "last", "extension", "resolve", "as",
                       "ofType"}


def _root_keys(node: Node, root_type: str | None) -> set[str] | None:
    """Which top-level keys the expression reads first; None when it may select something
    without any of them (a literal, `exists()`, boolean logic, the root itself)."""
    kind = node[0]
    if kind == "op" and node[1] == "|":
        left, right = _root_keys(node[2], root_type), _root_keys(node[3], root_type)
        return None if left is None or right is None else left | right
    if kind == "type" and node[1] == "as":
        return _choice_root_key(node[2], node[3], root_type)
    if kind == "fn" and node[2] in _EMPTY_IN_EMPTY_OUT:
        if node[2] in ("as", "ofType") and node[3] and node[3][0][0] == "typename":
            return _choice_root_key(node[1], node[3][0][1], root_type)
        return _root_keys(node[1], root_type)
    if kind == "index":
        return _root_keys(node[1], root_type)
    if kind == "member":
        base = node[1]
        if base[0] == "ident" and _is_type_name(base[1]):
            if root_type and base[1] != root_type and base[1] not in _ABSTRACT_ROOTS:
                return set()  # a branch for another type: selects nothing
            return _json_keys(node[2])
        return _root_keys(base, root_type)
    if kind == "ident" and not _is_type_name(node[1]):
        return _json_keys(node[1])
    return None


def _json_keys(name: str) -> set[str]:
    """The JSON keys an element name can take: itself, or a choice's typed names."""
    return {name, *(name + suffix for suffix in CHOICES.get(name, ()))}


def _choice_root_key(target: Node, type_name: str, root_type: str | None) -> set[str] | None:
    """`Observation.value as Quantity` reads the key `valueQuantity` first."""
    if (target[0] == "member" and target[1][0] == "ident" and _is_type_name(target[1][1])
            and target[2] in CHOICES):
        if root_type and target[1][1] != root_type and target[1][1] not in _ABSTRACT_ROOTS:
            return set()
        return {target[2] + type_name[0].upper() + type_name[1:]}
    return _root_keys(target, root_type)
