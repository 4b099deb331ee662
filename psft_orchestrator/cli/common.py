"""Things both CLIs share: exit codes and the --workspace option."""

from __future__ import annotations

import argparse
import os

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def default_workspace() -> str | None:
    """`$PSFT_WORKSPACE`, else None (meaning: the spec's workspace, default `results/`)."""
    return os.environ.get("PSFT_WORKSPACE") or None


def workspace_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workspace",
        default=default_workspace(),
        metavar="DIR",
        help="where artifacts, the DuckDB index and tables live (default: $PSFT_WORKSPACE, else the spec's, else results/)",
    )
