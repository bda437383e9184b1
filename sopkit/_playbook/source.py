"""TOML loading that remembers where every key and array element stands in the file.

`tomllib` gives values but no positions; errors must name a line and column, so a small
scanner walks the same text and records the position of each key path. Paths are tuples of
keys (str) and array indexes (int), e.g. ("rules", 2, "actions", 0, "channel").
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit._errors import Location, PlaybookError, Problem

KeyPath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = set(" \t\r\n,]}#")

# Limits of a playbook file (docs/playbook.md, "Limits"), checked before tomllib reads it, so
# a hostile file is a located problem instead of a RecursionError or a ValueError.
MAX_NESTING = 32  # arrays and inline tables inside one another
MAX_DIGITS = 100  # digits of one number (integer, float)
MAX_KEY_DEPTH = 64  # parts of one key path, counting dotted keys, tables and array positions
_NUMBER_START = re.compile(r"[+-]?[0-9]")


def format_path(path: KeyPath) -> str:
    """Render a key path the way a user would write it: `rules[2].actions[0].channel`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE.fullmatch(part) or _is_cjk_word(part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


def _is_cjk_word(text: str) -> bool:
    return bool(text) and all(ch.isalnum() or ch in "_-" for ch in text)


@dataclass
class Document:
    """One TOML file: its data and the (line, column) of every key path in it."""

    file: str
    data: dict[str, Any]
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[KeyPath, tuple[int, int, str]] = field(default_factory=dict)

    def locate_value(self, path: KeyPath, offset: int) -> Location:
        """Where character `offset` of the string value at `path` stands in the file."""
        if path not in self.values:
            return self.locate(path)
        line, column, raw = self.values[path]
        line, column = _raw_position(raw, line, column, offset) if raw else (line, column)
        return Location(self.file, line, column, format_path(path))

    def locate(self, path: KeyPath) -> Location:
        """The position of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe and probe not in self.positions:
            probe = probe[:-1]
        line, column = self.positions.get(probe, (1, 1))
        return Location(self.file, line, column, format_path(path))


@dataclass
class _Tok:
    kind: str  # "key" (bare or quoted), "str", "scalar", or one of "[ ] [[ ]] { } = , . \n"
    text: str
    line: int
    col: int
    raw: str = ""


def _raw_position(raw: str, line: int, col: int, offset: int) -> tuple[int, int]:
    """Where decoded character `offset` of a TOML string literal `raw` stands in the file."""
    quote = raw[:3] if raw[:3] in ('"""', "'''") else raw[:1]
    i = len(quote)
    col += len(quote)
    if len(quote) == 3 and raw[i : i + 1] == "\n":  # a newline right after """ is trimmed
        i += 1
        line, col = line + 1, 1
    escapes = quote.startswith('"')
    decoded = 0
    while i < len(raw) and decoded < offset:
        ch = raw[i]
        step = 1
        if escapes and ch == "\\":
            nxt = raw[i + 1 : i + 2]
            step = {"u": 6, "U": 10}.get(nxt, 2)
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += step
        i += step
        decoded += 1
    return line, col


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, line, col = 0, 1, 1
    n = len(text)
    in_aot_header = False  # a `[[` opened this line: `]]` closes it

    def advance(k: int) -> None:
        nonlocal i, line, col
        for ch in text[i : i + k]:
            if ch == "\n":
                line += 1
                col = 1
            else:
                col += 1
        i += k

    while i < n:
        ch = text[i]
        if ch in " \t\r":
            advance(1)
        elif ch == "#":
            while i < n and text[i] != "\n":
                advance(1)
        elif ch == "\n":
            toks.append(_Tok("\n", ch, line, col))
            in_aot_header = False
            advance(1)
        elif text.startswith("[[", i) and (not toks or toks[-1].kind == "\n"):
            toks.append(_Tok("[[", "[[", line, col))  # an array-of-tables header
            in_aot_header = True
            advance(2)
        elif text.startswith("]]", i) and in_aot_header:
            toks.append(_Tok("]]", "]]", line, col))
            advance(2)
        elif ch in "[]{}=,.":
            toks.append(_Tok(ch, ch, line, col))
            advance(1)
        elif text.startswith('"""', i) or text.startswith("'''", i):
            quote = text[i : i + 3]
            end = text.find(quote, i + 3)
            end = n if end < 0 else end + 3
            while end < n and text[end] == quote[0]:  # up to two extra quotes may close it
                end += 1
            toks.append(_Tok("str", "", line, col, text[i:end]))
            advance(end - i)
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if (ch == '"' and text[j] == "\\") else 1
            raw = text[i + 1 : min(j, n)]
            value = raw
            if ch == '"':
                try:
                    value = tomllib.loads(f"v = {text[i : j + 1]}")["v"]
                except tomllib.TOMLDecodeError:
                    value = raw
            toks.append(_Tok("str", value, line, col, text[i : j + 1]))
            advance(j + 1 - i)
        else:
            j = i
            while j < n and text[j] not in _SCALAR_END and text[j] not in "=[{\"'":
                j += 1
            if j == i:
                j = i + 1
            toks.append(_Tok("scalar", text[i:j], line, col))
            advance(j - i)
    return toks


class _Scanner:
    """Walks the tokens of a TOML document and records positions of key paths."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.positions: dict[KeyPath, tuple[int, int]] = {}
        self.values: dict[KeyPath, tuple[int, int, str]] = {}
        self.aot_count: dict[KeyPath, int] = {}

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def skip_newlines(self) -> None:
        while (tok := self.peek()) is not None and tok.kind == "\n":
            self.i += 1

    def mark(self, path: KeyPath, tok: _Tok) -> None:
        self.positions.setdefault(path, (tok.line, tok.col))

    def read_key(self) -> list[tuple[str, _Tok]]:
        """A dotted key: bare parts (lexed as scalars, maybe holding dots) and quoted parts."""
        out: list[tuple[str, _Tok]] = []
        while (tok := self.peek()) is not None and tok.kind in ("str", "scalar", "."):
            self.i += 1
            if tok.kind == "str":
                out.append((tok.text, tok))
            elif tok.kind == "scalar":
                out.extend((piece, tok) for piece in tok.text.split(".") if piece)
        return out

    def resolve_header(self, keys: list[str]) -> KeyPath:
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self.aot_count:
                path = (*path, self.aot_count[path] - 1)
            if len(path) > MAX_KEY_DEPTH:
                break  # too deep: reported by load_document (and not quadratic in the parts)
        return path

    def run(self) -> dict[KeyPath, tuple[int, int]]:
        current: KeyPath = ()
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok is None:
                break
            if tok.kind == "[[":
                self.i += 1
                keys = self.read_key()
                names = [k for k, _ in keys]
                names = names[: MAX_KEY_DEPTH + 1]
                base = (*self.resolve_header(names[:-1]), names[-1]) if names else ()
                index = self.aot_count.get(base, 0)
                self.aot_count[base] = index + 1
                current = (*base, index)
                if keys:
                    self.mark(base, keys[-1][1])
                    self.mark(current, keys[-1][1])
                self.skip_to_eol()
            elif tok.kind == "[":
                self.i += 1
                keys = self.read_key()
                current = self.resolve_header([k for k, _ in keys])
                if keys:
                    self.mark(current, keys[-1][1])
                self.skip_to_eol()
            elif tok.kind in ("str", "scalar"):
                self.keyval(current)
            else:
                self.i += 1

        return self.positions

    def skip_to_eol(self) -> None:
        while (tok := self.peek()) is not None and tok.kind != "\n":
            self.i += 1

    def keyval(self, prefix: KeyPath) -> None:
        keys = self.read_key()
        path = prefix
        for name, tok in keys:
            path = (*path, name)
            self.mark(path, tok)
            if len(path) > MAX_KEY_DEPTH:
                break  # too deep: reported by load_document (and not quadratic in the parts)
        after = self.peek()
        if after is not None and after.kind == "=":
            self.i += 1
            self.value(path)

    def value(self, path: KeyPath) -> None:
        tok = self.peek()
        if tok is None:
            return
        self.values.setdefault(path, (tok.line, tok.col, tok.raw))
        if tok.kind == "{":
            self.i += 1
            while (tok := self.peek()) is not None and tok.kind != "}":
                if tok.kind in ("str", "scalar"):
                    self.keyval(path)
                else:
                    self.i += 1
            self.i += 1
        elif tok.kind == "[":
            self.i += 1
            self.array_rest(path)
        else:
            self.i += 1

    def array_rest(self, path: KeyPath) -> None:
        index = 0
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok is None:
                return
            if tok.kind == "]":
                self.i += 1
                return
            if tok.kind == ",":
                self.i += 1
                continue
            self.mark((*path, index), tok)
            self.value((*path, index))
            index += 1


_DECODE_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def load_document(path: Path) -> Document:
    """Read a TOML file; a syntax error becomes a PlaybookError naming line and column."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError(
            [Problem(Location(name, 1, 1, ""), "file not found", "check the path")]
        ) from None
    except UnicodeDecodeError as exc:
        raise PlaybookError(
            [Problem(Location(name, 1, 1, ""), f"not UTF-8 text: {exc.reason}", "save as UTF-8")]
        ) from None
    except OSError as exc:  # a directory, no permission, a name too long …
        raise PlaybookError(
            [Problem(Location(name, 1, 1, ""), f"cannot read the file: {exc.strerror or exc}",
                     "check the path")]
        ) from None
    toks = _tokenize(text)
    limits = _over_limits(name, toks)
    if limits:
        raise PlaybookError(limits)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        match = _DECODE_AT.search(msg)
        line, col = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
        reason = _DECODE_AT.sub("", msg).strip()
        hint = ""
        if reason.startswith("Illegal character") and ("'\\n'" in reason or "\\n" in reason):
            hint = "a string is not closed: end it with a quote on the same line"
        elif reason.startswith("Cannot overwrite a value") or reason.startswith("Cannot declare"):
            hint = "a key or table is set twice; keep one"
        elif reason.startswith("Expected '=' after a key"):
            hint = "write key = value"
        raise PlaybookError(
            [Problem(Location(name, line, col, ""), f"TOML syntax error: {reason}", hint)]
        ) from None
    scanner = _Scanner(toks)
    positions = scanner.run()
    deep = [(where, key) for key, where in positions.items() if len(key) > MAX_KEY_DEPTH]
    if deep or _depth(data) > MAX_KEY_DEPTH:
        (line, col), key = min(deep, key=lambda d: d[0]) if deep else ((1, 1), ())
        raise PlaybookError([Problem(
            Location(name, line, col, format_path(key[:3]) + (" …" if key else "")),
            f"keys nest more than {MAX_KEY_DEPTH} levels deep", "flatten the keys")])
    return Document(name, data, positions, scanner.values)


def _depth(data: object) -> int:
    """How deep tables and arrays nest in `data`, counted without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


def _digits(number: str) -> int:
    """Digits of a TOML number: decimal digits, or every digit of a 0x / 0o / 0b number."""
    unsigned = number.lstrip("+-")
    if unsigned[1:2] in ("x", "o", "b"):
        return sum(ch.isalnum() for ch in unsigned[2:])
    return sum(ch.isdigit() for ch in number)


def _over_limits(name: str, toks: list[_Tok]) -> list[Problem]:
    """Dotted keys past MAX_KEY_DEPTH parts, arrays or inline tables nested past MAX_NESTING,
    numbers past MAX_DIGITS: checked on the tokens, before tomllib (which recurses, and reads
    a dotted key in time quadratic in its parts) sees the text."""
    problems: list[Problem] = []
    depth = 0
    dots, key_start = 0, toks[0] if toks else None  # dots of the dotted key being read
    table, key, in_header = "", "", False  # the key a problem is reported under
    words: list[str] = []
    aot_header, aot_seen = False, dict[str, int]()  # `[[rules]]` headers: rules[0], rules[1] …
    previous: _Tok | None = None
    for tok in toks:
        if tok.kind in (".", "scalar"):
            if dots == 0:
                key_start = tok
            before = dots
            dots += 1 if tok.kind == "." else tok.text.count(".")
            if before < MAX_KEY_DEPTH <= dots and key_start is not None:
                problems.append(Problem(
                    Location(name, key_start.line, key_start.col, table),
                    f"a dotted key of more than {MAX_KEY_DEPTH} parts", "flatten the keys"))
        elif tok.kind != "str":
            dots = 0
        if tok.kind in ("str", "scalar") and len(words) <= MAX_KEY_DEPTH:
            words.append(tok.text)
        elif tok.kind == "=" and depth == 0:
            key = _key_label(table, words)
        elif tok.kind in ("[[", "[") and depth == 0 and (previous is None
                                                         or previous.kind == "\n"):
            in_header, words, aot_header = True, [], tok.kind == "[["
        elif tok.kind in ("]]", "]") and in_header and depth <= 1:
            in_header, table, key = False, _key_label("", words), ""
            if aot_header:
                aot_seen[table] = aot_seen.get(table, -1) + 1
                table = f"{table}[{aot_seen[table]}]"
        elif tok.kind in ("\n", ",", "{") and not in_header:
            words = []
        previous = tok
        if tok.kind in ("[", "{"):
            depth += 1
            if depth == MAX_NESTING + 1:
                problems.append(Problem(
                    Location(name, tok.line, tok.col, key),
                    f"arrays and tables nest more than {MAX_NESTING} levels deep here",
                    "flatten the value"))
        elif tok.kind in ("]", "}"):
            depth = max(depth - 1, 0)
        elif tok.kind == "scalar" and len(tok.text) > MAX_DIGITS \
                and _NUMBER_START.match(tok.text):
            digits = _digits(tok.text)
            if digits > MAX_DIGITS:
                problems.append(Problem(
                    Location(name, tok.line, tok.col, key),
                    f"a number of {digits:,} digits; at most {MAX_DIGITS} are allowed",
                    "write a smaller number"))
    return problems


def _key_label(table: str, words: list[str]) -> str:
    """`table.key` as written, for a problem found before the document has key paths."""
    label = ".".join(part for part in (table, ".".join(words)) if part)
    return label if len(label) <= 80 else label[:80] + " …"
