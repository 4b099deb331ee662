"""Spec errors that name the file, line and key, and say what to do.

Every problem with user input (a spec, a preset, a template, a `--set` override) is raised as a
`SpecError`; the CLI prints it and exits with status 2 before anything is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Loc:
    """Where a value came from: a file and a 1-based line (0 = unknown)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def key_path(path: Path_) -> str:
    """('stages', 2, 'kl', 'coef') -> 'stages[2].kl.coef'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def closest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


class SpecError(Exception):
    """One or more problems with user input; `str()` is the message shown to the user."""

    def __init__(self, problems: list[tuple[Loc | None, str, str]]):
        # Each problem: (location, key path, message).
        self.problems = problems
        super().__init__(self.render())

    @classmethod
    def one(cls, loc: Loc | None, key: str, message: str) -> SpecError:
        return cls([(loc, key, message)])

    def render(self) -> str:
        lines = []
        for loc, key, message in self.problems:
            where = f"{loc}: " if loc else ""
            at = f"{key}: " if key else ""
            lines.append(f"error: {where}{at}{message}")
        return "\n".join(lines)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'lr'?)' or ''; plus the valid choices when they are few."""
    choices = sorted(set(map(str, choices)))
    if not choices:
        return ""
    hint = closest(word, choices)
    if hint:
        return f" (did you mean {hint!r}?)"
    if len(choices) <= 12:
        return f" (valid: {', '.join(choices)})"
    return ""
