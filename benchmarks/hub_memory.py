"""Memory of converting a large hub dataset: streamed (what `psft-run` does) vs. read whole.

Builds hub-layout dataset directories (`data/train-*.parquet` + README `configs:`) of a small
and a large number of chat rows, then, each in a fresh interpreter, measures peak resident
memory (ru_maxrss) and time of:

    baseline   import `datasets` and the project, read nothing (the fixed cost)
    streamed   `data.prepare.write_prepared`: files resolved by `datasets`, read in batches by
               `data.formats`, converted, written as JSONL (what `psft-run` does)
    ds_stream  the same through `datasets.load_dataset(..., streaming=True)` (arrow batches)
    eager      `datasets.load_dataset(..., split=...)` materialised as a list, then converted

Bounded memory means: the large size costs about what the small one does. Printed as memory
above the baseline, and as large/small ratios measured in the same run.

    .venv/bin/python benchmarks/hub_memory.py [--rows 100000] [--small 20000] [--row-chars 600]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SETUP = """
import json, os, resource, sys, time
from pathlib import Path
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=sys.argv[3])
import datasets
from psft_orchestrator.data import prepare, schemas
from psft_orchestrator.data.hub import open_source
root, mode = Path(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
"""
MODES = {
    "baseline": "n = 0",
    "streamed": """
src = open_source(root, None, "train")
p = prepare.PreparedInput("big", "dataset", "auto", {}, "k" * 64, src)
n = prepare.write_prepared(p, root.parent / "streamed.jsonl")
""",
    "ds_stream": """
stream = datasets.load_dataset(str(root), split="train", streaming=True).with_format("arrow")
n = 0
with open(root.parent / "ds_stream.jsonl", "w") as f:
    for table in stream.iter(batch_size=1024):
        for r in table.to_pylist():
            f.write(json.dumps(schemas.convert_row(r, "dataset"), ensure_ascii=False) + "\\n")
            n += 1
""",
    "eager": """
rows = list(datasets.load_dataset(str(root), split="train"))
out = [schemas.convert_row(r, "dataset") for r in rows]
with open(root.parent / "eager.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\\n" for r in out)
n = len(out)
""",
}
REPORT = """
print(json.dumps({"rows": n, "seconds": time.perf_counter() - t0,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build(root: Path, rows: int, row_chars: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    filler = ("lorem ipsum " * (row_chars // 12 + 1))[: row_chars // 2]
    batch = 10_000
    schema = None
    writer = None
    for start in range(0, rows, batch):
        chunk = [
            {
                "prompt": f"question {i} {filler}",
                "prompt_id": str(i),
                "messages": [
                    {"role": "user", "content": f"question {i} {filler}"},
                    {"role": "assistant", "content": f"answer {i} {filler}"},
                ],
            }
            for i in range(start, min(rows, start + batch))
        ]
        table = pa.Table.from_pylist(chunk, schema=schema)
        if writer is None:
            schema = table.schema
            writer = pq.ParquetWriter(root / "data" / "train-00000-of-00001.parquet", schema)
        writer.write_table(table, row_group_size=batch)
    writer.close()
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*\n---\n"
    )


def measure(mode: str, root: Path, ds_cache: Path) -> dict:
    code = SETUP + MODES[mode] + REPORT
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), mode, str(ds_cache)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--row-chars", type=int, default=600)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hub_memory-"))
    peaks: dict[tuple[str, int], float] = {}
    base = measure("baseline", _built(tmp, args.small, args.row_chars), tmp / "hf")["peak_mib"]
    print(f"baseline (imports only): {base:.0f} MiB peak RSS")
    print(f"{'mode':<10} {'rows':>8} {'peak MiB':>9} {'above baseline':>15} {'seconds':>8}")
    for rows in (args.small, args.rows):
        root = _built(tmp, rows, args.row_chars)
        for mode in ("streamed", "ds_stream", "eager"):
            r = measure(mode, root, tmp / f"hf-{rows}")  # `datasets` caches eager loads by dir name
            assert r["rows"] == rows, r
            peaks[mode, rows] = r["peak_mib"] - base
            print(
                f"{mode:<10} {rows:>8} {r['peak_mib']:>9.0f} {peaks[mode, rows]:>15.0f} {r['seconds']:>8.1f}"
            )
        same = {
            (root.parent / f"{m}.jsonl").read_bytes() for m in ("streamed", "ds_stream", "eager")
        }
        print(f"  the three outputs are identical: {len(same) == 1}")
    for mode in ("streamed", "ds_stream", "eager"):
        ratio = peaks[mode, args.rows] / max(peaks[mode, args.small], 1.0)
        print(f"{mode}: memory above baseline, {args.rows} rows / {args.small} rows = {ratio:.2f}")


def _built(tmp: Path, rows: int, row_chars: int) -> Path:
    root = tmp / f"rows{rows}" / "big"
    if not root.exists():
        build(root, rows, row_chars)
    return root


if __name__ == "__main__":
    main()
