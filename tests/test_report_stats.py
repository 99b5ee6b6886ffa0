"""Tests of poswise.experiments.stats and the statistics in compare's summary, each
against an independent computation (numpy, scipy, a count by hand)."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from poswise.compare import compare
from poswise.datasets import make_synthetic
from poswise.experiments import stats


def test_lr_grid_is_geometric_in_sqrt2_steps():
    grid = stats.lr_grid(0.005, 0.04)
    ref = np.geomspace(0.005, 0.04, 7)
    np.testing.assert_allclose(grid, ref, rtol=1e-5)
    assert grid[2] == 0.01 and grid[-1] == 0.04
    assert stats.parse_lr_grid("0.005:0.04:sqrt2") == grid
    assert stats.parse_lr_grid("0.01:0.05:2") == [0.01, 0.02, 0.04]
    for bad in ("0.1:0.01:2", "0:1:2", "0.1:1:1", "0.1:1"):
        with pytest.raises(ValueError):
            stats.parse_lr_grid(bad)


def test_bootstrap_ratio_matches_scipy():
    rng = np.random.default_rng(1)
    b = rng.lognormal(6, 0.4, 20)
    a = b * rng.lognormal(0.3, 0.2, 20)
    got = stats.bootstrap_ratio(a, b, n_boot=20000, rng=2)
    assert got["ratio"] == pytest.approx(np.median(a) / np.median(b))
    ref = sps.bootstrap((a, b), lambda x, y, axis: np.median(x, axis) / np.median(y, axis),
                        paired=True, vectorized=True, n_resamples=20000,
                        method="percentile", confidence_level=0.95, random_state=3)
    assert got["low"] == pytest.approx(ref.confidence_interval.low, rel=0.03)
    assert got["high"] == pytest.approx(ref.confidence_interval.high, rel=0.03)
    assert got["low"] < got["ratio"] < got["high"]


def test_bootstrap_ratio_with_misses():
    # The reference (b) never misses, a misses on 2 of 10 seeds: the ratio is finite and
    # the upper end may be infinite (resamples where a's median is a miss).
    a = [100, 120, None, 90, 110, None, 95, 105, 115, 130]
    b = [80] * 10
    got = stats.bootstrap_ratio(a, b, n_boot=2000)
    assert got["ratio"] == pytest.approx(np.median([100, 120, np.inf, 90, 110, np.inf, 95,
                                                    105, 115, 130]) / 80)
    assert got["low"] <= got["ratio"] <= got["high"]
    # Half the references missing: no ratio, no interval.
    none = stats.bootstrap_ratio([1, 2, 3, 4], [1, None, None, None], n_boot=500)
    assert none["ratio"] is None and none["low"] is None


def test_bootstrap_interval_with_missed_references_by_hand():
    # The reference b misses on 3 of 8 seeds: its median is finite, but many resamples'
    # are not. Written out one resample at a time: a miss is infinitely slow, x / miss is
    # 0, and miss / miss (no value) counts as 0 for the lower end, inf for the upper.
    import statistics
    a = [100, 120, None, 90, 110, 140, 95, 105]
    b = [80, None, None, 70, 85, None, 60, 75]
    n_boot, level = 3000, 0.95
    got = stats.bootstrap_ratio(a, b, n_boot=n_boot, level=level, rng=5)
    inf = math.inf
    fa = [inf if v is None else v for v in a]
    fb = [inf if v is None else v for v in b]
    assert got["ratio"] == pytest.approx(statistics.median(fa) / statistics.median(fb))
    idx = np.random.default_rng(5).integers(0, len(a), size=(n_boot, len(a)))
    lows, highs = [], []
    for row in idx:
        ma = statistics.median([fa[i] for i in row])
        mb = statistics.median([fb[i] for i in row])
        if mb == inf and ma == inf:
            lows.append(0.0)
            highs.append(inf)
        else:
            v = 0.0 if mb == inf else ma / mb
            lows.append(v)
            highs.append(v)
    alpha = (1 - level) / 2
    # inverted_cdf: the smallest value whose empirical CDF reaches the level.
    assert got["low"] == pytest.approx(sorted(lows)[math.ceil(alpha * n_boot) - 1])
    assert got["high"] == pytest.approx(sorted(highs)[math.ceil((1 - alpha) * n_boot) - 1])
    assert 0 <= got["low"] <= got["ratio"] <= got["high"]


def test_sign_test_against_the_binomial_by_hand():
    a = [10, 20, 30, 40, 50, 60, 70, None, 5, 5]
    b = [11, 21, 31, 41, 51, 61, 69, 80, 5, 6]
    got = stats.sign_test(a, b)
    assert (got["a_less"], got["b_less"], got["ties"]) == (7, 2, 1)
    n, k = 9, 2
    p = 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    assert got["p_value"] == pytest.approx(min(1.0, p))
    assert stats.sign_test([1], [1])["p_value"] is None


def test_epoch_work_by_hand():
    # cat 12288-20-7-5-1: F = 245760, 140, 35, 5 multiply-adds per sample.
    sizes = [12288, 20, 7, 5, 1]
    F = [245760, 140, 35, 5]
    # GD: gradient of every layer, errors into layers 1..3, forward of every layer.
    gd = sum(F) + (F[1] + F[2] + F[3]) + sum(F)
    # PWO: spans from 3, 2, 1, 0; each: gradients of layers f.., errors into f+1..,
    # re-forward of f.. .
    pwo = ((F[3] + F[3]) + (F[2] + F[3] + F[3] + F[2] + F[3])
           + (F[1] + F[2] + F[3] + F[2] + F[3] + F[1] + F[2] + F[3]) + gd)
    assert stats.schedule_work(sizes, "gd")["macs_per_sample"] == gd == 492060
    assert stats.schedule_work(sizes, "pwo")["macs_per_sample"] == pwo == 492555
    assert stats.schedule_work(sizes, "layerwise")["macs_per_sample"] == gd
    assert stats.schedule_work(sizes, "gd")["x_passes"] == 1
    assert stats.schedule_work(sizes, "pwo")["x_passes"] == 2
    # Four equal layers: GD 4 + 3 + 4 = 11 units, PWO 2 + 5 + 8 + 11 = 26.
    eq = [64] * 5
    r = (stats.schedule_work(eq, "pwo")["macs_per_sample"]
         / stats.schedule_work(eq, "gd")["macs_per_sample"])
    assert r == pytest.approx(26 / 11)
    # One layer: PWO is GD.
    assert stats.schedule_work([5, 3], "pwo") == stats.schedule_work([5, 3], "gd")


def _e(lr, reached, epochs, n=10, sec=None):
    return {"lr": lr, "n_reached": reached, "n_runs": n, "epochs_to_target": epochs,
            "seconds_to_target": sec}


def test_select_best_rule():
    es = [_e(0.01, 10, 800), _e(0.014, 9, 600), _e(0.02, 8, 400), _e(0.028, 3, None)]
    best, ok = stats.select_best(es)
    assert best["lr"] == 0.014 and ok           # 0.02 is faster but reaches on 8/10
    best, ok = stats.select_best(es, min_reach=0.8)
    assert best["lr"] == 0.02
    best, ok = stats.select_best([_e(0.1, 5, None), _e(0.2, 7, 300)])
    assert best["lr"] == 0.2 and not ok


def test_sustained_crossing_and_value_at_epoch():
    curve = [1.0, 0.4, 0.6, 0.3, 0.2, 0.25, 0.5]
    for k in (1, 2, 3, 4):
        brute = next((i for i in range(len(curve) - k + 1)
                      if all(v < 0.5 for v in curve[i:i + k])), None)
        assert stats.sustained_crossing(curve, 0.5, k) == brute
    assert stats.value_at_epoch(curve, 3) == 0.3
    assert stats.value_at_epoch(curve, 100) == 0.5
    assert stats.value_at_epoch([], 3) is None


@pytest.fixture(scope="module")
def selected():
    data = make_synthetic(n_samples=120, n_features=8, rng=0)
    return compare(data, hidden=(6, 4), lr=[0.1, 0.2, 0.4], target_loss=0.35,
                   max_epochs=300, seeds=3, select_seeds=2, report_lrs="best",
                   optimizers=("gd", "layerwise", "pwo"), epoch_budgets=[10],
                   flop_budgets=[10])


def test_best_is_chosen_on_the_selection_seeds(selected):
    s, summ = selected["settings"], selected["summary"]
    assert s["seeds"] == [0, 1, 2] and s["select_seeds"] == [3, 4]
    sel = [r for r in selected["runs"] if r["seed"] in (3, 4)]
    rep = [r for r in selected["runs"] if r["seed"] in (0, 1, 2)]
    assert {r["role"] for r in sel} == {"select"} and {r["role"] for r in rep} == {"report"}
    for opt in ("gd", "layerwise", "pwo"):
        # Independent: the rule applied to numpy medians of the selection runs.
        cands = []
        for lr in s["lr"]:
            e = [r["epochs_to_target"] for r in sel if r["optimizer"] == opt
                 and r["lr"] == lr]
            reach = sum(v is not None for v in e) / len(e)
            med = np.median([np.inf if v is None else v for v in e])
            if reach >= 0.9:
                cands.append((med, lr))
        want = min(cands)[1]
        assert summ["chosen"][f"{opt}+sgd"]["lr"] == want
        assert summ["best"][f"{opt}+sgd"]["lr"] == want
    # Report seeds ran only at the chosen rates, every arm at each of them.
    chosen = sorted({c["lr"] for c in summ["chosen"].values()})
    assert sorted({r["lr"] for r in rep}) == chosen == s["report_lr"]
    assert len(rep) == 3 * 3 * len(chosen)


def test_ratio_statistics_and_work(selected):
    s, summ = selected["settings"], selected["summary"]
    N = s["n_train"]
    rep = [r for r in selected["runs"] if r["role"] == "report"]
    for r in summ["ratios"]["equal_lr"]:
        a = [x for x in rep if x["optimizer"] == r["optimizer"] and x["lr"] == r["lr"]]
        b = [x for x in rep if x["optimizer"] == "pwo" and x["lr"] == r["lr"]]
        a = sorted(a, key=lambda x: x["seed"])
        b = sorted(b, key=lambda x: x["seed"])
        ea = np.array([np.inf if x["epochs_to_target"] is None else x["epochs_to_target"]
                       for x in a])
        eb = np.array([np.inf if x["epochs_to_target"] is None else x["epochs_to_target"]
                       for x in b])
        if np.isfinite(np.median(eb)) and np.isfinite(np.median(ea)):
            assert r["epochs_ci"]["ratio"] == pytest.approx(np.median(ea) / np.median(eb))
            assert r["epochs"] == pytest.approx(np.median(ea) / np.median(eb))
            # Work: multiply-adds to the target from the network sizes, by hand.
            sizes = s["sizes"]
            F = [sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
            gd = 2 * sum(F) + sum(F[1:])
            pwo = sum(2 * sum(F[f:]) + sum(F[f + 1:]) for f in range(len(F)))
            per_a = gd if r["optimizer"] in ("gd", "layerwise") else pwo
            macs_a = np.median(N * (sum(F) + ea * per_a))
            macs_b = np.median(N * (sum(F) + eb * pwo))
            assert r["macs"] == pytest.approx(macs_a / macs_b)
        st = r["sign_test"]
        assert st["a_less"] == int(np.sum(ea < eb)) and st["b_less"] == int(np.sum(eb < ea))


def test_reach_rates_and_budgets(selected):
    summ = selected["summary"]
    rep = [r for r in selected["runs"] if r["role"] == "report"]
    for e in summ["by_lr"]:
        rs = [r for r in rep if r["optimizer"] == e["optimizer"] and r["lr"] == e["lr"]]
        assert e["reach_rate"] == pytest.approx(
            np.mean([r["epochs_to_target"] is not None for r in rs]))
        (be, bf) = e["budgets"]
        assert be["kind"] == "epochs" and be["epoch"] == 10
        acc = [r["val_accuracy"][min(10, len(r["val_accuracy"]) - 1)] for r in rs]
        assert be["val_accuracy"] == pytest.approx(np.median(acc))
        # 10 GD epochs of work: 10 epochs for GD, fewer for PWO (its epochs cost more).
        if e["optimizer"] == "pwo":
            assert bf["epoch"] < 10
        else:
            assert bf["epoch"] == 10


@pytest.mark.parametrize("stall", ["no_improvement", "flat"])
def test_patience_stops_stalled_runs_and_counts_them(stall):
    data = make_synthetic(n_samples=60, n_features=5, rng=0)
    res = compare(data, hidden=(4,), lr=[1e-9, 0.5], target_loss=0.3, max_epochs=400,
                  seeds=2, patience=5, stall=stall, optimizers=("gd", "pwo"))
    slow = [r for r in res["runs"] if r["lr"] == 1e-9]
    # At lr 1e-9 the loss neither improves nor moves: both rules stop early.
    assert all(r["stopped_reason"] == stall and r["epochs"] < 400 for r in slow)
    for e in res["summary"]["by_lr"]:
        rs = [r for r in res["runs"] if r["lr"] == e["lr"]
              and r["optimizer"] == e["optimizer"]]
        assert e["n_stalled"] == sum(r["stopped_reason"] == stall for r in rs)
        assert e["n_collapsed"] == e["n_stalled"] + e["n_diverged"]
    assert res["settings"]["patience"] == 5 and res["settings"]["stall"] == stall


def test_compare_stops_only_flat_runs_by_default():
    """The default (DEFAULT_PATIENCE epochs of a flat loss) leaves every run that keeps
    moving alone: its epochs are those of a run without any patience rule."""
    from poswise.experiments import DEFAULT_PATIENCE
    data = make_synthetic(n_samples=60, n_features=5, rng=0)
    kw = dict(hidden=(4,), lr=[1e-9, 0.05], target_loss=0.3, seeds=2,
              max_epochs=DEFAULT_PATIENCE + 300, optimizers=("gd", "pwo"))
    res = compare(data, **kw)
    free = compare(data, patience=None, **kw)
    assert res["settings"]["patience"] == DEFAULT_PATIENCE
    assert res["settings"]["stall"] == "flat" and free["settings"]["stall"] is None
    for r, f in zip(res["runs"], free["runs"]):
        assert (r["lr"], r["optimizer"], r["seed"]) == (f["lr"], f["optimizer"], f["seed"])
        if r["lr"] == 1e-9:
            assert r["stopped_reason"] == "flat" and f["stopped_reason"] == "max_epochs"
            assert r["epochs"] == DEFAULT_PATIENCE < f["epochs"]   # k + 1 losses
        else:
            assert r["stopped_reason"] == f["stopped_reason"] != "flat"
            assert r["epochs"] == f["epochs"]
            assert r["epochs_to_target"] == f["epochs_to_target"]


def test_compare_rejects_an_unknown_stall_rule():
    from poswise.experiments import CompareError
    data = make_synthetic(n_samples=20, n_features=3, rng=0)
    with pytest.raises(CompareError, match="stall"):
        compare(data, hidden=(2,), seeds=1, max_epochs=2, stall="plateau")
