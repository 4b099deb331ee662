"""Hub datasets through the `datasets` library, offline: find, check at plan time, stream rows.

A hub source is a dataset repository snapshot in the local Hugging Face cache (`hf_id:`, with
`revision:`), or a local directory laid out the same way (`path:`): data files such as
`data/<split>-*.parquet` or `<config>/<split>-*.parquet`, and a README whose `configs:` block
names them. `datasets.load_dataset_builder` resolves the config and the split to files exactly
as the hub does; the files are then read in batches (Parquet, JSONL and Arrow by `data.formats`,
other formats by `datasets.load_dataset(..., streaming=True)`), so memory stays bounded whatever
the size. Nothing is ever downloaded: a dataset that is not in the cache is
an error that says how to fetch it on a machine with network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formats import FormatError, Row


class HubError(ValueError):
    """A hub dataset that cannot be used as declared (missing, unknown split or config)."""


class NotInCache(HubError):
    pass


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps repositories (HF_HUB_CACHE, else HF_HOME/hub), read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def download_hint(repo: str, revision: str) -> str:
    rev = "" if revision == "main" else f" --revision {revision}"
    return (
        f"on a machine with network run `huggingface-cli download {repo} --repo-type dataset{rev}` "
        f"(`hf download ...` with huggingface_hub >= 1.0) and copy "
        f"datasets--{repo.replace('/', '--')} into {hub_cache_dir()}"
    )


def find_snapshot(repo: str, revision: str = "main") -> Path:
    """The local snapshot directory of a dataset repo at `revision`; NotInCache when absent."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        return Path(
            snapshot_download(
                repo,
                repo_type="dataset",
                revision=revision,
                cache_dir=str(cache),
                local_files_only=True,
            )
        )
    except Exception as e:  # LocalEntryNotFoundError, or a malformed cache
        raise NotInCache(
            f"dataset {repo} (revision {revision}) is not in the local Hugging Face cache "
            f"{cache} ({type(e).__name__}); nothing is downloaded here: {download_hint(repo, revision)}"
        ) from None


def is_hub_layout(path: Path) -> bool:
    """A directory that `datasets.load_dataset` reads (not a `save_to_disk` directory)."""
    return (
        path.is_dir()
        and not (path / "dataset_dict.json").exists()
        and not (path / "state.json").exists()
    )


@dataclass(frozen=True)
class HubSource:
    """One config and split of a hub-layout directory, with the files they resolve to."""

    root: Path
    config: str  # the resolved config name ("default" when the card names none)
    split: str
    files: tuple[Path, ...]
    load_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)


def _datasets():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a local directory needs no network
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def open_source(root: Path, config: str | None, split: str) -> HubSource:
    """Resolve `config` and `split` of the hub-layout directory `root`; HubError lists the valid ones."""
    ds = _datasets()
    try:
        configs = ds.get_dataset_config_names(str(root))
    except Exception as e:
        raise HubError(f"{root}: not a dataset directory `datasets` can read ({e})") from None
    if config is not None and config not in configs:
        raise HubError(f"{root}: no config {config!r}; it has {configs}")
    try:
        builder = ds.load_dataset_builder(str(root), name=config)
    except ValueError as e:  # several configs and none chosen
        raise HubError(f"{root}: choose one with `config:` ({e}); it has {configs}") from None
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise HubError(
            f"{root}: config {builder.config.name!r} has no split {split!r}; it has {sorted(data_files)}"
        )
    files = tuple(Path(f) for f in data_files[split])
    return HubSource(root, builder.config.name, split, files, {"name": builder.config.name})


# Data files read by our own batched readers (data.formats); anything else (CSV, JSON arrays)
# streams through `datasets`. Measured (benchmarks/hub_memory.py): `datasets` streaming imports
# torch when it is installed (~0.6 GiB and tens of seconds, whatever the data size), and its
# per-row iteration is ~30x slower than a pyarrow batch reader; both stay bounded in rows.
OWN_READERS = (".parquet", ".jsonl", ".ndjson", ".arrow")


def iter_source(src: HubSource, batch_rows: int = 1024) -> Iterator[Row]:
    """The split's rows in the files `datasets` resolved, streamed in batches (bounded memory)."""
    if all(f.suffix in OWN_READERS for f in src.files):
        from .formats import iter_rows

        for f in src.files:
            yield from iter_rows(f, batch_rows)
        return
    ds = _datasets()
    stream = ds.load_dataset(str(src.root), split=src.split, streaming=True, **src.load_kwargs)
    for table in stream.with_format("arrow").iter(batch_size=batch_rows):
        yield from table.to_pylist()


def first_row(src: HubSource) -> Row:
    for row in iter_source(src):
        return row
    raise FormatError(f"{src.root}: split {src.split!r} of config {src.config!r} has no rows")


def source_key(src: HubSource, selection: dict[str, Any]) -> str:
    """Content key of the selected rows: the data files (path inside the root and bytes), the
    config and split, and how they are converted. A snapshot in the cache and the same files at
    `path:` get the same key."""
    from psft_orchestrator.hashing import content_hash

    files = [[_relative(f, src.root), content_hash(f)] for f in sorted(src.files)]
    payload = {"files": files, "config": src.config, "split": src.split, **selection}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _relative(path: Path, root: Path) -> str:
    for base in (root, root.resolve()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return path.name
