"""A location-tracking subset of FHIRPath, for FHIRPath Patch.

A FHIRPath Patch names the element to change with a FHIRPath expression. Changing it needs
to know where each result sits in the JSON tree (which object holds it, under which key,
at which list position), which general FHIRPath engines do not expose. This evaluator
returns such locations for the subset patch paths use, and refuses anything else with a
400 that names the unsupported part:

    Patient.identifier                 children; `value` also finds `valueQuantity` (choices)
    Patient.contact[0]                 indexers
    .where(use = 'official' and ...)   filters: = != and or, exists() empty() not()
    .first() .last()                   positions
    .extension('http://...')           extensions by url
    $this                              the focus inside where()

It knows nothing of patches or of the store: `locate(resource, expression)` -> `Node`s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from fhirpm.errors import Category, FhirError
from fhirpm.fhir.shaping import choice_suffixes

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<id>\$this|[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)|(?P<op>!=|[.\[\](),=]))")
_BOOLEAN_FUNCTIONS = ("exists", "empty", "not")


@dataclass(frozen=True, slots=True)
class Node:
    """One result: its value and where it sits (`holder[key]`, or `holder[key][index]`)."""

    value: Any
    holder: dict[str, Any] | None
    key: str | None
    index: int | None
    path: str
    parent: Node | None = None


def unsupported(expression: str, detail: str) -> FhirError:
    return FhirError(Category.NOT_SUPPORTED,
                     f"FHIRPath {expression!r}: {detail} (this server supports paths with "
                     "children, [n], where(), first(), last(), extension(url))",
                     expression=(expression,))


# -- parsing --------------------------------------------------------------------------


def _tokens(expression: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = expression.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise unsupported(expression, f"cannot read it from {text[pos:]!r}")
        kind = m.lastgroup or "op"
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over tokens into tuples: ("path", steps) and boolean trees."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokens(expression)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise unsupported(self.expression, f"expected {value or 'more'} at token "
                              f"{self.pos + 1}")
        self.pos += 1
        return token

    def whole_path(self) -> list[tuple]:
        steps = self.path()
        if self.peek() is not None:
            raise unsupported(self.expression, f"unexpected {self.peek()[1]!r}")
        return steps

    def path(self) -> list[tuple]:
        steps = [self.step()]
        while (token := self.peek()) is not None and token[1] in (".", "["):
            self.take()
            if token[1] == ".":
                steps.append(self.step())
            else:
                kind, number = self.take()
                if kind != "num" or not number.isdigit():
                    raise unsupported(self.expression, "an indexer takes a whole number")
                self.take("]")
                steps.append(("index", int(number)))
        return steps

    def step(self) -> tuple:
        kind, name = self.take()
        if kind != "id":
            raise unsupported(self.expression, f"expected a name, found {name!r}")
        name = name.strip("`")
        if self.peek() != ("op", "("):
            return ("name", name)
        self.take("(")
        args: list[Any] = []
        if self.peek() != ("op", ")"):
            args.append(self.boolean() if name == "where" else self.literal())
        self.take(")")
        return ("call", name, args)

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            return value[1:-1].replace("\\'", "'")
        if kind == "num":
            return Decimal(value)
        raise unsupported(self.expression, f"expected a literal, found {value!r}")

    def boolean(self) -> tuple:
        left = self.conjunction()
        while self.peek() == ("id", "or"):
            self.take()
            left = ("or", left, self.conjunction())
        return left

    def conjunction(self) -> tuple:
        left = self.comparison()
        while self.peek() == ("id", "and"):
            self.take()
            left = ("and", left, self.comparison())
        return left

    def comparison(self) -> tuple:
        if self.peek() == ("op", "("):
            self.take()
            inner = self.boolean()
            self.take(")")
            return inner
        left = self.operand()
        token = self.peek()
        if token is not None and token[1] in ("=", "!="):
            self.take()
            return (token[1], left, self.operand())
        return ("truthy", left)

    def operand(self) -> tuple:
        token = self.peek()
        if token is not None and token[0] in ("str", "num"):
            return ("literal", self.literal())
        if token in (("id", "true"), ("id", "false")):
            self.take()
            return ("literal", token[1] == "true")
        return ("path", self.path())


# -- evaluation -----------------------------------------------------------------------


def locate(resource: dict[str, Any], expression: str) -> list[Node]:
    """The nodes `expression` selects in `resource`, in document order."""
    try:
        steps = _Parser(expression).whole_path()
        root = Node(resource, None, None, None, resource.get("resourceType", "Resource"))
        if steps[0] == ("name", root.path):
            steps = steps[1:]
        return _walk([root], steps, expression)
    except RecursionError:
        raise unsupported(expression, "it is nested too deeply") from None


def _walk(nodes: list[Node], steps: list[tuple], expression: str) -> list[Node]:
    for step in steps:
        if step[0] == "name":
            nodes = [c for n in nodes for c in _children(n, step[1])]
        elif step[0] == "index":
            nodes = nodes[step[1]:step[1] + 1]
        else:
            nodes = _call(nodes, step[1], step[2], expression)
    return nodes


def _children(node: Node, name: str) -> list[Node]:
    if name == "$this":
        return [node]
    value = node.value
    if not isinstance(value, dict):
        return []
    key = name if name in value else _choice_key(value, name)
    if key is None:
        return []
    child = value[key]
    path = f"{node.path}.{key}"
    if isinstance(child, list):
        return [Node(item, value, key, i, f"{path}[{i}]", node) for i, item in enumerate(child)]
    return [Node(child, value, key, None, path, node)]


def _choice_key(value: dict[str, Any], name: str) -> str | None:
    suffixes = choice_suffixes().get(name, ())
    for key in value:
        if key.startswith(name) and key[len(name):] in suffixes:
            return key
    return None


def _call(nodes: list[Node], name: str, args: list[Any], expression: str) -> list[Node]:
    if name == "where":
        return [n for n in nodes if _true(_evaluate(n, args[0], expression))]
    if name == "first":
        return nodes[:1]
    if name == "last":
        return nodes[-1:]
    if name == "extension" and args and isinstance(args[0], str):
        return [c for n in nodes for c in _children(n, "extension")
                if isinstance(c.value, dict) and c.value.get("url") == args[0]]
    if name in _BOOLEAN_FUNCTIONS:
        return [_constant(_boolean_function(name, nodes))]
    raise unsupported(expression, f"function {name}() is not supported here")


def _boolean_function(name: str, nodes: list[Node]) -> bool:
    if name == "exists":
        return bool(nodes)
    if name == "empty":
        return not nodes
    return not _true(nodes)  # not()


def _constant(value: Any) -> Node:
    return Node(value, None, None, None, "")


def _evaluate(focus: Node, tree: tuple, expression: str) -> list[Node]:
    kind = tree[0]
    if kind == "literal":
        return [_constant(tree[1])]
    if kind == "path":
        steps = tree[1]
        return _walk([focus], steps, expression)
    if kind == "truthy":
        return _evaluate(focus, tree[1], expression)
    if kind in ("and", "or"):
        left = _true(_evaluate(focus, tree[1], expression))
        right = _true(_evaluate(focus, tree[2], expression))
        return [_constant(left and right if kind == "and" else left or right)]
    left = _evaluate(focus, tree[1], expression)
    right = _evaluate(focus, tree[2], expression)
    if len(left) != 1 or len(right) != 1:
        return []  # FHIRPath: comparing with an empty collection is empty (not true)
    same = _equal(left[0].value, right[0].value)
    return [_constant(same if kind == "=" else not same)]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | Decimal) and isinstance(b, int | Decimal):
        return Decimal(a) == Decimal(b)
    try:
        if isinstance(a, int | Decimal) or isinstance(b, int | Decimal):
            return Decimal(str(a)) == Decimal(str(b))
    except InvalidOperation:
        return False
    return a == b


def _true(nodes: list[Node]) -> bool:
    """FHIRPath truthiness inside where(): a single `true`, or any non-boolean content."""
    if len(nodes) == 1 and isinstance(nodes[0].value, bool):
        return nodes[0].value
    return bool(nodes)
