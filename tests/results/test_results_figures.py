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
    assert len(axes[0].lines) == 2  # one line per method: the mean over its 2 seeds...
    assert len(axes[0].collections) == 2  # ...and a band for their spread
    assert len(axes[2].lines) == 1  # only PSFT logs clipfrac
    labels = {ln.get_label() for ln in axes[0].lines}
    assert labels == {"SFT (2 seeds)", "PSFT (2 seeds)"}
    assert all(len(ln.get_xdata()) == 20 for ln in axes[0].lines)
    # the same colour for a method in every panel
    colours = {(ln.get_label(), ln.get_color()) for ax in axes for ln in ax.lines}
    assert len({label for label, _ in colours}) == len(colours)


def test_dynamics_epochs_colours_and_no_pretraining(tmp_path: Path) -> None:
    """x is epochs when logged; pretraining is left out unless asked; mean and band over seeds."""
    from synthetic_nodes import write_node

    ws = tmp_path / "ws"
    for method, steps_per_epoch in (("SFT", 4), ("PSFT", 32)):  # PSFT: 8x the steps
        for seed in (1, 2, 3):
            rows = [
                {
                    "step": s,
                    "epoch": s / steps_per_epoch,
                    "ce": 2.0 - s / steps_per_epoch + seed / 10,
                }
                for s in range(1, 2 * steps_per_epoch + 1)
            ]
            labels = {"method": method, "seed": seed}
            write_node(ws, stage="train", kind=method.lower(), labels=labels, metrics=rows)
    write_node(
        ws,
        stage="pretrain",
        kind="pretrain",
        labels={"method": "pretrain"},
        metrics=[{"step": s, "ce": 9.0} for s in range(1, 5)],
    )
    reindex(ws)
    with store.reader(ws) as con:
        fig = figures.training_dynamics(con, figures.Selection(), ["ce"])
        ax = fig.axes[0]
        assert ax.get_xlabel() == "epoch"
        assert {ln.get_label() for ln in ax.lines} == {"SFT (3 seeds)", "PSFT (3 seeds)"}
        for ln in ax.lines:
            assert max(ln.get_xdata()) == 2.0  # both end at epoch 2 despite 8x the steps
            assert ln.get_color() == figures.method_colour(ln.get_label().split(" ")[0])
            xs, ys = list(ln.get_xdata()), list(ln.get_ydata())
            assert ys[xs.index(1.0)] == pytest.approx(2.0 - 1.0 + 0.2)  # mean of seeds .1 .2 .3
        fig = figures.training_dynamics(con, figures.Selection(), ["ce"], pretrain=True)
        assert "pretrain" in {ln.get_label() for ln in fig.axes[0].lines}


def test_plot_run_latest(workspace: Path, tmp_path: Path) -> None:
    reindex(workspace)
    out = tmp_path / "d.png"
    argv = ["--workspace", str(workspace), "plot", "dynamics", "--keys", "entropy"]
    assert main([*argv, "--run", "latest", "--out", str(out)]) == 0
    _png_ok(out)


def test_eval_vs_step_and_dpo(workspace: Path) -> None:
    reindex(workspace)
    with store.reader(workspace) as con:
        fig = figures.eval_vs_step(con, figures.Selection(), ["toy_math"])
        ax = fig.axes[0]
        assert ax.get_title() == "toy_math"
        assert sorted(ln.get_label() for ln in ax.lines) == ["PSFT (2 seeds)", "SFT (2 seeds)"]
        assert list(ax.lines[0].get_xdata()) == [5, 10, 15]
        assert ax.get_xlabel() == "step"  # the synthetic train nodes log no epoch
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


def test_eval_scores_against_epochs(tmp_path: Path) -> None:
    """Intermediate evals inside training nodes: x is the epoch logged at the score's step."""
    from synthetic_nodes import write_node

    ws = tmp_path / "ws"
    for method, steps_per_epoch in (("SFT", 2), ("PSFT", 16)):
        for seed in (1, 2):
            metrics = [
                {"step": s, "epoch": s / steps_per_epoch} for s in range(1, 2 * steps_per_epoch + 1)
            ]
            scores = [
                {
                    "suite": "m",
                    "benchmark": "toy_math",
                    "metric": "avg@1",
                    "value": 10.0 * e + seed,
                    "step": e * steps_per_epoch,
                }
                for e in (1, 2)
            ]
            write_node(
                ws,
                stage="train",
                kind=method.lower(),
                labels={"method": method, "seed": seed},
                metrics=metrics,
                scores=scores,
            )
    reindex(ws)
    with store.reader(ws) as con:
        ax = figures.eval_vs_step(con, figures.Selection(), ["toy_math"]).axes[0]
    assert ax.get_xlabel() == "epoch"
    for ln in ax.lines:
        assert list(ln.get_xdata()) == [1.0, 2.0]
        assert list(ln.get_ydata()) == [11.5, 21.5]  # mean of seeds 1 and 2
    assert len(ax.collections) == 2  # a seed band per method
