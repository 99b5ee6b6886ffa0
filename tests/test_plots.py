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
        # Training time: the set-up before the first epoch is subtracted.
        h = histories[0]
        setup = getattr(h, "setup_seconds", None)
        setup = h.seconds[0] if setup is None else setup
        np.testing.assert_allclose(xs, np.maximum(np.array(h.seconds) - setup, 0))
        assert "set-up excluded" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["GD, lr 0.2",
                                                                        "PWO, lr 0.2"]
    assert lines[0].get_color() != lines[1].get_color()
    assert lines[0].get_linestyle() != lines[1].get_linestyle()


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


def _carried_median(runs, key="loss"):
    """Independent median over seeds per epoch, each run keeping its last value."""
    n = max(len(r[key]) for r in runs)
    Y = np.array([r[key] + [r[key][-1]] * (n - len(r[key])) for r in runs], dtype=float)
    return np.median(Y, axis=0), np.percentile(Y, 25, axis=0), np.percentile(Y, 75, axis=0)


def test_comparison_figure(results, tmp_path):
    fig = plot_comparison(results)
    ax_e, ax_s = fig.axes
    assert ax_e.get_xlabel() == "epoch" and "set-up excluded" in ax_s.get_xlabel()
    assert "median of 3 seeds, band: interquartile range" in fig._suptitle.get_text()
    best = results["summary"]["best"]
    target = results["settings"]["target_loss"]
    for ax in (ax_e, ax_s):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0].startswith(f"GD (lr {best['gd+sgd']['lr']:g}): ")
        assert labels[1].startswith(f"PWO (lr {best['pwo+sgd']['lr']:g}): ")
        assert "target 0.3" in labels
    lines = ax_e.get_lines()
    assert len(lines) == 2 + 1          # one median line per optimizer, the target
    assert lines[0].get_color() != lines[1].get_color()
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    title = ax_e.get_title()
    for i, (opt, name) in enumerate((("gd", "GD"), ("pwo", "PWO"))):
        runs = [r for r in results["runs"] if r["optimizer"] == opt
                and r["lr"] == best[f"{opt}+sgd"]["lr"]]
        med, q25, q75 = _carried_median(runs)
        xs, ys = lines[i].get_data()
        np.testing.assert_allclose(ys, med[:len(ys)])
        # The title is read off the drawn median curve.
        first = np.flatnonzero(med < target)
        text = f"{first[0]} epochs" if first.size else "not reached"
        assert f"{name}: {text}" in title
        assert ax_e.get_legend().get_texts()[i].get_text().endswith(f"): {text}")
        # The band is the interquartile range.
        band = ax_e.collections[i].get_paths()[0].vertices
        assert band[:, 1].min() == pytest.approx(q25[:len(ys)].min())
        assert band[:, 1].max() == pytest.approx(q75[:len(ys)].max())
    assert "set-up before the first epoch excluded" in ax_s.get_title()
    for i, opt in enumerate(("gd", "pwo")):
        runs = [r for r in results["runs"] if r["optimizer"] == opt
                and r["lr"] == best[f"{opt}+sgd"]["lr"]]
        setup = np.median([r["setup_seconds"] for r in runs])
        assert ax_s.get_legend().get_texts()[i].get_text().endswith(
            f"; set-up {setup:.2g} s")
    path = save_figure(fig, tmp_path / "c.png")
    check_png(path)
    assert path.stat().st_size < 200_000
    assert not list(tmp_path.glob("*.tmp"))


def test_comparison_with_several_rules_draws_each_pair_differently(results):
    import copy
    res = copy.deepcopy(results)
    extra = []
    for r in res["runs"]:
        r2 = dict(r, update="adam", loss=[v * 0.9 for v in r["loss"]])
        extra.append(r2)
    res["runs"] += extra
    res["settings"]["updates"] = ["sgd", "adam"]
    from poswise.experiments import summarize
    res["summary"] = summarize(res)
    fig = plot_comparison(res, lr=0.3)
    lines = fig.axes[0].get_lines()[:4]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:4]
    assert [t.split(":")[0] for t in labels] == [
        "GD + SGD (lr 0.3)", "PWO + SGD (lr 0.3)", "GD + Adam (lr 0.3)",
        "PWO + Adam (lr 0.3)"]
    assert len({(ln.get_color(), ln.get_linestyle()) for ln in lines}) == 4
    assert len({ln.get_color() for ln in lines}) == 2    # the rule's colour
    assert len({ln.get_linestyle() for ln in lines}) == 2  # the schedule's style
    fig = plot_lr_sweep(res)
    assert len(fig.axes[0].get_legend().get_texts()) >= 4


@pytest.mark.parametrize("fmt, magic", [("png", PNG_SIGNATURE), ("pdf", b"%PDF"),
                                        ("svg", b"<?xml")])
def test_save_figure_formats(results, tmp_path, fmt, magic):
    path = save_figure(plot_comparison(results), tmp_path / f"c.{fmt}")
    assert path.read_bytes()[:len(magic)] == magic
    assert [p.name for p in tmp_path.iterdir()] == [f"c.{fmt}"]
    with pytest.raises(ValueError, match="format must be one of png, pdf, svg"):
        save_figure(plot_comparison(results), tmp_path / "c.gif")


def test_comparison_at_one_lr_and_other_curves(results):
    fig = plot_comparison(results, lr=0.05, key="val_loss")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [t.split(":")[0] for t in labels[:2]] == ["GD (lr 0.05)", "PWO (lr 0.05)"]
    assert len(fig.axes[0].get_lines()) == 2       # no target line for val_loss
    assert len(plot_comparison(results, lr=0.05, per_seed=True).axes[0].get_lines()) \
        == 2 * (3 + 1) + 1
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
    assert title.startswith("Epochs until the median curve < paper threshold 1.5")
    e = res["summary"]["by_lr"][0]["paper_crossings"][0]["epochs"]
    assert f"GD: {e:.0f} epochs" in title      # one seed: its own crossing
    assert "paper threshold 1.5" in [t.get_text()
                                     for t in fig.axes[0].get_legend().get_texts()]
    assert "1 seed" in fig._suptitle.get_text()
    title = plot_comparison(res).axes[0].get_title()
    final = res["summary"]["by_lr"][0]["final_loss"]
    assert title.startswith("Final training loss (median curve)")
    assert f"GD: {final:.4g}" in title
