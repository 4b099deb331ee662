from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from synthetic_nodes import BENCHES, SEEDS, score_of

from psft_orchestrator.cli.results import main
from psft_orchestrator.results import store
from psft_orchestrator.results.ingest import reindex
from psft_orchestrator.results.tables import (
    TableDefError,
    compute_table,
    get_definition,
    load_definition,
    pivot,
    publish_tables,
    tables_dirs,
)

# The paper's reported numbers, as the project keeps them (copied from shared/reference).
PAPER_CSV = Path(__file__).resolve().parents[2] / "results" / "paper_results.csv"


def _expected_from_csv(table: str) -> dict[tuple[str, str], dict[str, str]]:
    """Cells and Avg. as the paper prints them (else 2-decimal means), computed here
    independently of the results package."""
    rows: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    printed: dict[tuple[str, str], str] = {}
    with PAPER_CSV.open() as f:
        for rec in csv.DictReader(f):
            if rec["table"] == table:
                rows[(rec["model"], rec["method"])][rec["benchmark"]] = rec["score"]
                if rec.get("reported_avg"):
                    printed[(rec["model"], rec["method"])] = rec["reported_avg"]
    for key, cells in rows.items():
        vals = [Decimal(v) for k, v in cells.items()]
        mean = (sum(vals) / len(vals)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        cells["Avg."] = printed.get(key, str(mean))
    return rows


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def paper_ws(tmp_path: Path, capsys) -> Path:
    ws = tmp_path / "paper"
    rc, out, _ = _run(capsys, "--workspace", str(ws), "import", str(PAPER_CSV), "--source", "paper")
    assert rc == 0 and "imported" in out
    return ws


def _parse_markdown(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("|:")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def _parse_latex(text: str) -> list[list[str]]:
    body = (
        text.split("\\midrule")[0].split("\\toprule")[1].strip(),
        text.split("\\midrule")[1].split("\\bottomrule")[0],
    )
    rows = [body[0], *body[1].strip().splitlines()]
    out = []
    for r in rows:
        cells = [c.strip() for c in r.rstrip("\\ ").split(" & ")]
        out.append([c.replace("\\_", "_").replace("$\\to$", "->") for c in cells])
    return out


def _number(cell: str) -> str:
    return re.match(r"-?\d+\.\d+", cell).group(0)


@pytest.mark.parametrize("table", ["1", "2", "5"])
@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_paper_tables_reproduce_the_csv(paper_ws: Path, capsys, table: str, fmt: str) -> None:
    expected = _expected_from_csv(table)
    rc, out, err = _run(
        capsys,
        "--workspace",
        str(paper_ws),
        "table",
        f"table{table}",
        "--source",
        "paper",
        "--format",
        fmt,
    )
    assert rc == 0, err
    grid = {
        "markdown": _parse_markdown,
        "latex": _parse_latex,
        "csv": lambda t: list(csv.reader(io.StringIO(t))),
    }[fmt](out)
    head, body = grid[0], grid[1:]
    assert head[:2] == ["model", "method"]
    assert len(body) == len(expected)
    has_avg = "Avg." in head
    assert has_avg == (table != "5")  # the paper prints no Avg. for Table 5
    for row in body:
        cells = expected[(row[0], row[1])]
        for h, cell in zip(head[2:], row[2:], strict=False):
            if h == "notes":
                continue
            want = cells[h]
            assert _number(cell) == f"{Decimal(want):.2f}", (row[:2], h)


def test_reported_average_mismatch_is_footnoted(paper_ws: Path, capsys) -> None:
    # Independently: which rows' reported Avg. differs from the mean of their scores by > 0.01?
    bad = []
    reported = {}
    with PAPER_CSV.open() as f:
        for rec in csv.DictReader(f):
            if rec["table"] == "1" and rec["reported_avg"]:
                reported[(rec["model"], rec["method"])] = Decimal(rec["reported_avg"])
    for key, cells in _expected_from_csv("1").items():
        vals = [Decimal(v) for k, v in cells.items() if k != "Avg."]
        if abs(reported[key] - sum(vals) / len(vals)) > Decimal("0.01"):
            bad.append(key)
    assert bad, "the paper's CSV has at least one inconsistent average"
    rc, out, _ = _run(capsys, "--workspace", str(paper_ws), "table", "table1", "--source", "paper")
    assert rc == 0
    for model, method in bad:
        assert f"for {model} / {method} (shown); the mean of the row's" in out
        line = next(ln for ln in out.splitlines() if f"| {model} | {method} |" in ln)
        assert line.rstrip(" |").endswith("¹") or re.search(r"[¹²³⁴⁵⁶⁷⁸⁹]", line)
        assert f"{reported[(model, method)]:.2f}" in line  # the printed Avg., not our mean


def test_round_trip_from_synthetic_runs(workspace: Path, capsys) -> None:
    reindex(workspace)
    rc, out, err = _run(
        capsys, "--workspace", str(workspace), "table", "toy_all", "--format", "csv"
    )
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["method"] for r in rows] == ["SFT", "PSFT"]  # the definition's row order
    headers = [*BENCHES[:1], *sorted(BENCHES[1:]), "Avg."]
    assert list(rows[0])[2:] == ["n", *(x for h in headers for x in (h, f"{h} ci95"))]
    # Two seeds one point apart: sd = 1/sqrt(2), se = 1/2, t(0.975, df=1) = 12.7062 (t table).
    ci_two_seeds = 12.7062047 * 0.5
    for r in rows:
        assert r["n"] == str(len(SEEDS))
        means = []
        for b in BENCHES:
            mean = sum(score_of(r["method"], s, b) for s in SEEDS) / len(SEEDS)
            means.append(mean)
            assert float(r[b]) == pytest.approx(mean, abs=0.005)
            assert float(r[f"{b} ci95"]) == pytest.approx(ci_two_seeds, abs=0.005)
        assert float(r["Avg."]) == pytest.approx(sum(means) / len(means), abs=0.005)
        assert float(r["Avg. ci95"]) == pytest.approx(ci_two_seeds, abs=0.005)


def test_with_paper_interleaves_rows(workspace: Path, capsys, tmp_path: Path) -> None:
    ext = tmp_path / "toy_paper.csv"
    ext.write_text("table,model,method,benchmark,score,reported_avg\ntoy,toy,PSFT,toy_math,12.5,\n")
    tdir = tmp_path / "defs"
    tdir.mkdir()
    (tdir / "toy_paper.yaml").write_text(
        "paper_table: toy\nrows: [model, method]\ncolumns:\n  - {header: toy_math, benchmark: toy_math}\navg: false\n"
    )
    reindex(workspace)
    assert (
        _run(capsys, "--workspace", str(workspace), "import", str(ext), "--source", "paper")[0] == 0
    )
    rc, out, err = _run(
        capsys,
        "--workspace",
        str(workspace),
        "table",
        "toy_paper",
        "--with-paper",
        "--tables-dir",
        str(tdir),
        "--format",
        "csv",
    )
    assert rc == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["model", "method", "source", "n", "toy_math", "toy_math ci95"]
    ci = "6.35"  # two seeds one point apart: t(0.975, 1) * 0.5
    assert rows[1:] == [
        [
            "toy",
            "PSFT",
            "ours",
            "2",
            f"{(score_of('PSFT', 1, 'toy_math') + score_of('PSFT', 2, 'toy_math')) / 2:.2f}",
            ci,
        ],
        ["toy", "PSFT", "paper", "", "12.50", ""],
        [
            "toy",
            "SFT",
            "ours",
            "2",
            f"{(score_of('SFT', 1, 'toy_math') + score_of('SFT', 2, 'toy_math')) / 2:.2f}",
            ci,
        ],
    ]
    # ...and the import survives a reindex (kept under <workspace>/external/)
    reindex(workspace)
    assert (
        _run(
            capsys,
            "--workspace",
            str(workspace),
            "table",
            "toy_paper",
            "--with-paper",
            "--tables-dir",
            str(tdir),
            "--format",
            "csv",
        )[1]
        == out
    )


def test_every_shipped_definition_loads() -> None:
    from psft_orchestrator.results.tables import load_definitions

    defs = load_definitions(tables_dirs())
    assert {
        "table1",
        "table2",
        "table3",
        "table4",
        "table5",
        "toy_all",
        "toy_in_domain",
        "toy_ood",
    } <= set(defs)
    assert [c.header for c in defs["table1"].columns] == list(
        _expected_from_csv("1")[("Qwen2.5-7B-Instruct", "SFT")]
    )[:-1]
    assert [c.header for c in defs["table2"].columns] == list(
        _expected_from_csv("2")[("Qwen2.5-7B-Instruct", "SFT")]
    )[:-1]


def test_bad_definition_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        "title: x\nrows: [model]\ncolumns:\n  - header: A\n    benchmark: a\n    metrc: avg@8\n"
    )
    with pytest.raises(TableDefError) as e:
        load_definition(p)
    assert f"{p}:6" in str(e.value) and "metrc" in str(e.value)


def test_filters_and_pivot_cannot_inject_sql(workspace: Path, tmp_path: Path, capsys) -> None:
    reindex(workspace)
    evil = "x'; DROP TABLE nodes; --"
    tdir = tmp_path / "defs"
    tdir.mkdir()
    (tdir / "evil.yaml").write_text(
        f'rows: [model, method]\ncolumns: auto\nfilter:\n  spec: "{evil}"\n  labels: {{method: "{evil}"}}\n'
    )
    with store.reader(workspace) as con:
        grid = compute_table(con, get_definition("evil", [tdir]))
        assert grid.rows == []
        g = pivot(con, ["method"], ["benchmark"], [("method", evil)])
        assert g.rows == []
        assert con.execute("SELECT count(*) FROM nodes").fetchall()[0][0] == 9
    # a field name that is not a field or label is refused (exit 2), whatever it contains
    rc, _, err = _run(
        capsys,
        "--workspace",
        str(workspace),
        "pivot",
        "--rows",
        "method; DROP TABLE nodes",
        "--cols",
        "benchmark",
    )
    assert rc == 2 and "unknown field" in err
    rc, _, err = _run(
        capsys,
        "--workspace",
        str(workspace),
        "pivot",
        "--rows",
        "method",
        "--cols",
        "benchmark",
        "--where",
        f"{evil}=1",
    )
    assert rc == 2
    with pytest.raises(TableDefError):
        (tdir / "evil2.yaml").write_text('rows: ["model); DROP TABLE nodes; --"]\ncolumns: auto\n')
        load_definition(tdir / "evil2.yaml")


def test_pivot_by_label_and_metrics(workspace: Path, capsys) -> None:
    reindex(workspace)
    rc, out, err = _run(
        capsys,
        "--workspace",
        str(workspace),
        "pivot",
        "--rows",
        "method",
        "--cols",
        "seed",
        "--where",
        "benchmark=toy_math",
        "--where",
        "metric=avg@4",
        "--where",
        "kind=eval",
        "--format",
        "csv",
    )
    assert rc == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["method", "1", "2"]
    # final (step null) and intermediate toy_math scores both match: mean over them
    for method, *vals in rows[1:]:
        for seed, v in zip(SEEDS, vals, strict=True):
            want = (score_of(method, seed, "toy_math") + 5 + 10 + 15) / 4
            assert float(v) == pytest.approx(want, abs=0.005)
    rc, out, _ = _run(
        capsys,
        "--workspace",
        str(workspace),
        "pivot",
        "--from",
        "metrics",
        "--rows",
        "method",
        "--cols",
        "key",
        "--where",
        "key=loss",
        "--format",
        "csv",
    )
    assert rc == 0 and list(csv.reader(io.StringIO(out)))[1][1] == f"{2.0 / 20:.2f}"


def test_publish_tables(workspace: Path) -> None:
    assert publish_tables(workspace, "demo") == []  # no index yet
    reindex(workspace)
    published = dict(publish_tables(workspace, "demo"))
    assert {"toy_all", "toy_in_domain", "toy_ood"} <= set(published)
    assert "table1" not in published
    assert "| toy | PSFT |" in published["toy_in_domain"]
    assert publish_tables(workspace, "other-spec") == []
