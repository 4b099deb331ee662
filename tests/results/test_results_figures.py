from __future__ import annotations

from pathlib import Path

import pytest

from psft_orchestrator.cli.results import main
from psft_orchestrator.results import figures, store
from psft_orchestrator.results.ingest import reindex


def _png_ok(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas


def test_training_dynamics(workspace: Path) -> None:
    reindex(workspace)
    with store.reader(workspace) as con:
        fig = figures.training_dynamics(
            con,
            figures.Selection(where=[("stage", "train")]),
            ["entropy", "loss", "clipfrac", "grad_norm"],
        )
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["entropy", "loss", "clipfrac", "grad_norm"]
    assert len(axes[0].lines) == 4  # 2 methods x 2 seeds
    assert len(axes[2].lines) == 2  # only PSFT logs clipfrac
    labels = {ln.get_label() for ln in axes[0].lines}
    assert labels == {"SFT (seed 1)", "SFT (seed 2)", "PSFT (seed 1)", "PSFT (seed 2)"}
    assert all(len(ln.get_xdata()) == 20 for ln in axes[0].lines)


def test_eval_vs_step_and_dpo(workspace: Path) -> None:
    reindex(workspace)
    with store.reader(workspace) as con:
        fig = figures.eval_vs_step(con, figures.Selection(), ["toy_math"])
        ax = fig.axes[0]
        assert ax.get_title() == "toy_math"
        assert sorted(ln.get_label() for ln in ax.lines) == ["PSFT", "SFT"]
        assert list(ax.lines[0].get_xdata()) == [5, 10, 15]
        fig = figures.dpo_rewards(con, figures.Selection())
        assert sorted(
            ln.get_label() for ln in fig.axes[0].lines if not ln.get_label().startswith("_")
        ) == ["chosen", "rejected"]
        fig = figures.clipped_tokens(con, figures.Selection(where=[("method", "PSFT")]), top=5)
        bars = fig.axes[0].patches
        assert len(fig.axes) == 2 and len(bars) == 3
        assert max(b.get_width() for b in bars) == 8  # "wait": 5 + 3


@pytest.mark.parametrize("kind", ["dynamics", "eval", "dpo-rewards", "clipped-tokens"])
def test_plot_command_writes_png(workspace: Path, tmp_path: Path, kind: str) -> None:
    reindex(workspace)
    out = tmp_path / f"{kind}.png"
    assert main(["--workspace", str(workspace), "plot", kind, "--out", str(out)]) == 0
    _png_ok(out)


def test_plot_with_nothing_to_draw(workspace: Path, capsys) -> None:
    reindex(workspace)
    assert main(["--workspace", str(workspace), "plot", "dynamics", "--keys", "no_such_key"]) == 1
    assert "no selected node logged" in capsys.readouterr().err
