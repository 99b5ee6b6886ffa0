"""Tests of poswise.plots: figures from histories, runs and comparison results."""
import json

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

matplotlib.use("Agg")

from poswise import MLP, GradientDescent, PositionWise  # noqa: E402
from poswise.compare import compare  # noqa: E402
from poswise.datasets import make_synthetic  # noqa: E402
from poswise.plots import plot_comparison, plot_loss_curves, plot_lr_sweep, \
    save_figure  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_samples=150, n_features=8, rng=0)


@pytest.fixture(scope="module")
def results(data):
    # Two lrs and a target one seed misses at the small lr: every branch of the figures.
    res = compare(data, hidden=(6, 4), lr=[0.05, 0.3], target_loss=0.3, max_epochs=150,
                  seeds=3)
    return json.loads(json.dumps(res))     # plots must work from results.json too


@pytest.fixture(scope="module")
def histories(data):
    net = MLP((8, 6, 1), rng=0)
    return [cls(0.2).fit(net.copy(), data.X_train, data.y_train, epochs=40)
            for cls in (GradientDescent, PositionWise)]


def check_png(path):
    import matplotlib.image as mpimg
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return img


@pytest.mark.parametrize("x", ["epoch", "seconds"])
def test_loss_curves_from_histories(histories, x):
    fig = plot_loss_curves(histories, x=x, target=0.3)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3          # two curves and the target line
    xs, ys = lines[0].get_data()
    np.testing.assert_allclose(ys, histories[0].loss)
    if x == "epoch":
        np.testing.assert_array_equal(xs, np.arange(41))
    else:
        np.testing.assert_allclose(xs, histories[0].seconds)
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["GD, lr 0.2",
                                                                        "PWO, lr 0.2"]
    assert lines[0].get_color() != lines[1].get_color()


def test_loss_curves_from_runs_into_given_axes(results):
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_loss_curves(results["runs"][:2], ax=ax, key="val_loss", logy=True,
                           labels=["a", "b"], title="t")
    assert out is fig and ax.get_yscale() == "log" and ax.get_title() == "t"
    assert plot_loss_curves(results["runs"][0]).axes[0].get_lines()


def test_loss_curves_errors(histories):
    with pytest.raises(ValueError, match="'x' parameter must be 'epoch' or 'seconds'"):
        plot_loss_curves(histories, x="time")
    with pytest.raises(ValueError, match="empty"):
        plot_loss_curves([])
    with pytest.raises(TypeError, match="curves must be"):
        plot_loss_curves(3)


def test_comparison_figure(results, tmp_path):
    fig = plot_comparison(results)
    ax_e, ax_s = fig.axes
    assert ax_e.get_xlabel() == "epoch" and ax_s.get_xlabel() == "wall time (s)"
    best = results["summary"]["best"]
    for ax in (ax_e, ax_s):
        title = ax.get_title()
        assert "GD:" in title and "PWO:" in title and "median of 3 seeds" in title
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert f"GD (lr {best['gd']['lr']:g}), median seed" in labels[0]
        assert "target 0.3" in labels
    e = best["gd"]["epochs_to_target"]
    assert f"GD: {e:.0f} epochs" in ax_e.get_title()
    # 3 thin lines + 1 median line per optimizer, plus the target line.
    assert len(ax_e.get_lines()) == 2 * (3 + 1) + 1
    path = save_figure(fig, tmp_path / "c.png")
    check_png(path)
    assert path.stat().st_size < 200_000


def test_comparison_at_one_lr_and_other_curves(results):
    fig = plot_comparison(results, lr=0.05, per_seed=False, key="val_loss")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("GD (lr 0.05)") and labels[1].startswith("PWO (lr 0.05)")
    assert len(fig.axes[0].get_lines()) == 2       # no target line for val_loss
    with pytest.raises(ValueError, match="'lr' parameter must be one of"):
        plot_comparison(results, lr=0.7)
    with pytest.raises(ValueError, match="No completed runs"):
        plot_comparison(results, key="paper_loss")


def test_lr_sweep_figure(results, tmp_path):
    fig = plot_lr_sweep(results)
    ax_e, ax_s = fig.axes
    assert ax_e.get_xscale() == "log" and ax_e.get_ylabel() == "epochs to target"
    assert [t.get_text() for t in ax_e.get_xticklabels()] == ["0.05", "0.3"]
    median_gd = ax_e.get_lines()[0]
    entries = [e for e in results["summary"]["by_lr"] if e["optimizer"] == "gd"
               and e["epochs_to_target"] is not None]
    np.testing.assert_allclose(median_gd.get_ydata(), [e["epochs_to_target"]
                                                       for e in entries])
    legend = [t.get_text() for t in ax_e.get_legend().get_texts()]
    assert "seed that missed the target (at its budget)" in legend
    check_png(save_figure(fig, tmp_path / "s.png"))


def test_lr_sweep_without_target(data):
    res = compare(data, hidden=(4,), lr=[0.05, 0.2], max_epochs=10, seeds=1)
    fig = plot_lr_sweep(res)
    assert fig.axes[0].get_ylabel() == "final training loss"
    assert fig.axes[1].get_ylabel() == "final validation accuracy"


def test_no_pyplot_figures_left_open(results):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    plot_comparison(results)
    plot_lr_sweep(results)
    assert plt.get_fignums() == before


def test_comparison_titles_for_the_papers_loss_and_without_target():
    ds = make_synthetic(n_samples=120, n_features=6, n_classes=3, rng=0)
    res = compare(ds, hidden=(6,), lr=0.3, max_epochs=20, seeds=1,
                  paper_loss_thresholds=[1.5])
    fig = plot_comparison(res, key="paper_loss")
    title = fig.axes[0].get_title()
    assert title.startswith("Epochs until the paper's loss < 1.5 (1 seed)")
    e = res["summary"]["by_lr"][0]["paper_crossings"][0]["epochs"]
    assert f"GD: {e:.0f} epochs" in title
    assert "paper threshold 1.5" in [t.get_text()
                                     for t in fig.axes[0].get_legend().get_texts()]
    title = plot_comparison(res).axes[0].get_title()
    final = res["summary"]["by_lr"][0]["final_loss"]
    assert title.startswith("Final training loss (1 seed)") and f"GD: {final:.4g}" in title
