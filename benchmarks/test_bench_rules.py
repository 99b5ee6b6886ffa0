"""Time to a loss target per update rule and schedule, poswise beside PyTorch CPU running
the same rule.

For each target (cat BCE < 0.1; MNIST cross-entropy < 1.0; real data only: a target on
random labels means nothing), each schedule (GD, PWO) and each rule (plain SGD, momentum
0.9, Adam), one benchmark round per seed trains from the same initial network with
poswise and with torch (``torch.optim`` over the same tensors: full-batch GD is one
``optimizer.step()`` per epoch; PWO steps the span's parameters after each span's
backward pass, one optimizer per parameter so that each keeps its own step count, the
definition of poswise's semantics). ``extra_info["runs"]`` holds each implementation's
epochs and seconds to the target (set-up included: what a user waits), and the medians.
Skipped without torch or without the real data. Benchmarks never assert on time.
"""
import time

import numpy as np
import pytest

import _bench_common as common

RULES = {"sgd": {}, "momentum": {}, "adam": {}}
if common.SMOKE:
    TARGETS = {"cat": ((96, 20, 7, 5, 1), "bce", 0.1, 5, {"sgd": 0.01, "momentum": 0.01,
                                                         "adam": 0.001}, (0,))}
else:
    TARGETS = {
        "cat": ((12288, 20, 7, 5, 1), "bce", 0.1, 5000,
                {"sgd": 0.01, "momentum": 0.002, "adam": 0.001}, (0, 1, 2)),
        "mnist": ((784, 20, 7, 5, 10), "cross_entropy", 1.0, 300,
                  {"sgd": 0.1, "momentum": 0.02, "adam": 0.01}, (0,)),
    }
CASES = [(t, s, r) for t in TARGETS for s in ("gd", "pwo") for r in RULES]
if common.SMOKE:      # the code paths, not the numbers
    CASES = [("cat", "gd", "sgd"), ("cat", "pwo", "adam")]
_DATA = {}


def _data(name, sizes):
    if name not in _DATA:
        try:
            from poswise import datasets
            if common.SMOKE:
                X = common.fill_uniform((24, sizes[0]), np.float64, 0)
                y = np.random.default_rng(1).integers(0, 2, 24)
            else:
                ds = datasets.load(name)
                X, y = ds.X_train, ds.y_train
            _DATA[name] = (X, y)
        except Exception as exc:        # files not found
            _DATA[name] = (None, f"{type(exc).__name__}: {exc}")
    return _DATA[name]


def _torch_run(torch, net, X, y, loss, rule, lr, spans, target, max_epochs):
    """Epochs and seconds to ``target`` with torch.optim (float64, this process's
    threads)."""
    t0 = time.perf_counter()
    Ws = [torch.tensor(w, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases]
    L = len(Ws)

    def make(params):
        if rule == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.SGD(params, lr=lr, momentum=0.9 if rule == "momentum" else 0)
    opts = [make([p]) for p in Ws + bs] if len(spans) > 1 else [make(Ws + bs)]
    Xt = torch.tensor(X)
    yt = torch.tensor(y, dtype=torch.float64 if loss == "bce" else torch.long)

    def objective():
        a = Xt
        for l in range(L - 1):
            a = torch.relu(a @ Ws[l].T + bs[l])
        z = a @ Ws[-1].T + bs[-1]
        if loss == "bce":
            return torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], yt)
        return torch.nn.functional.cross_entropy(z, yt)

    for epoch in range(1, max_epochs + 1):
        for first in spans:
            for p in Ws + bs:
                p.grad = None
            objective().backward()
            if len(spans) == 1:
                opts[0].step()
            else:
                for l in range(first, L):
                    opts[l].step()
                    opts[L + l].step()
        with torch.no_grad():
            value = float(objective())
        if value < target:
            return epoch, time.perf_counter() - t0
    return None, time.perf_counter() - t0


@pytest.mark.parametrize("target_name,schedule,rule", CASES,
                         ids=[f"{t}-{s}-{r}" for t, s, r in CASES])
def test_rule_time_to_target(benchmark, target_name, schedule, rule):
    torch = pytest.importorskip("torch")
    import poswise
    sizes, loss, target, max_epochs, lrs, seeds = TARGETS[target_name]
    X, y = _data(target_name, sizes)
    if X is None:
        pytest.skip(f"{target_name}: real data not available ({y})")
    lr = lrs[rule]
    cls = poswise.SCHEDULES[schedule]
    spans = cls(lr).spans(len(sizes) - 1)
    benchmark.group = f"rules:{target_name}"
    runs = []
    order = iter(seeds)

    def setup():
        return (next(order),), {}

    def one(seed):
        net = poswise.MLP(sizes, rng=seed)
        t_net = net.copy()
        h = cls(lr, loss=loss, update=rule, threads=common.THREADS).fit(
            net, X, y, epochs=max_epochs, target_loss=target)
        te, ts = _torch_run(torch, t_net, X, y, loss, rule, lr, spans, target, max_epochs)
        runs.append({"seed": seed, "poswise_epochs": h.epochs_to_target,
                     "poswise_seconds": h.seconds_to_target, "torch_epochs": te,
                     "torch_seconds": ts if te is not None else None,
                     "first_layer": h.first_layer})

    with common.OtherCpu() as other:
        benchmark.pedantic(one, setup=setup, rounds=len(seeds), iterations=1)

    def med(key):
        vals = [r[key] for r in runs if r[key] is not None]
        return float(np.median(vals)) if vals else None
    benchmark.extra_info.update(
        kind="rules", target_name=target_name, schedule=schedule, rule=rule, lr=lr,
        target=target, max_epochs=max_epochs, runs=runs, sizes=list(sizes),
        median_poswise_epochs=med("poswise_epochs"), median_poswise_s=med("poswise_seconds"),
        median_torch_epochs=med("torch_epochs"), median_torch_s=med("torch_seconds"),
        threads=common.THREADS, threadpool_info=common.threadpool_info(),
        smoke=common.SMOKE, other_cpu=other.share)
