"""The condition language: tokens -> AST -> type check. Nothing here evaluates user text.

Grammar (lowest precedence first):
    expr   := and ("or" and)*
    and    := not ("and" not)*
    not    := "not" not | cmp
    cmp    := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                  | ["not"] "in" (sum | "tags")]
    sum    := prod (("+" | "-") prod)*
    prod   := unary (("*" | "/") unary)*
    unary  := "-" unary | atom
    atom   := NUMBER | STRING | DATE | "true" | "false" | NAME ("." NAME)*
              | "(" expr ")" | "[" [expr ("," expr)*] "]"
A DATE literal is written bare: 2024-02-29.

Limits, checked before anything recurses (docs/playbook.md, "Limits"): a condition is at
most MAX_LENGTH characters, a number literal at most MAX_DIGITS digits, and the tree at most
MAX_DEPTH levels deep (each parenthesis, list bracket, `not`, minus sign, and each operator
of a chain such as `a + b + c` adds a level). A condition past a limit is an ExprError like
any other mistake, so the loader reports it at its file and line.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sopkit._errors import did_you_mean

Type = str  # "number", "string", "date", "bool", "list", "tags"

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\d.])
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,|\.)
  | (?P<bad>&&|\|\||=|&|\|)
  | (?P<name>[^\W\d][\w]*)
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "true", "false"}

MAX_LENGTH = 10_000  # characters in one condition
MAX_DIGITS = 100  # digits in one number literal (integer and fraction parts together)
MAX_DEPTH = 50  # levels of the parsed tree


class ExprError(Exception):
    """A problem at `offset` characters into the expression text."""

    def __init__(self, offset: int, message: str, suggestion: str = "") -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.suggestion = suggestion


@dataclass(frozen=True)
class Node:
    pos: int


@dataclass(frozen=True)
class Const(Node):
    value: object  # int | float | str | bool | datetime.date
    type: Type


@dataclass(frozen=True)
class Name(Node):
    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True)
class Arith(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class In(Node):
    item: Node
    container: Node  # a ListLit, a list-typed Name, or Name(("tags",))
    negated: bool


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    operand: Node


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[_Tok]:
    if len(text) > MAX_LENGTH:
        raise ExprError(MAX_LENGTH, f"the condition is {len(text):,} characters long; at most "
                        f"{MAX_LENGTH:,} are allowed", "split it into tags or scores")
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ExprError(pos, f"unexpected character '{text[pos]}'")
        kind = match.lastgroup or ""
        if kind in ("number", "date") and len(match.group()) > MAX_DIGITS:
            digits = sum(ch.isdigit() for ch in match.group())
            if digits > MAX_DIGITS:
                raise ExprError(pos, f"a number of {digits:,} digits; at most {MAX_DIGITS} are "
                                "allowed")
        if kind != "ws":
            word = match.group()
            toks.append(_Tok("kw" if kind == "name" and word in KEYWORDS else kind, word, pos))
        pos = match.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0  # levels of nesting entered: ( [ not -

    def enter(self, tok: _Tok) -> None:
        """One level deeper; an ExprError past MAX_DEPTH, before the parser recurses."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(tok.pos, f"the condition nests more than {MAX_DEPTH} levels deep",
                            "remove parentheses or split it into tags or scores")

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def accept(self, kind: str, text: str | None = None) -> _Tok | None:
        tok = self.tok
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return tok
        return None

    def expect(self, kind: str, text: str, what: str) -> _Tok:
        tok = self.accept(kind, text)
        if tok is None:
            raise ExprError(self.tok.pos, f"expected {what}, found {_describe(self.tok)}")
        return tok

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExprError(0, "empty condition")
        node = self.or_()
        if self.tok.kind != "end":
            hint = {"=": "compare with ==", "&&": "write and", "&": "write and",
                    "||": "write or", "|": "write or"}.get(self.tok.text, "")
            raise ExprError(self.tok.pos, f"unexpected {_describe(self.tok)}", hint)
        return node

    def or_(self) -> Node:
        first = self.and_()
        items = [first]
        while self.accept("kw", "or"):
            items.append(self.and_())
        return first if len(items) == 1 else BoolOp(first.pos, "or", tuple(items))

    def and_(self) -> Node:
        first = self.not_()
        items = [first]
        while self.accept("kw", "and"):
            items.append(self.not_())
        return first if len(items) == 1 else BoolOp(first.pos, "and", tuple(items))

    def not_(self) -> Node:
        tok = self.accept("kw", "not")
        if tok:
            self.enter(tok)
            node = Not(tok.pos, self.not_())
            self.depth -= 1
            return node
        return self.cmp()

    def cmp(self) -> Node:
        left = self.sum()
        tok = self.tok
        if tok.kind == "op" and tok.text in ("==", "!=", "<", "<=", ">", ">="):
            self.i += 1
            return Compare(tok.pos, tok.text, left, self.sum())
        negated = False
        if tok.kind == "kw" and tok.text == "not" and self.toks[self.i + 1].text == "in":
            self.i += 1
            negated = True
        if self.accept("kw", "in"):
            return In(tok.pos, left, self.sum(), negated)
        if negated:
            raise ExprError(tok.pos, "expected 'in' after 'not'")
        return left

    def sum(self) -> Node:
        node = self.prod()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            tok = self.tok
            self.i += 1
            node = Arith(tok.pos, tok.text, node, self.prod())
        return node

    def prod(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            tok = self.tok
            self.i += 1
            node = Arith(tok.pos, tok.text, node, self.unary())
        return node

    def unary(self) -> Node:
        tok = self.accept("op", "-")
        if tok:
            self.enter(tok)
            node = Neg(tok.pos, self.unary())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        tok = self.tok
        self.i += 1
        if tok.kind == "number":
            value: object = float(tok.text) if "." in tok.text else int(tok.text)
            return Const(tok.pos, value, "number")
        if tok.kind == "date":
            try:
                return Const(tok.pos, dt.date.fromisoformat(tok.text), "date")
            except ValueError:
                raise ExprError(tok.pos, f"'{tok.text}' is not a valid date") from None
        if tok.kind == "string":
            body = tok.text[1:-1]
            return Const(tok.pos, re.sub(r"\\(.)", r"\1", body), "string")
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return Const(tok.pos, tok.text == "true", "bool")
        if tok.kind == "name":
            parts = [tok.text]
            while self.accept("op", "."):
                nxt = self.tok
                if nxt.kind not in ("name", "kw"):
                    raise ExprError(nxt.pos, f"expected a name after '.', found {_describe(nxt)}")
                self.i += 1
                parts.append(nxt.text)
            return Name(tok.pos, tuple(parts))
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok)
            node = self.or_()
            self.expect("op", ")", "')'")
            self.depth -= 1
            return node
        if tok.kind == "op" and tok.text == "[":
            self.enter(tok)
            items: list[Node] = []
            if not self.accept("op", "]"):
                items.append(self.or_())
                while self.accept("op", ","):
                    items.append(self.or_())
                self.expect("op", "]", "']' or ','")
            self.depth -= 1
            return ListLit(tok.pos, tuple(items))
        self.i -= 1
        hint = "write and / or / ==" if tok.kind == "bad" else ""
        raise ExprError(tok.pos, f"expected a value, found {_describe(tok)}", hint)


def _describe(tok: _Tok) -> str:
    return "the end of the condition" if tok.kind == "end" else f"'{tok.text}'"


def parse(text: str) -> Node:
    """Parse a condition into an AST; ExprError carries the offset of the problem."""
    node = _Parser(text).parse()
    _check_depth(node)
    return node


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, Arith | Compare):
        return (node.left, node.right)
    if isinstance(node, In):
        return (node.item, node.container)
    if isinstance(node, BoolOp):
        return node.operands
    if isinstance(node, ListLit):
        return node.items
    return ()


def _check_depth(root: Node) -> None:
    """Chains like `a + b + c + …` nest without the parser recursing; bound them too, with
    an explicit stack, so the type check and the engines never recurse past MAX_DEPTH."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(node.pos, f"the condition nests more than {MAX_DEPTH} levels deep",
                            "shorten the chain of operators or split it into tags or scores")
        stack.extend((child, depth + 1) for child in _children(node))


@dataclass
class Scope:
    """What names a condition may use, and their types."""

    names: Mapping[str, Type]
    tags: frozenset[str]
    stages: frozenset[str]
    allow_event: bool = False
    used: set[str] = field(default_factory=set)
    tags_read: dict[str, set[bool]] = field(default_factory=dict)  # tag -> polarities


def settled_tags(node: Node) -> dict[str, bool]:
    """Tags a condition requires (True) or forbids (False) in its top-level `and` chain."""
    out: dict[str, bool] = {}
    parts = node.operands if isinstance(node, BoolOp) and node.op == "and" else (node,)
    for part in parts:
        negated = False
        while isinstance(part, Not):  # `not "t" in tags` is `"t" not in tags`
            part, negated = part.operand, not negated
        if isinstance(part, In) and isinstance(part.container, Name) \
                and part.container.dotted == "tags" and isinstance(part.item, Const):
            out[str(part.item.value)] = part.negated == negated
    return out


def check(node: Node, scope: Scope) -> Type:
    """Type-check `node` as a condition; raise ExprError on the first problem."""
    kind = _type(node, scope, positive=True)
    if kind != "bool":
        raise ExprError(node.pos, f"a condition must be true or false, this is a {kind}",
                        "compare it, e.g. `x > 0`")
    return kind


_ORDERED = {"number", "date", "string"}


def _type(node: Node, scope: Scope, positive: bool) -> Type:
    if isinstance(node, Const):
        return node.type
    if isinstance(node, Name):
        name = node.dotted
        if name == "tags":
            raise ExprError(node.pos, "'tags' can only be used with in", "write `\"VIP\" in tags`")
        if name.startswith("event.") and not scope.allow_event:
            raise ExprError(node.pos, f"'{name}' is only known in a rule with `on = \"<event>\"`")
        if name not in scope.names:
            raise ExprError(node.pos, f"unknown name '{name}'", did_you_mean(name, scope.names))
        scope.used.add(name)
        return scope.names[name]
    if isinstance(node, ListLit):
        raise ExprError(node.pos, "a list can only stand after in", "write `x in [1, 2]`")
    if isinstance(node, Neg):
        _expect(node.operand, scope, "number", positive)
        return "number"
    if isinstance(node, Arith):
        _expect(node.left, scope, "number", positive)
        _expect(node.right, scope, "number", positive)
        return "number"
    if isinstance(node, Compare):
        left = _type(node.left, scope, positive)
        right = _type(node.right, scope, positive)
        if left != right:
            raise ExprError(node.pos, f"cannot compare a {left} with a {right}")
        if node.op not in ("==", "!=") and left not in _ORDERED:
            raise ExprError(node.pos, f"'{node.op}' does not apply to a {left}", "use == or !=")
        _check_stage_literal(node, scope)
        return "bool"
    if isinstance(node, In):
        return _type_in(node, scope, positive)
    if isinstance(node, BoolOp):
        for operand in node.operands:
            _expect(operand, scope, "bool", positive)
        return "bool"
    if isinstance(node, Not):
        _expect(node.operand, scope, "bool", not positive)
        return "bool"
    raise ExprError(node.pos, "unsupported expression")  # pragma: no cover - parser makes none


def _expect(node: Node, scope: Scope, want: Type, positive: bool) -> None:
    got = _type(node, scope, positive)
    if got != want:
        raise ExprError(node.pos, f"expected a {want} here, this is a {got}")


def _type_in(node: In, scope: Scope, positive: bool) -> Type:
    container = node.container
    if isinstance(container, Name) and container.dotted == "tags":
        if not (isinstance(node.item, Const) and node.item.type == "string"):
            raise ExprError(node.item.pos, "a tag test needs a tag name in quotes",
                            "write `\"VIP\" in tags`")
        tag = str(node.item.value)
        if tag not in scope.tags:
            raise ExprError(node.item.pos, f"unknown tag '{tag}'", did_you_mean(tag, scope.tags))
        scope.tags_read.setdefault(tag, set()).add(positive != node.negated)
        return "bool"
    if isinstance(container, ListLit):
        item = _type(node.item, scope, positive)
        for element in container.items:
            if not isinstance(element, Const):
                raise ExprError(element.pos, "list items must be literal values")
            if element.type != item:
                raise ExprError(element.pos, f"list item is a {element.type}, expected a {item}")
        if isinstance(node.item, Name) and node.item.dotted == "stage":
            for element in container.items:
                _check_stage_name(element, scope)
        return "bool"
    kind = _type(container, scope, positive)
    if kind != "list":
        raise ExprError(container.pos, f"in needs a list or tags, this is a {kind}")
    if not (isinstance(node.item, Const) and node.item.type == "string"):
        raise ExprError(node.item.pos, "membership in a profile list needs a quoted value")
    return "bool"


def _check_stage_literal(node: Compare, scope: Scope) -> None:
    for a, b in ((node.left, node.right), (node.right, node.left)):
        if isinstance(a, Name) and a.dotted == "stage" and isinstance(b, Const):
            _check_stage_name(b, scope)


def _check_stage_name(node: Node, scope: Scope) -> None:
    if isinstance(node, Const) and node.value not in scope.stages:
        raise ExprError(node.pos, f"unknown stage '{node.value}'",
                        did_you_mean(str(node.value), scope.stages))
