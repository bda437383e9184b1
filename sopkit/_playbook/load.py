"""parse -> validate: TOML files (with includes) to a checked `LoadedPlaybook`.

Every problem found is collected, each with file, line, column, key path and a suggestion,
and raised together as one PlaybookError, so `sopkit check` shows them all at once.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sopkit._errors import Location, PlaybookError, Problem, did_you_mean
from sopkit._playbook import models as m
from sopkit._playbook.source import Document, KeyPath, format_path, load_document

_DICT_SECTIONS = ("profile", "events", "metrics", "scores", "tags", "channels", "templates",
                  "policy", "experiments")
_LIST_SECTIONS = ("stages", "rules", "campaigns")


_MAX_NAME = 255  # characters in one file name of an include (most file systems' limit)
_MAX_PATH = 4096  # characters in an include path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # no permission to look, and the like: reported as not found
        return False


def _cut(text: str, keep: int = 60) -> str:
    """A path as quoted in a message: control characters escaped, a long one shortened."""
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)
    return text if len(text) <= 2 * keep else f"{text[:keep]}…{text[-keep:]}"


@dataclass
class Origins:
    """Maps a key path of the merged playbook back to the file and path it came from."""

    root: Document
    entries: dict[KeyPath, tuple[Document, KeyPath]] = field(default_factory=dict)

    def locate_value(self, path: KeyPath, offset: int) -> Location:
        """Where character `offset` of the string at `path` stands, in its own file."""
        hit = self.entries.get(tuple(path[:2])) or self.entries.get(tuple(path[:1]))
        if hit is None:
            return self.root.locate_value(path, offset)
        doc, origin = hit
        cut = 2 if tuple(path[:2]) in self.entries else 1
        located = doc.locate_value((*origin, *path[cut:]), offset)
        return Location(located.file, located.line, located.column, format_path(path))

    def locate(self, path: KeyPath) -> Location:
        for cut in range(len(path), 0, -1):
            hit = self.entries.get(tuple(path[:cut]))
            if hit is not None:
                doc, origin = hit
                located = doc.locate((*origin, *path[cut:]))
                return Location(located.file, located.line, located.column, format_path(path))
        located = self.root.locate(path)
        return Location(located.file, located.line, located.column, format_path(path))


@dataclass
class LoadedPlaybook:
    """A playbook that passed every check, with the map back to its source files."""

    model: m.Playbook
    origins: Origins
    path: Path

    @property
    def name(self) -> str:
        return self.model.playbook.name


def _merge(root: Document, problems: list[Problem]) -> tuple[dict[str, Any], Origins]:
    origins = Origins(root)
    merged: dict[str, Any] = {}
    seen: set[Path] = set()

    def take(doc: Document, chain: tuple[Path, ...]) -> None:
        meta = doc.data.get("playbook")
        includes = meta.get("include", []) if isinstance(meta, dict) else []
        if isinstance(includes, list):
            for index, inc in enumerate(includes):
                if not isinstance(inc, str):
                    continue  # the model check reports the wrong type
                shown = Path(os.path.normpath(Path(doc.file).parent / inc))
                where = doc.locate(("playbook", "include", index))
                if len(inc) > _MAX_PATH or any(len(p) > _MAX_NAME for p in shown.parts):
                    problems.append(Problem(where, f"cannot include '{_cut(inc)}': the path is "
                                            "too long", f"file names have at most {_MAX_NAME} "
                                            f"characters, paths at most {_MAX_PATH}"))
                    continue
                if not inc.isprintable():
                    problems.append(Problem(where, f"cannot include '{_cut(inc)}': the path "
                                            "holds a control character", "write the file's "
                                            "name as it is"))
                    continue
                try:
                    target = shown.resolve()
                except (OSError, ValueError, RuntimeError) as exc:  # a NUL, a symlink loop …
                    problems.append(Problem(where, f"cannot include '{_cut(inc)}': {exc}",
                                            "paths are relative to the file that includes "
                                            "them"))
                    continue
                if target in chain:
                    problems.append(Problem(where, f"include cycle: '{inc}' includes itself"))
                    continue
                if target in seen:
                    continue
                seen.add(target)
                if not _is_file(target):
                    problems.append(Problem(where, f"cannot include '{inc}': no such file "
                                            f"({shown})", "paths are relative to the file that "
                                            "includes them"))
                    continue
                try:
                    frag = load_document(shown)
                except PlaybookError as exc:
                    problems.extend(exc.problems)
                    problems.append(Problem(where, f"'{inc}' is included here"))
                    continue
                if "playbook" in frag.data and set(frag.data["playbook"]) - {"include"}:
                    loc = frag.locate(("playbook",))
                    problems.append(Problem(loc, "a fragment cannot have its own [playbook] "
                                            "settings", "keep only `include` there"))
                take(frag, (*chain, target))
        for section, value in doc.data.items():
            if section == "playbook":
                if doc is root:
                    merged["playbook"] = value
                    origins.entries[("playbook",)] = (doc, ("playbook",))
                continue
            if section in _LIST_SECTIONS and isinstance(value, list):
                items = merged.setdefault(section, [])
                for index, item in enumerate(value):
                    origins.entries[(section, len(items))] = (doc, (section, index))
                    items.append(item)
            elif section in _DICT_SECTIONS and isinstance(value, dict):
                table = merged.setdefault(section, {})
                for key, item in value.items():
                    if section == "events" and isinstance(item, dict) and \
                            isinstance(table.get(key), dict):
                        first = origins.entries[(section, key)][0].file
                        item = _merge_fields(table[key], item, doc, (section, key), problems,
                                             first)
                    if key in table and table[key] != item:
                        other_doc, _ = origins.entries[(section, key)]
                        problems.append(Problem(
                            doc.locate((section, key)),
                            f"'{section}.{key}' is already defined differently in "
                            f"{other_doc.file}",
                            "rename one, or make both definitions the same",
                        ))
                        continue
                    if key not in table:
                        origins.entries[(section, key)] = (doc, (section, key))
                        table[key] = item
            else:
                merged.setdefault(section, value)
                origins.entries.setdefault((section,), (doc, (section,)))

    take(root, (Path(root.file).resolve(),))
    return merged, origins


def _merge_fields(have: dict[str, Any], new: dict[str, Any], doc: Document, path: KeyPath,
                  problems: list[Problem], other: str) -> dict[str, Any]:
    """Fields of one event type declared in several files: the union, if types agree."""
    merged = dict(have)
    for name, kind in new.items():
        if name in merged and merged[name] != kind:
            problems.append(Problem(doc.locate((*path, name)),
                                    f"field '{name}' of event '{path[-1]}' is a {kind} here but "
                                    f"a {merged[name]} in {other}", "declare it with one type"))
            continue
        merged[name] = kind
    have.clear()
    have.update(merged)
    return have


def load(path: str | Path) -> LoadedPlaybook:
    """Read, merge, shape-check and cross-check a playbook; raise PlaybookError if invalid."""
    from sopkit._playbook.validate import validate  # the validator imports this module's types

    path = Path(path)
    root = load_document(path)
    problems: list[Problem] = []
    data, origins = _merge(root, problems)
    _rfm_tags(data, origins)
    try:
        model = m.Playbook.model_validate(data)
    except ValidationError as exc:
        problems.extend(_translate(exc, data, origins))
        problems.extend(_check_the_rest(exc, data, origins, path))
        raise PlaybookError(_sorted(problems)) from None
    loaded = LoadedPlaybook(model, origins, path)
    problems.extend(validate(loaded))
    if problems:
        raise PlaybookError(_sorted(problems))
    return loaded


def _rfm_tags(data: dict[str, Any], origins: Origins) -> None:
    """`[rfm]` with tags (the default) declares one dynamic tag per segment, located at the
    [rfm] table, unless the playbook declares a tag of that name itself."""
    from sopkit._stats.rfm import SEGMENT_NAMES

    rfm = data.get("rfm")
    if not isinstance(rfm, dict) or rfm.get("tags", True) is not True:
        return
    tags = data.setdefault("tags", {})
    if not isinstance(tags, dict):
        return
    for name in SEGMENT_NAMES:
        if name not in tags:
            tags[name] = {"when": f'rfm_segment == "{name}"', "group": "value",
                          "description": "RFM segment ([rfm] tags = true)"}
            origins.entries[("tags", name)] = origins.entries.get(("rfm",), (origins.root,
                                                                           ("rfm",)))


def _check_the_rest(exc: ValidationError, data: dict[str, Any], origins: Origins,
                    path: Path) -> list[Problem]:
    """Cross-check what is left once the shape errors are set aside.

    So a typo'd key does not hide an unknown channel elsewhere. An unknown key is simply
    dropped; an item with any other shape error (a rule, a metric …) is set aside whole, and
    problems that name a set-aside item are left out: they would only echo its shape error.
    """
    from sopkit._playbook.validate import validate

    rest = copy.deepcopy(data)
    removed: set[str] = set()
    aside: dict[str, set[int]] = {}
    for err in exc.errors():
        loc = _strip_action_tag(tuple(err["loc"]))
        if not loc or loc[0] == "playbook":
            return []  # without a sound [playbook] table there is nothing to check against
        if err["type"] == "extra_forbidden":
            parent: Any = rest
            for part in loc[:-1]:  # an earlier error may have set the parent aside already
                parent = _child(parent, part)
            if isinstance(parent, dict):
                parent.pop(loc[-1], None)
            continue
        section = str(loc[0])
        if len(loc) == 1:
            rest.pop(section, None)
        elif isinstance(rest.get(section), list) and isinstance(loc[1], int):
            aside.setdefault(section, set()).add(loc[1])
            item = data[section][loc[1]]
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                removed.add(item["name"])
        elif isinstance(rest.get(section), dict):
            rest[section].pop(loc[1], None)
            removed.add(str(loc[1]))
    renumber: dict[tuple[str, int], int] = {}  # (section, index in rest) -> index in data
    for section, indexes in aside.items():
        kept = [i for i in range(len(data[section])) if i not in indexes]
        rest[section] = [rest[section][i] for i in kept]
        renumber.update({(section, new): old for new, old in enumerate(kept)})
    try:
        model = m.Playbook.model_validate(rest)
    except ValidationError:
        return []
    back = {(section, old): new for (section, new), old in renumber.items()}
    shifted = Origins(origins.root)
    for key, origin in origins.entries.items():
        if len(key) == 2 and isinstance(key[1], int) and str(key[0]) in aside:
            if (str(key[0]), key[1]) not in back:
                continue  # a set-aside item
            key = (key[0], back[(str(key[0]), key[1])])
        shifted.entries[key] = origin
    out = []
    for problem in validate(LoadedPlaybook(model, shifted, path)):
        if any(f"'{name}'" in problem.message for name in removed):
            continue
        label = problem.location.key
        for (section, new), old in renumber.items():
            if label.startswith(f"{section}[{new}]"):
                label = f"{section}[{old}]" + label[len(f"{section}[{new}]"):]
                break
        where = problem.location
        out.append(Problem(Location(where.file, where.line, where.column, label),
                           problem.message, problem.suggestion))
    return out


def _child(node: Any, part: str | int) -> Any:
    """`node[part]`, or None when it is not there."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _strip_action_tag(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the tag name a discriminated union inserts into an error path."""
    return tuple(part for i, part in enumerate(loc)
                 if not (i > 0 and isinstance(loc[i - 1], int) and part in m.ACTION_TYPES
                         and len(loc) > i + 1 and _is_action_path(loc[:i])))


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = {(p.location.file, p.location.line, p.location.column, p.message): p
              for p in problems}
    return [unique[k] for k in sorted(unique)]


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}


def _describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string '{value}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _model_at(loc: tuple[str | int, ...], data: Any) -> tuple[type[BaseModel] | None, Any]:
    """The model class whose field the last element of `loc` names, and the data there."""
    model: Any = m.Playbook
    node: Any = data
    for part in loc[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        model = _step(model, part, node)
    return (model if isinstance(model, type) and issubclass(model, BaseModel) else None), node


def _step(model: Any, part: str | int, node: Any) -> Any:
    import typing

    if isinstance(model, type) and issubclass(model, BaseModel):
        info = model.model_fields.get(str(part))
        return _unwrap(info.annotation, node) if info else None
    origin = typing.get_origin(model)
    if origin in (list, dict):
        args = typing.get_args(model)
        return _unwrap(args[-1], node)
    return None


def _unwrap(annotation: Any, node: Any) -> Any:
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0], node)
    if origin in (typing.Union, __import__("types").UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                field_type = arg.model_fields.get("type")
                if field_type is None:
                    return arg
                wanted = typing.get_args(field_type.annotation)
                if isinstance(node, dict) and node.get("type") in wanted:
                    return arg
        return None
    return annotation


def _translate(exc: ValidationError, data: dict[str, Any], origins: Origins) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc = _strip_action_tag(tuple(err["loc"]))
        kind = err["type"]
        where = origins.locate(loc)
        key = str(loc[-1]) if loc else ""
        if kind == "extra_forbidden":
            model, _ = _model_at(loc, data)
            valid = list(model.model_fields) if model else []
            problems.append(Problem(where, f"unknown key '{key}'", did_you_mean(key, valid)))
        elif kind == "missing":
            parent = origins.locate(loc[:-1])
            problems.append(Problem(Location(parent.file, parent.line, parent.column,
                                             format_path(loc)),
                                    f"missing required key '{key}'"))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            names = [x.strip().strip("'") for x in expected.replace(" or ", ", ").split(",")]
            got = err.get("input")
            problems.append(Problem(where, f"'{got}' is not one of {expected}",
                                    did_you_mean(str(got), names)))
        elif kind == "union_tag_invalid":
            got = err.get("ctx", {}).get("tag", "")
            problems.append(Problem(origins.locate((*loc, "type")),
                                    f"unknown action type '{got}'",
                                    did_you_mean(str(got), m.ACTION_TYPES)))
        elif kind == "union_tag_not_found":
            problems.append(Problem(where, "an action needs a `type`",
                                    "one of: " + ", ".join(m.ACTION_TYPES)))
        elif kind == "value_error":
            problems.append(Problem(where, str(err["msg"]).removeprefix("Value error, ")))
        elif kind in ("too_short",):
            problems.append(Problem(where, "must not be empty"))
        elif kind in ("greater_than_equal",):
            problems.append(Problem(where, f"must be at least {err['ctx']['ge']}"))
        elif kind in _TYPE_WORDS:
            problems.append(Problem(where, f"expected {_TYPE_WORDS[kind]}, got "
                                    f"{_describe_value(err.get('input'))}"))
        else:
            problems.append(Problem(where, str(err["msg"])))
    return problems


def _is_action_path(loc: tuple[str | int, ...]) -> bool:
    return len(loc) >= 3 and loc[-2] == "actions"
