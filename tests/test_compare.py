"""Tests of poswise.experiments (and its old name poswise.compare): identical starts, the
results dict, medians, update rules and the table."""
import json
import math

import numpy as np
import pytest

from poswise import GradientDescent, MLP, PositionWise
from poswise.compare import CompareError, compare, crossing, format_table, paper_loss, \
    summarize
from poswise.experiments import paper as pl, running, settings
from poswise.datasets import make_synthetic

RUN_KEYS = {"optimizer", "seed", "lr", "epochs", "epochs_to_target", "seconds_to_target",
            "final_loss", "final_val_loss", "final_val_accuracy", "final_train_accuracy",
            "loss", "val_loss", "val_accuracy", "seconds", "stopped_reason", "first_layer",
            "init_digest", "wall_seconds", "crossings", "update", "update_params", "label",
            "setup_seconds", "role"}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_samples=200, n_features=10, rng=0)


@pytest.fixture(scope="module")
def sweep(data):
    return compare(data, hidden=(8, 4), lr=[0.1, 0.3], target_loss=0.3, max_epochs=400,
                   seeds=2, thresholds=[0.5, 0.3])


def test_results_structure(sweep):
    assert set(sweep) == {"settings", "runs", "summary", "interrupted"}
    assert sweep["interrupted"] is False
    s = sweep["settings"]
    assert s["sizes"] == [10, 8, 4, 1] and s["loss"] == "bce"
    assert s["lr"] == [0.1, 0.3] and s["seeds"] == [0, 1] and s["target_loss"] == 0.3
    assert len(sweep["runs"]) == 2 * 2 * 2
    # Interleaved: per seed and lr, GD then PWO.
    assert [(r["seed"], r["lr"], r["optimizer"]) for r in sweep["runs"][:4]] == [
        (0, 0.1, "gd"), (0, 0.1, "pwo"), (0, 0.3, "gd"), (0, 0.3, "pwo")]
    for r in sweep["runs"]:
        assert RUN_KEYS <= set(r)
        assert len(r["loss"]) == len(r["seconds"]) == len(r["val_loss"]) == r["epochs"] + 1
        assert r["stopped_reason"] == "target_reached"
        e = r["epochs_to_target"]
        assert r["loss"][e] < 0.3 <= r["loss"][e - 1]
        assert r["seconds_to_target"] == r["seconds"][r["epochs_to_target"]]
        assert 0.0 <= r["final_train_accuracy"] <= 1.0
        # The crossing at the target level is the target epoch itself.
        assert r["crossings"][1] == {"threshold": 0.3, "epochs": r["epochs_to_target"],
                                     "seconds": r["seconds_to_target"]}
    json.dumps(sweep, allow_nan=False)      # strict JSON, as the CLI writes it


def test_gd_and_pwo_start_from_identical_weights(data, monkeypatch):
    seen = []
    for cls in (GradientDescent, PositionWise):
        original = cls.fit

        def spy(self, net, *args, _original=original, **kwargs):
            seen.append((self._short, self.lr, [w.copy() for w in net.weights],
                         [b.copy() for b in net.biases]))
            return _original(self, net, *args, **kwargs)
        monkeypatch.setattr(cls, "fit", spy)
    res = compare(data, hidden=(6,), lr=[0.1, 0.2], max_epochs=3, seeds=[3, 4],
                  warmup=False)
    assert [s[0] for s in seen] == ["gd", "pwo"] * 4
    for k in range(0, 8, 2):
        (_, _, wg, bg), (_, _, wp, bp) = seen[k], seen[k + 1]
        for a, b in zip(wg + bg, wp + bp):
            np.testing.assert_array_equal(a, b)
    # Every learning rate of a seed starts from the same network too; seeds differ.
    np.testing.assert_array_equal(seen[0][2][0], seen[2][2][0])
    assert not np.array_equal(seen[0][2][0], seen[4][2][0])
    # ... and the network is the one MLP(..., rng=seed) draws.
    np.testing.assert_array_equal(seen[4][2][0], MLP((10, 6, 1), rng=4).weights[0])
    digests = {(r["seed"], r["optimizer"], r["lr"]): r["init_digest"] for r in res["runs"]}
    assert len({d for (seed, _, _), d in digests.items() if seed == 3}) == 1
    assert digests[(3, "gd", 0.1)] != digests[(4, "gd", 0.1)]


def test_deterministic_curves(data):
    kw = dict(hidden=(6,), lr=0.2, max_epochs=30, seeds=1)
    a, b = compare(data, **kw), compare(data, **kw)
    for ra, rb in zip(a["runs"], b["runs"]):
        assert ra["loss"] == rb["loss"]


def test_summary_medians_and_best(sweep):
    summ = sweep["summary"]
    assert [(e["optimizer"], e["lr"]) for e in summ["by_lr"]] == [
        ("gd", 0.1), ("pwo", 0.1), ("gd", 0.3), ("pwo", 0.3)]
    for e in summ["by_lr"]:
        runs = [r for r in sweep["runs"] if r["optimizer"] == e["optimizer"]
                and r["lr"] == e["lr"]]
        assert e["n_runs"] == e["n_reached"] == 2
        assert e["epochs_to_target"] == np.median([r["epochs_to_target"] for r in runs])
        assert e["final_loss"] == pytest.approx(np.median([r["final_loss"] for r in runs]))
    for opt in ("gd", "pwo"):
        cands = [e for e in summ["by_lr"] if e["optimizer"] == opt]
        assert summ["best"][opt + "+sgd"]["epochs_to_target"] == min(
            e["epochs_to_target"] for e in cands)
    eq = summ["ratios"]["equal_lr"]
    assert [r["lr"] for r in eq] == [0.1, 0.3]
    g, p = summ["by_lr"][0], summ["by_lr"][1]
    assert eq[0]["epochs"] == pytest.approx(g["epochs_to_target"] / p["epochs_to_target"])
    (b,) = summ["ratios"]["best_lr"]
    assert (b["optimizer"], b["versus"], b["update"]) == ("gd", "pwo", "sgd")
    assert b["lr"] == summ["best"]["gd+sgd"]["lr"]
    assert b["versus_lr"] == summ["best"]["pwo+sgd"]["lr"]


def _fake(runs, lrs, target=1.0):
    base = {"final_loss": 0.5, "final_val_loss": 0.6, "final_val_accuracy": 0.9,
            "final_train_accuracy": 0.95, "final_seconds": 1.0, "stopped_reason": "x"}
    full = []
    for r in runs:
        d = dict(base, **r)
        d["stopped_reason"] = ("target_reached" if d["epochs_to_target"] is not None
                               else "max_epochs")
        full.append(d)
    seeds = sorted({r["seed"] for r in full})
    return {"settings": {"lr": lrs, "target_loss": target, "seeds": seeds}, "runs": full}


def test_median_counts_a_missed_target_as_infinitely_slow():
    runs = [{"optimizer": "gd", "lr": 0.1, "seed": s, "epochs_to_target": e,
             "seconds_to_target": None if e is None else e / 100}
            for s, e in enumerate([100, 300, None])]
    runs += [{"optimizer": "pwo", "lr": 0.1, "seed": s, "epochs_to_target": e,
              "seconds_to_target": None if e is None else e / 100}
             for s, e in enumerate([50, None, None])]
    summ = summarize(_fake(runs, [0.1]))
    gd, pwo = summ["by_lr"]
    assert (gd["n_reached"], gd["epochs_to_target"], gd["seconds_to_target"]) == (2, 300, 3)
    assert (pwo["n_reached"], pwo["epochs_to_target"]) == (1, None)
    assert summ["ratios"]["equal_lr"][0]["epochs"] is None


def test_best_lr_ties_broken_by_time():
    runs = [{"optimizer": opt, "lr": lr, "seed": 0, "epochs_to_target": 100,
             "seconds_to_target": sec}
            for opt in ("gd", "pwo") for lr, sec in ((0.1, 2.0), (0.2, 1.0), (0.4, 3.0))]
    runs.append({"optimizer": "pwo", "lr": 0.8, "seed": 0, "epochs_to_target": None,
                 "seconds_to_target": None})
    summ = summarize(_fake(runs, [0.1, 0.2, 0.4, 0.8]))
    assert summ["best"]["gd+sgd"]["lr"] == 0.2 and summ["best"]["pwo+sgd"]["lr"] == 0.2


def test_no_target_trains_the_budget_and_ranks_by_final_loss(data):
    res = compare(data, hidden=(6,), lr=[0.05, 0.2], max_epochs=25, seeds=1)
    for r in res["runs"]:
        assert r["epochs"] == 25 and r["epochs_to_target"] is None
        assert r["stopped_reason"] == "max_epochs"
    for opt, e in res["summary"]["best"].items():
        others = [x["final_loss"] for x in res["summary"]["by_lr"]
                  if f"{x['optimizer']}+{x['update']}" == opt]
        assert e["final_loss"] == min(others)
    text = format_table(res)
    assert "No target loss" in text


def test_unreached_target_in_table(data):
    res = compare(data, hidden=(6,), lr=0.01, target_loss=1e-6, max_epochs=5, seeds=1)
    assert all(r["epochs_to_target"] is None for r in res["runs"])
    text = format_table(res)
    assert "not reached" in text and "0/1" in text


def test_format_table(sweep):
    text = format_table(sweep)
    lines = text.splitlines()
    assert any(line.split()[:3] == ["lr", "schedule", "rule"] for line in lines)
    for lr in ("0.1", "0.3"):
        assert any(line.split()[:3] == [lr, "GD", "SGD"] for line in lines)
        assert any(line.split()[:3] == [lr, "PWO", "SGD"] for line in lines)
    assert "Each at its best lr" in text
    assert "fell below each level" in text
    # The table is the same from the JSON round trip (what results.json holds).
    assert format_table(json.loads(json.dumps(sweep))) == text


def test_multiclass_losses_and_paper_loss():
    ds = make_synthetic(n_samples=150, n_features=8, n_classes=3, rng=1)
    res = compare(ds, hidden=(6,), lr=0.3, max_epochs=10, seeds=1,
                  paper_loss_thresholds=[3.0])
    assert res["settings"]["loss"] == "cross_entropy" and res["settings"]["sizes"][-1] == 3
    for r in res["runs"]:
        assert len(r["paper_loss"]) == len(r["loss"])
        assert r["paper_crossings"][0]["threshold"] == 3.0
    res = compare(ds, loss="am_softmax", hidden=(6,), lr=0.05, max_epochs=5, seeds=1)
    assert res["settings"]["loss"] == "am_softmax"
    assert all(math.isfinite(r["final_loss"]) for r in res["runs"])


def test_paper_loss_is_the_reference_codes_value():
    # A zero last layer gives a uniform softmax: the reference loss is 3.2506 for 10
    # classes (the paper's MNIST threshold 3.248 is just below it).
    rng = np.random.default_rng(0)
    net = MLP.from_arrays([rng.standard_normal((4, 5)), np.zeros((10, 4))],
                          [np.zeros(4), np.zeros(10)], output="softmax")
    X = rng.standard_normal((30, 5))
    y = rng.integers(0, 10, 30)
    eps = 1e-5
    expected = -(np.log(0.1 + eps) + 9 * np.log(0.9 + eps))
    assert paper_loss(net, X, y) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(3.2506, abs=1e-4)
    # One sigmoid output: the plain binary cross-entropy (with the same epsilon).
    net1 = MLP.from_arrays([np.zeros((1, 5))], [np.zeros(1)])
    yb = rng.integers(0, 2, 30)
    assert paper_loss(net1, X, yb) == pytest.approx(-np.log(0.5 + eps), rel=1e-12)


def test_crossing():
    assert crossing([3.0, 2.0, 1.0], [0.0, 0.5, 0.9], 1.5) == (2, 0.9)
    assert crossing([3.0, None, 1.0], [0.0, 0.5, 0.9], 0.5) == (None, None)
    assert crossing([3.0], None, 4.0) == (0, None)


def test_interrupt_keeps_finished_runs(data, monkeypatch):
    original = running._train_one
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(running, "_train_one", flaky)
    res = compare(data, hidden=(6,), lr=0.1, max_epochs=5, seeds=2, warmup=False)
    assert res["interrupted"] is True and len(res["runs"]) == 2
    assert "INTERRUPTED" in format_table(res)


def test_tuple_dataset_and_log(data):
    lines = []
    res = compare((data.X_train, data.y_train, data.X_test, data.y_test), hidden=(4,),
                  lr=0.1, max_epochs=3, seeds=[7], log=lines.append)
    assert res["settings"]["dataset"] == "data" and res["settings"]["seeds"] == [7]
    assert len(lines) == 2 and lines[0].startswith("[1/2] seed 7")


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -0.1}, "'lr' parameter of compare must be a float > 0"),
    ({"lr": []}, "'lr' parameter of compare must not be empty"),
    ({"lr": [0.1, 0.1]}, "must not repeat"),
    ({"seeds": 0}, "'seeds' parameter of compare must be an int >= 1"),
    ({"seeds": [-1]}, "'seeds' parameter"),
    ({"loss": "mse"}, "'loss' parameter of compare must be one of"),
    ({"hidden": (4, 0)}, "'hidden' parameter of compare"),
    ({"target_loss": -1.0}, "'target_loss' parameter of compare must be a float > 0"),
    ({"max_epochs": 0}, "'max_epochs' parameter of compare must be an int >= 1"),
    ({"dtype": np.int32}, "'dtype' parameter of compare must be float32 or float64"),
    ({"init": "zeros"}, "'init' parameter of MLP must be one of"),
    ({"thresholds": [0]}, "'thresholds' parameter"),
])
def test_invalid_settings(data, kwargs, match):
    with pytest.raises(CompareError, match=match):
        compare(data, **{"max_epochs": 2, **kwargs})


def test_bce_needs_two_classes():
    ds = make_synthetic(n_samples=60, n_features=4, n_classes=3, rng=0)
    with pytest.raises(CompareError, match="loss 'bce' needs a dataset with 2 classes"):
        compare(ds, loss="bce", max_epochs=2)
    with pytest.raises(CompareError, match="'dataset' parameter of compare"):
        compare("imagenet", max_epochs=2)


@pytest.mark.parametrize("K, output", [(1, "sigmoid"), (4, "softmax"), (4, "cosine")])
def test_fast_paper_loss_matches_the_checked_one(K, output):
    rng = np.random.default_rng(K)
    net = MLP((6, 5, K), rng=1, output=output)
    X = rng.standard_normal((40, 6)) * 3
    y = rng.integers(0, max(K, 2), 40)
    assert pl.fast(net, X, pl.targets(y, K)) == pytest.approx(
        paper_loss(net, X, y), rel=1e-12)


def test_paper_loss_is_dense_until_the_lowest_threshold_then_strided():
    ds = make_synthetic(n_samples=120, n_features=6, rng=2)
    res = compare(ds, hidden=(5,), lr=0.3, max_epochs=45, seeds=1,
                  paper_loss_thresholds=[0.6])
    for r in res["runs"]:
        curve = r["paper_loss"]
        assert len(curve) == len(r["loss"]) and curve[-1] is not None
        e = r["paper_crossings"][0]["epochs"]
        assert e is not None and curve[e] < 0.6
        assert all(v is not None for v in curve[:e + 1])
        gaps = [i for i, v in enumerate(curve) if v is None]
        assert gaps and all(i > e and i % running.PAPER_LOSS_STRIDE for i in gaps)
        # For one sigmoid output the paper's loss is the BCE (up to its epsilon).
        assert curve[e] == pytest.approx(r["loss"][e], abs=1e-4)


def test_paper_loss_time_is_not_training_time(data, monkeypatch):
    # A fake clock that jumps 100 s whenever the paper's loss is computed: none of it may
    # show in the training seconds (no real time is measured here).
    import time
    real_clock, real_loss = time.perf_counter, pl.fast
    jump = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + jump[0])

    def slow(*args):
        jump[0] += 100.0
        return real_loss(*args)
    monkeypatch.setattr(pl, "fast", slow)
    run = compare(data, hidden=(4,), lr=0.1, max_epochs=20, seeds=1, warmup=False,
                  paper_loss_thresholds=[1e-9])["runs"][0]
    assert all(v is not None for v in run["paper_loss"])        # computed every epoch
    assert run["wall_seconds"] > 100 * 20
    assert run["seconds"][-1] < 100
    assert all(a <= b for a, b in zip(run["seconds"], run["seconds"][1:]))


def test_paired_seed_by_seed_counts():
    # seed: (GD epochs, PWO epochs); None = missed the target.
    pairs = {0: (100, 50), 1: (80, 90), 2: (None, 70), 3: (60, None), 4: (None, None),
             5: (40, 40)}
    runs = []
    for seed, (g, p) in pairs.items():
        for opt, e in (("gd", g), ("pwo", p)):
            runs.append({"optimizer": opt, "lr": 0.1, "seed": seed, "epochs_to_target": e,
                         "seconds_to_target": None if e is None else e / 10})
    w = summarize(_fake(runs, [0.1]))["ratios"]["equal_lr"][0]["paired"]
    assert w == {"n_seeds": 6, "fewer_epochs": {"pwo": 2, "gd": 2},
                 "less_time": {"pwo": 2, "gd": 2}}
    res = _fake(runs, [0.1])
    res["settings"].update(dataset="d", n_train=1, n_test=1, n_features=1, sizes=[1, 1],
                           activation="relu", loss="bce", dtype="float64",
                           init="xavier_normal", max_epochs=100)
    assert "seed by seed, PWO needed fewer epochs on 2/6 (GD on 2)" in format_table(res)


# --------------------------------------------------------------------------- update rules

def _trainers_take_update():
    import inspect
    return "update" in inspect.signature(GradientDescent).parameters


def test_rule_overrides_go_to_the_rules_that_take_them():
    from poswise.updates import SGD, Adam, RMSprop
    rules = dict(settings.resolve_rules(["momentum", "adam", "rmsprop"],
                                       {"momentum": 0.8, "eps": 1e-6}))
    assert rules["momentum"] == SGD(momentum=0.8)
    assert rules["adam"] == Adam(eps=1e-6)
    assert rules["rmsprop"] == RMSprop(momentum=0.8, eps=1e-6)
    assert dict(settings.resolve_rules("sgd"))["sgd"] == SGD()
    with pytest.raises(CompareError, match="betas apply to none of the rules sgd"):
        settings.resolve_rules(["sgd"], {"betas": (0.8, 0.9)})
    with pytest.raises(CompareError, match="repeats 'adam'"):
        settings.resolve_rules(["adam", Adam()])
    with pytest.raises(CompareError, match="'update' parameter of compare"):
        settings.resolve_rules(["lion"])


def _two_rule_runs():
    runs = []
    for upd, scale in (("sgd", 1.0), ("adam", 0.5)):
        for lr in (0.1, 0.2):
            for seed in (0, 1, 2):
                for opt, e in (("gd", 100), ("pwo", 60)):
                    ep = int(e * scale / (lr * 10)) + seed
                    runs.append({"optimizer": opt, "update": upd, "lr": lr, "seed": seed,
                                 "epochs_to_target": ep, "seconds_to_target": ep / 100,
                                 "label": f"{opt}+{upd}"})
    res = _fake(runs, [0.1, 0.2])
    res["settings"].update(optimizers=["gd", "pwo"], updates=["sgd", "adam"],
                           dataset="d", n_train=1, n_test=1, n_features=1, sizes=[1, 1],
                           activation="relu", loss="bce", dtype="float64",
                           init="xavier_normal", max_epochs=1000)
    return res


def test_one_summary_entry_and_table_row_per_schedule_rule_and_lr():
    res = _two_rule_runs()
    summ = summarize(res)
    keys = [(e["optimizer"], e["update"], e["lr"]) for e in summ["by_lr"]]
    assert sorted(keys) == sorted((o, u, lr) for o in ("gd", "pwo") for u in ("sgd", "adam")
                                  for lr in (0.1, 0.2))
    for e in summ["by_lr"]:
        eps = [r["epochs_to_target"] for r in res["runs"]
               if r["optimizer"] == e["optimizer"] and r["update"] == e["update"]
               and r["lr"] == e["lr"]]
        assert len(eps) == 3 and e["epochs_to_target"] == np.median(eps)
    assert set(summ["best"]) == {"gd+sgd", "pwo+sgd", "gd+adam", "pwo+adam"}
    assert all(b["lr"] == 0.2 for b in summ["best"].values())
    # Ratios compare schedules under the same rule.
    eq = summ["ratios"]["equal_lr"]
    assert {(r["optimizer"], r["versus"], r["update"], r["lr"]) for r in eq} == {
        ("gd", "pwo", u, lr) for u in ("sgd", "adam") for lr in (0.1, 0.2)}
    for r in eq:
        g = next(e for e in summ["by_lr"] if (e["optimizer"], e["update"], e["lr"])
                 == ("gd", r["update"], r["lr"]))
        p = next(e for e in summ["by_lr"] if (e["optimizer"], e["update"], e["lr"])
                 == ("pwo", r["update"], r["lr"]))
        assert r["epochs"] == pytest.approx(g["epochs_to_target"] / p["epochs_to_target"])
    rows = [line.split()[:3] for line in format_table(res).splitlines()]
    for o in ("GD", "PWO"):
        for u in ("SGD", "Adam"):
            for lr in ("0.1", "0.2"):
                assert rows.count([lr, o, u]) == 1


@pytest.mark.skipif(not _trainers_take_update(), reason="trainers without update rules")
def test_compare_runs_every_schedule_and_rule(data):
    res = compare(data, hidden=(6,), lr=[0.05], max_epochs=5, seeds=2,
                  update=["sgd", "adam"], update_params={"betas": (0.8, 0.99)})
    got = [(r["seed"], r["optimizer"], r["update"]) for r in res["runs"]]
    assert got == [(s, o, u) for s in (0, 1) for u in ("sgd", "adam")
                   for o in ("gd", "pwo")]
    adam = [r for r in res["runs"] if r["update"] == "adam"]
    assert all(r["update_params"]["betas"] in ([0.8, 0.99], (0.8, 0.99)) for r in adam)
    # Same seed, same initial network for every arm; rules give different curves.
    for seed in (0, 1):
        assert len({r["init_digest"] for r in res["runs"] if r["seed"] == seed}) == 1
    assert adam[0]["loss"] != res["runs"][0]["loss"]


def test_optimizers_are_checked():
    ds = make_synthetic(n_samples=40, n_features=4, rng=0)
    with pytest.raises(CompareError, match="'optimizers' parameter of compare"):
        compare(ds, optimizers=["gd", "sgd"], max_epochs=2)
    res = compare(ds, optimizers=["pwo"], hidden=(3,), lr=0.1, max_epochs=3, seeds=1)
    assert [r["optimizer"] for r in res["runs"]] == ["pwo"]
    assert res["summary"]["ratios"] == {"equal_lr": [], "best_lr": []}


def test_json_clean_makes_strict_json():
    from poswise.registry import json_clean
    obj = {"a": np.float32(1.5), "b": (np.nan, np.arange(3)), 7: [float("inf"), None],
           "c": np.array([[1.0, np.nan]]), "d": np.int64(4), "e": "x"}
    with pytest.raises(ValueError):
        json.dumps(obj, allow_nan=False, default=lambda o: o.tolist())
    clean = json_clean(obj)
    assert json.loads(json.dumps(clean, allow_nan=False)) == {
        "a": 1.5, "b": [None, [0, 1, 2]], "7": [None, None], "c": [[1.0, None]], "d": 4,
        "e": "x"}
