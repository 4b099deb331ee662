"""Safe YAML loading that remembers where every key came from.

`load_yaml(path)` returns a `Doc`: plain Python data (dicts, lists, scalars) plus a map from
key path to `Loc(file, line)`, so that schema errors can point at `file:line`. Loading is
safe by construction: only the YAML core schema's tags are accepted (no Python objects),
aliases are counted to stop "billion laughs" documents, and files are size-limited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Loc, Path_, SpecError

MAX_BYTES = 1_000_000  # a spec is a few KB; anything this big is a mistake or an attack
MAX_NODES = 20_000  # values after alias expansion (a real spec has a few hundred)

_STD_TAGS = {
    "tag:yaml.org,2002:" + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary", "merge")
}


@dataclass
class Doc:
    """A loaded YAML document: its data and the location of every key path."""

    data: Any
    locs: dict[Path_, Loc] = field(default_factory=dict)
    file: str = ""

    def loc(self, path: Path_) -> Loc:
        """Location of `path`, or of its nearest located ancestor."""
        for n in range(len(path), -1, -1):
            hit = self.locs.get(tuple(path[:n]))
            if hit:
                return hit
        return Loc(self.file)


def load_yaml(path: str | Path, display: str | None = None) -> Doc:
    """Read and parse a YAML file safely; raise SpecError naming the file and line on any problem."""
    path = Path(path)
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError.one(Loc(name), "", "file not found") from None
    except IsADirectoryError:
        raise SpecError.one(Loc(name), "", "is a directory, expected a YAML file") from None
    except OSError as e:
        raise SpecError.one(Loc(name), "", f"cannot read file: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise SpecError.one(
            Loc(name), "", f"file is {len(raw):,} bytes; specs are limited to {MAX_BYTES:,}"
        )
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise SpecError.one(
            Loc(name, line), "", "binary file (contains NUL bytes), expected YAML text"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError.one(
            Loc(name, raw.count(b"\n", 0, e.start) + 1),
            "",
            f"not UTF-8 text (byte {e.start}), expected YAML",
        ) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> Doc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        # An unclosed bracket or quote is reported at the end of the file; point at its start.
        if e.context_mark and mark and mark.line >= text.count("\n"):
            mark = e.context_mark
        line = mark.line + 1 if mark else 0
        problem = e.problem or e.context or "invalid YAML"
        raise SpecError.one(Loc(name, line), "", f"YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a control character)
        line = text.count("\n", 0, e.position) + 1
        raise SpecError.one(
            Loc(name, line), "", f"YAML error: character {e.character!r} is not allowed in YAML"
        ) from None
    except yaml.YAMLError as e:
        raise SpecError.one(Loc(name), "", f"YAML error: {e}") from None
    if node is None:
        raise SpecError.one(Loc(name, 1), "", "file is empty, expected a mapping")
    doc = Doc(None, {}, name)
    counter = [0]
    doc.data = _build(node, (), doc, counter)
    return doc


def _build(node: yaml.Node, path: Path_, doc: Doc, counter: list[int]) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise SpecError.one(
            Loc(doc.file, node.start_mark.line + 1),
            "",
            f"document expands to more than {MAX_NODES:,} values (alias bomb?)",
        )
    loc = Loc(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)
    doc.locs.setdefault(path, loc)
    if node.tag not in _STD_TAGS:
        raise SpecError.one(
            loc, _kp(path), f"YAML tag {node.tag!r} is not allowed (specs are plain data)"
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError.one(
                    loc,
                    _kp(path),
                    "YAML merge keys (<<) are not supported; use extends: or preset:",
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError.one(loc, _kp(path), "mapping keys must be plain scalars")
            key = str(yaml.SafeLoader.construct_scalar(yaml.SafeLoader(""), key_node))
            key_loc = Loc(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                raise SpecError.one(key_loc, _kp((*path, key)), "duplicate key")
            doc.locs[(*path, key)] = key_loc
            out[key] = _build(value_node, (*path, key), doc, counter)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, counter) for i, item in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise SpecError.one(loc, _kp(path), f"invalid value: {e}") from None


def _kp(path: Path_) -> str:
    from .errors import key_path

    return key_path(path)
