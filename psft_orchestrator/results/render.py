"""A computed table (`Grid`) and its renderings: markdown, LaTeX, CSV, JSON, plain text.

A cell may carry the half-width of its 95% confidence interval (`GridRow.cis`): markdown and
text show `mean ± ci`, LaTeX `$mean \\pm ci$`, CSV and JSON put it in a `<column> ci95` column.

Numbers are rounded half-up from their shortest decimal representation (so 37.985 shows
as 37.99, as a reader rounding by hand would), never through binary float rounding.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

FORMATS = ("markdown", "latex", "csv", "json")
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class GridRow:
    keys: list[str]
    values: list[float | None]
    marks: dict[int, int] = field(default_factory=dict)  # value index -> footnote number
    cis: list[float | None] = field(default_factory=list)  # CI half-width per value, if any


@dataclass
class Grid:
    """Row keys (e.g. model, method) on the left, numeric columns on the right."""

    title: str
    key_headers: list[str]
    value_headers: list[str]
    rows: list[GridRow]
    decimals: int = 2
    footnotes: list[str] = field(default_factory=list)

    def cell_text(self, row: GridRow, i: int, pm: str = " ± ") -> str:
        ci = self.ci_of(row, i)
        text = fmt(row.values[i], self.decimals)
        return (
            text if ci is None or row.values[i] is None else f"{text}{pm}{fmt(ci, self.decimals)}"
        )

    def ci_of(self, row: GridRow, i: int) -> float | None:
        return row.cis[i] if i < len(row.cis) else None

    @property
    def has_ci(self) -> bool:
        return any(c is not None for row in self.rows for c in row.cis)


def round_half_up(x: float, decimals: int) -> Decimal:
    return Decimal(repr(x)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def fmt(x: float | None, decimals: int) -> str:
    if x is None:
        return "–"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return str(round_half_up(x, decimals))


def render(grid: Grid, fmt_name: str) -> str:
    return {
        "markdown": to_markdown,
        "latex": to_latex,
        "csv": to_csv,
        "json": to_json,
        "table": to_text,
    }[fmt_name](grid)


def to_markdown(grid: Grid) -> str:
    head = [*grid.key_headers, *grid.value_headers]
    lines = [f"**{grid.title}**", ""] if grid.title else []
    lines.append("| " + " | ".join(_md(h) for h in head) + " |")
    lines.append(
        "|" + "|".join([":---"] * len(grid.key_headers) + ["---:"] * len(grid.value_headers)) + "|"
    )
    for row in grid.rows:
        cells = [_md(k) for k in row.keys]
        for i in range(len(row.values)):
            mark = str(row.marks[i]).translate(_SUPERSCRIPT) if i in row.marks else ""
            cells.append(grid.cell_text(row, i) + mark)
        lines.append("| " + " | ".join(cells) + " |")
    if grid.footnotes:
        lines.append("")
        lines += [
            f"{str(n).translate(_SUPERSCRIPT)} {_md(text)}"
            for n, text in enumerate(grid.footnotes, 1)
        ]
    return "\n".join(lines) + "\n"


def to_latex(grid: Grid) -> str:
    spec = "l" * len(grid.key_headers) + "r" * len(grid.value_headers)
    out = [f"% {grid.title}"] if grid.title else []
    out += [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(_tex(h) for h in [*grid.key_headers, *grid.value_headers]) + " \\\\",
        "\\midrule",
    ]
    for row in grid.rows:
        cells = [_tex(k) for k in row.keys]
        for i in range(len(row.values)):
            mark = f"$^{{{row.marks[i]}}}$" if i in row.marks else ""
            text = grid.cell_text(row, i, pm=" \\pm ").replace("–", "--")
            if grid.ci_of(row, i) is not None and row.values[i] is not None:
                text = f"${text}$"
            cells.append(text + mark)
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    for n, text in enumerate(grid.footnotes, 1):
        out.append(f"\\par{{\\footnotesize $^{{{n}}}$ {_tex(text)}}}")
    return "\n".join(out) + "\n"


def to_csv(grid: Grid) -> str:
    """Plain numbers (rounded to the table's decimals); footnotes go to a final `notes` column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    has_notes = bool(grid.footnotes)
    ci = grid.has_ci
    values_head = [x for h in grid.value_headers for x in ([h, f"{h} ci95"] if ci else [h])]
    w.writerow([*grid.key_headers, *values_head, *(["notes"] if has_notes else [])])
    for row in grid.rows:
        values = []
        for i, v in enumerate(row.values):
            values.append("" if v is None else fmt(v, grid.decimals))
            if ci:
                c = grid.ci_of(row, i)
                values.append("" if c is None or v is None else fmt(c, grid.decimals))
        notes = "; ".join(grid.footnotes[n - 1] for n in sorted(set(row.marks.values())))
        w.writerow([*row.keys, *values, *([notes] if has_notes else [])])
    return buf.getvalue()


def to_json(grid: Grid) -> str:
    rows: list[dict[str, Any]] = []
    for row in grid.rows:
        rec: dict[str, Any] = dict(zip(grid.key_headers, row.keys, strict=True))
        for i, h in enumerate(grid.value_headers):
            rec[h] = _json_number(row.values[i], grid.decimals)
            if grid.has_ci:
                rec[f"{h} ci95"] = _json_number(grid.ci_of(row, i), grid.decimals)
        if row.marks:
            rec["notes"] = [grid.footnotes[n - 1] for n in sorted(set(row.marks.values()))]
        rows.append(rec)
    return (
        json.dumps(
            {
                "title": grid.title,
                "columns": [*grid.key_headers, *grid.value_headers],
                "rows": rows,
                "footnotes": grid.footnotes,
            },
            indent=2,
        )
        + "\n"
    )


def _json_number(v: float | None, decimals: int) -> float | None:
    return None if v is None or v != v else float(round_half_up(v, decimals))


def to_text(grid: Grid) -> str:
    head = [*grid.key_headers, *grid.value_headers]
    body = [
        [*row.keys, *(grid.cell_text(row, i) for i in range(len(row.values)))] for row in grid.rows
    ]
    return text_table(head, body, right=set(range(len(grid.key_headers), len(head))))


def text_table(head: list[str], body: list[list[str]], right: set[int] | None = None) -> str:
    """Aligned plain-text columns for the terminal."""
    right = right or set()
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in body)]) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(text)).replace("->", r"$\to$")
