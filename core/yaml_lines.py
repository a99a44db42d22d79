"""Load YAML while remembering where every value is, so errors can say `file:line:column`.

Besides the data, `load_located` keeps for each path its line and column, the source text of each
scalar (YAML reads an unquoted +15550001111 as the integer 15550001111: the message should show
what the admin wrote), and every key written twice in one mapping (PyYAML silently keeps the last).
A syntax error is raised as `YAMLSyntaxError` at the line a person would look at: for an unclosed
quote or bracket that is where it opened, not the end of the file where PyYAML noticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Position:
    line: int    # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class DuplicateKey:
    loc: tuple
    key: Any
    first: Position
    again: Position


class YAMLSyntaxError(ValueError):
    """The file is not YAML; `position` is where to look, `hint` how to fix the most likely cause."""

    def __init__(self, message: str, position: Position, hint: str) -> None:
        super().__init__(message)
        self.message, self.position, self.hint = message, position, hint


class LocatedYAML:
    """Plain Python data from a YAML file plus the position of each path in it.

    Paths are tuples of keys and list indexes, the same shape as pydantic's error `loc`.
    """

    def __init__(self, path: Path, data: Any, positions: dict[tuple, Position], *,
                 sources: dict[tuple, str] | None = None, duplicates: list[DuplicateKey] | None = None,
                 text: str = "") -> None:
        self.path = path
        self.data = data
        self._positions = positions
        self._sources = sources or {}
        self.duplicates = duplicates or []
        self.text = text
        self._values: dict[tuple, Position] = {}

    def position_of(self, loc: Sequence[Any]) -> Position:
        """The position of the deepest known prefix of `loc`."""
        loc = tuple(loc)
        while loc:
            if loc in self._positions:
                return self._positions[loc]
            loc = loc[:-1]
        return self._positions.get((), Position(1, 1))

    def value_position_of(self, loc: Sequence[Any]) -> Position:
        """Where the scalar at `loc` starts (after `key: `); the key's position for a mapping or list, or
        when `loc` is not in the file."""
        loc = tuple(loc)
        return self._values[loc] if loc in self._sources else self.position_of(loc)

    def line_of(self, loc: Sequence[Any]) -> int:
        return self.position_of(loc).line

    def find_scalar(self, under: Sequence[Any], written: str) -> tuple | None:
        """The path of the first scalar below `under` written exactly as `written` (or its key)."""
        under = tuple(under)
        for loc, source in self._sources.items():
            if loc[:len(under)] == under and len(loc) > len(under) and (source == written or loc[-1] == written):
                return loc
        return None

    def source_of(self, loc: Sequence[Any]) -> str | None:
        """The scalar exactly as written in the file at `loc`, if `loc` is a scalar."""
        return self._sources.get(tuple(loc))


def load_located(path: Path) -> LocatedYAML:
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from exc
    positions: dict[tuple, Position] = {}
    if node is None:
        return LocatedYAML(path, None, {(): Position(1, 1)}, text=text)
    sources: dict[tuple, str] = {}
    duplicates: list[DuplicateKey] = []
    values: dict[tuple, Position] = {}
    data = _construct(node, (), positions, sources, duplicates, values)
    located = LocatedYAML(path, data, positions, sources=sources, duplicates=duplicates, text=text)
    located._values = values
    return located


def excerpt(text: str, position: Position) -> str:
    """The line at `position` with a caret under its column."""
    lines = text.splitlines()
    if not 1 <= position.line <= len(lines):
        return ""
    line = lines[position.line - 1].replace("\t", " ")
    return f"    {line}\n    {' ' * (position.column - 1)}^"


def _at(mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _construct(node: yaml.Node, loc: tuple, positions: dict, sources: dict, duplicates: list,
               values: dict) -> Any:
    positions[loc] = values[loc] = _at(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                duplicates.append(DuplicateKey(loc + (key,), key, positions[loc + (key,)], _at(key_node.start_mark)))
            out[key] = _construct(value_node, loc + (key,), positions, sources, duplicates, values)
            positions[loc + (key,)] = _at(key_node.start_mark)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, loc + (i,), positions, sources, duplicates, values) for i, child in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode):
        sources[loc] = node.value
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError) -> YAMLSyntaxError:
    context, problem = exc.context or "", exc.problem or ""
    opened = exc.context_mark is not None and ("quoted scalar" in context or "flow" in context)
    mark = exc.context_mark if opened else (exc.problem_mark or exc.context_mark)
    position = _at(mark) if mark is not None else Position(1, 1)
    if "quoted scalar" in context:
        hint = "the quote opened here is never closed; close it on the same line"
    elif "flow" in context:
        hint = "the [ or { opened here is never closed, or an item in it needs quotes"
    elif "mapping values are not allowed" in problem:
        hint = "a value containing ': ' must be quoted, e.g. name: \"Smith: Lee\""
    elif "'\\t'" in problem or "tab" in problem:
        hint = "YAML indents with spaces, not tabs"
    elif "expected <block end>" in problem or "did not find expected key" in problem:
        hint = "check the indentation: keys of one mapping line up, list items start with '- '"
    elif "found character '@'" in problem or "found character '`'" in problem:
        hint = "a value starting with @ or ` must be quoted"
    else:
        hint = "check the quoting and indentation here"
    message = " ".join(part for part in (context, problem) if part)
    return YAMLSyntaxError(message, position, hint)
