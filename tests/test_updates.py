"""Update rules x schedules: against torch.optim (an outside implementation), the numpy
twin, every first-layer mode, the plain-SGD fast path, sessions and checkpoints."""
import numpy as np
import pytest

import poswise
from poswise import MLP, GradientDescent, LayerwiseGD, PositionWise
from poswise.updates import SGD, Adam, AdamW, RMSprop, UPDATE_RULES, get_update
from poswise._kernels import _core
from conftest import make_problem, rel_err

torch = pytest.importorskip("torch")

# every rule and hyper-parameter combination the issue lists
RULES = {
    "sgd": SGD(),
    "sgd-wd": SGD(weight_decay=0.01),
    "momentum": SGD(momentum=0.9),
    "momentum-wd": SGD(momentum=0.8, weight_decay=0.05),
    "nesterov": SGD(momentum=0.9, nesterov=True),
    "nesterov-wd": SGD(momentum=0.7, nesterov=True, weight_decay=0.02),
    "adam": Adam(),
    "adam-wd": Adam(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    "adamw": AdamW(),
    "adamw-wd": AdamW(betas=(0.85, 0.995), weight_decay=0.1),
    "rmsprop": RMSprop(),
    "rmsprop-mom": RMSprop(alpha=0.9, momentum=0.5, weight_decay=0.01),
    # weight decay on the weight matrices only (a torch parameter group without decay
    # for the biases)
    "momentum-wd-w": SGD(momentum=0.9, weight_decay=0.05, decay_biases=False),
    "adamw-w": AdamW(weight_decay=0.1, decay_biases=False),
}
LR = {"sgd": 0.05, "adam": 0.003, "adamw": 0.003, "rmsprop": 0.002}


def torch_optimizer(rule, params, lr, bias=False):
    h = rule.hyper()
    wd = 0.0 if bias and not h["decay_biases"] else h["weight_decay"]
    if rule.family == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=h["momentum"],
                               nesterov=h["nesterov"], weight_decay=wd, foreach=False)
    if rule.family in ("adam", "adamw"):
        cls = torch.optim.Adam if rule.family == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(h["betas"]), eps=h["eps"],
                   weight_decay=wd, foreach=False)
    return torch.optim.RMSprop(params, lr=lr, alpha=h["alpha"], eps=h["eps"],
                               momentum=h["momentum"], weight_decay=wd, foreach=False)


def torch_train(net, X, y, loss, rule, lr, epochs, spans, scales=None):
    """The definition, in torch autograd: every weight and bias a separate tensor; each
    span step recomputes the forward pass, backpropagates the loss, and steps an optimizer
    over the span's parameters only (one optimizer per parameter, so that each parameter's
    state and step count advance only when it is updated)."""
    Ws = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in net.biases]
    L = len(Ws)
    scales = scales or [1.0] * L
    opts = [(torch_optimizer(rule, [Ws[l]], lr * scales[l]),
             torch_optimizer(rule, [bs[l]], lr * scales[l], bias=True)) for l in range(L)]
    Xt = torch.tensor(X, dtype=torch.float64)
    act = {"relu": torch.relu, "tanh": torch.tanh}[net.activation]

    def objective():
        a = Xt
        for l in range(L - 1):
            a = act(a @ Ws[l].T + bs[l])
        z = a @ Ws[-1].T + bs[-1]
        if loss == "bce":
            return torch.nn.functional.binary_cross_entropy_with_logits(
                z[:, 0], torch.tensor(y, dtype=torch.float64))
        return torch.nn.functional.cross_entropy(z, torch.tensor(y, dtype=torch.long))

    for _ in range(epochs):
        for first in spans:
            for p in Ws + bs:
                p.grad = None
            objective().backward()
            for l in range(first, L):
                opts[l][0].step()
                opts[l][1].step()
    return [w.detach().numpy() for w in Ws], [b.detach().numpy() for b in bs]


def _data(N, D, K, loss, seed=0):
    rng = np.random.default_rng(seed)
    X, y = make_problem(N, D, K, loss, rng)
    return X, y


def _check(net, Ws, bs, tol):
    for l in range(net.n_layers):
        assert rel_err(net.weights[l], Ws[l]) <= tol, f"weights[{l}]"
        assert rel_err(net.biases[l], bs[l]) <= tol, f"biases[{l}]"


# (hidden layers, loss, K, N, D): 1 to 5 hidden layers, bce and cross_entropy, N < D and
# N > D, each rule on every case (the full cross product adds nothing: the kernels do not
# branch on the combination, and it quadruples the time of torch's per-parameter steps)
CASES = {"1h-bce-N<D": ((6,), "bce", 1, 12, 30),
         "2h-ce-N>D": ((5, 4), "cross_entropy", 3, 40, 9),
         "5h-ce-N<D": ((7, 5, 4, 3, 6), "cross_entropy", 3, 12, 30),
         "5h-bce-N>D": ((7, 5, 4, 3, 6), "bce", 1, 40, 9)}


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("schedule", ["gd", "pwo"])
def test_matches_torch_optim(rule, case, schedule):
    """20 epochs, float64, the cython engine in the mode auto picks: relative error
    <= 1e-9 in every weight and bias against torch."""
    hidden, loss, K, N, D = CASES[case]
    shape = (N, D)
    X, y = _data(N, D, K, loss, seed=len(hidden) + N)
    net = MLP((D,) + hidden + (K,), activation="tanh" if len(hidden) > 1 else "relu",
              rng=1)
    r = RULES[rule]
    lr = LR[r.family]
    L = net.n_layers
    spans = [0] if schedule == "gd" else list(range(L - 1, -1, -1))
    Ws, bs = torch_train(net, X, y, loss, r, lr, 20, spans)
    cls = GradientDescent if schedule == "gd" else PositionWise
    h = cls(lr, loss=loss, update=r).fit(net, X, y, epochs=20)
    assert h.epochs == 20 and h.update_params == r.hyper()
    _check(net, Ws, bs, 1e-9)


@pytest.mark.parametrize("rule", ["momentum", "adam", "rmsprop-mom"])
def test_layerwise_gd_matches_torch(rule):
    X, y = _data(30, 8, 3, "cross_entropy")
    net = MLP((8, 6, 5, 3), rng=2)
    r = RULES[rule]
    Ws, bs = torch_train(net, X, y, "cross_entropy", r, LR[r.family], 15, [0],
                         scales=[1.0, 2.0, 3.0])
    LayerwiseGD(LR[r.family], loss="cross_entropy", update=r).fit(net, X, y, epochs=15)
    _check(net, Ws, bs, 1e-9)


def _modes():
    from poswise._kernels._core import direct_supported
    return ["primal", "dual", "direct"] if direct_supported() else ["primal", "dual"]


@pytest.mark.parametrize("mode", ["primal", "dual", "direct"])
@pytest.mark.parametrize("rule", list(UPDATE_RULES))
@pytest.mark.parametrize("schedule", ["gd", "pwo", "layerwise"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_every_mode_and_rule_is_exact_or_refused(mode, rule, schedule, dtype, tol):
    """Every first-layer mode x rule either matches the numpy twin (the specification)
    or is refused with a clear error; 'auto' never picks a refused one."""
    if mode not in _modes():
        pytest.skip("no AVX2 on this CPU")
    X, y = _data(25, 40, 3, "cross_entropy", seed=3)
    net = MLP((40, 6, 5, 3), rng=0, dtype=dtype)
    twin = net.copy()
    cls = poswise.SCHEDULES[schedule]
    kw = dict(loss="cross_entropy", update=rule)
    lr = LR[get_update(rule).family]
    if mode == "dual" and get_update(rule).family != "sgd":
        with pytest.raises(ValueError, match="first_layer='dual' needs .* SGD family"):
            cls(lr, first_layer=mode, **kw).fit(net, X, y, epochs=5)
        h = cls(lr, first_layer="auto", **kw).fit(net, X, y, epochs=5)
        assert h.first_layer != "dual"
        return
    h = cls(lr, first_layer=mode, **kw).fit(net, X, y, epochs=5)
    assert h.first_layer == mode
    cls(lr, backend="numpy", **kw).fit(twin, X, y, epochs=5)
    if mode == "dual":     # weight decay moves the W0_init coefficient too
        kw["update"] = get_update(rule, weight_decay=0.05)
        net, twin = MLP((40, 6, 5, 3), rng=0, dtype=dtype), MLP((40, 6, 5, 3), rng=0,
                                                                  dtype=dtype)
        cls(lr, first_layer=mode, **kw).fit(net, X, y, epochs=5)
        cls(lr, backend="numpy", **kw).fit(twin, X, y, epochs=5)
    for a, b in zip(net.weights + net.biases, twin.weights + twin.biases):
        assert rel_err(a, b) <= tol


def test_fused_and_row_threaded_paths_with_rules(monkeypatch):
    """Fused GD and row-threaded span steps apply every rule as the serial path does."""
    from poswise import _plan
    if "direct" not in _modes():
        pytest.skip("no AVX2 on this CPU")
    monkeypatch.setattr(_plan, "SPAN_THREAD_MIN_ROWS", 1)
    X, y = _data(300, 24, 3, "cross_entropy", seed=5)
    for rule in ("momentum", "adam", "rmsprop"):
        for cls, flag in ((GradientDescent, "fused_block"), (PositionWise, "row_threads"),
                          (LayerwiseGD, "fused_block")):
            net = MLP((24, 8, 5, 3), rng=1)
            ref = net.copy()
            lr = LR[get_update(rule).family]
            h = cls(lr, loss="cross_entropy", update=rule, first_layer="direct",
                    threads=3).fit(net, X, y, epochs=6)
            cls(lr, loss="cross_entropy", update=rule, first_layer="primal").fit(
                ref, X, y, epochs=6)
            assert h.threads == 3
            for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
                assert rel_err(a, b) <= 1e-10, (rule, cls.__name__)


def test_general_path_equals_fast_path_for_plain_sgd():
    """gradients() + apply() (the general path, used by data-parallel training) equals
    the fused plain-SGD step to rounding."""
    from poswise._kernels._core import Engine
    X, y = _data(50, 7, 3, "cross_entropy", seed=2)
    yi = y.astype(np.intc)
    a, b = MLP((7, 6, 4, 3), rng=0), MLP((7, 6, 4, 3), rng=0)
    spans = [2, 1, 0]
    ea = Engine(a._weights, a._biases, "cross_entropy", "relu", 0.01, 30, 0.35, 50,
                spans=spans)
    eb = Engine(b._weights, b._biases, "cross_entropy", "relu", 0.01, 30, 0.35, 50,
                spans=spans)
    for e in (ea, eb):
        e.set_data(X, yi)
        e.forward()
    for _ in range(4):
        la = ea.epoch(0.1)
        for first in spans:
            eb.gradients(first)
            eb.apply(first, 0.1)
            lb = eb.forward(first)
        assert la == pytest.approx(lb, rel=1e-12)
    for x, z in zip(a.weights + a.biases, b.weights + b.biases):
        assert rel_err(x, z) <= 1e-13


def test_plain_sgd_default_unchanged():
    """update='sgd' is the trainers' default and plain SGD is SGD() bit for bit."""
    X, y = _data(40, 6, 1, "bce")
    a, b = MLP((6, 5, 1), rng=0), MLP((6, 5, 1), rng=0)
    PositionWise(0.1).fit(a, X, y, epochs=10)
    PositionWise(0.1, update=SGD()).fit(b, X, y, epochs=10)
    for x, z in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("rule", ["momentum", "adam", "rmsprop"])
@pytest.mark.parametrize("batch", [None, 7])
def test_session_continues_state_and_resume_is_exact(tmp_path, rule, batch):
    """10 epochs in one call = 4 + 6 in one session = 4, checkpoint, resume to 10."""
    X, y = _data(30, 5, 3, "cross_entropy", seed=4)
    nets = [MLP((5, 6, 3), rng=3) for _ in range(3)]
    kw = dict(loss="cross_entropy", update=rule, batch_size=batch, rng=0)
    lr = LR[get_update(rule).family]
    PositionWise(lr, **kw).fit(nets[0], X, y, epochs=10)
    if batch is None:        # a session continues the rule's state (not the shuffling)
        sess = PositionWise(lr, **kw).session(nets[1])
        sess.fit(X, y, epochs=4)
        sess.fit(X, y, epochs=6)
        assert sess.state["t"].tolist() == [10, 20]
        for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases):
            np.testing.assert_array_equal(a, b)
    ck = tmp_path / "ck.npz"
    PositionWise(lr, **kw).fit(nets[2], X, y, epochs=4, checkpoint=ck)
    h = PositionWise(lr, **kw).fit(nets[2], X, y, epochs=10, resume=ck)
    assert h.epochs == 10 and h.update == rule
    for a, b in zip(nets[0].weights + nets[0].biases, nets[2].weights + nets[2].biases):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_another_rule(tmp_path):
    X, y = _data(30, 5, 3, "cross_entropy")
    net = MLP((5, 6, 3), rng=3)
    ck = tmp_path / "ck.npz"
    PositionWise(0.01, loss="cross_entropy", update="adam").fit(net, X, y, epochs=2,
                                                                 checkpoint=ck)
    with pytest.raises(ValueError, match="other trainer settings.*update"):
        PositionWise(0.01, loss="cross_entropy", update="momentum").fit(
            net, X, y, epochs=4, resume=ck)


def test_divergence_rolls_back_rule_state():
    """A diverging epoch restores weights, moments and step counts together."""
    X, y = _data(30, 5, 3, "cross_entropy")
    X[0] *= 1e150
    net = MLP((5, 6, 3), rng=3)
    tr = GradientDescent(1e3, loss="cross_entropy", update="momentum")
    sess = tr.session(net)
    with pytest.warns(poswise.DivergenceWarning):
        h = sess.fit(X, y, epochs=50)
    assert h.stopped_reason == "diverged"
    assert all(np.isfinite(a).all() for a in net.weights + net.biases)
    assert sess.state["t"].tolist() == [h.epochs] * 2
    assert all(np.isfinite(a).all() for a in sess.state["s1W"])


def test_rule_validation_messages():
    with pytest.raises(ValueError, match="'update' parameter of PositionWise must be"):
        PositionWise(0.1, update="lbfgs")
    with pytest.raises(ValueError, match="nesterov=True needs a momentum > 0"):
        SGD(nesterov=True)
    with pytest.raises(ValueError, match="'betas\\[1\\]' parameter of Adam"):
        Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="'eps' parameter of RMSprop"):
        RMSprop(eps=0)
    assert get_update("momentum", momentum=0.5) == SGD(momentum=0.5)
    assert AdamW().weight_decay == 0.01 and Adam().weight_decay == 0.0
    assert {UPDATE_RULES[k]().name for k in UPDATE_RULES} == set(UPDATE_RULES)


def test_second_fit_on_a_busy_network_is_refused():
    X, y = _data(30, 5, 1, "bce")
    net = MLP((5, 4, 1), rng=0)
    seen = []

    def cb(epoch, hist):
        if epoch == 1:
            with pytest.raises(RuntimeError, match="is being trained"):
                GradientDescent(0.1).fit(net, X, y, epochs=1)
            with pytest.raises(RuntimeError, match="cannot be replaced"):
                net.weights[0] = np.zeros((4, 5))
            seen.append(epoch)
    GradientDescent(0.1).fit(net, X, y, epochs=3, callbacks=cb)
    assert seen == [1]


def test_multilabel_bce_matches_torch():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    Y = (rng.random((40, 3)) > 0.5).astype(float)
    net = MLP((6, 5, 3), rng=0)
    ref = net.copy()
    GradientDescent(0.3, loss="bce").fit(net, X, Y, epochs=10)
    GradientDescent(0.3, loss="bce", backend="numpy").fit(ref, X, Y, epochs=10)
    Wt = [torch.tensor(w, requires_grad=True) for w in ref.weights]
    # torch: sum over labels, mean over samples
    W0 = [torch.tensor(w) for w in MLP((6, 5, 3), rng=0).weights]
    b0 = [torch.zeros(5, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
    for p in W0 + b0:
        p.requires_grad_(True)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(10):
        for p in W0 + b0:
            p.grad = None
        z = torch.relu(Xt @ W0[0].T + b0[0]) @ W0[1].T + b0[1]
        (torch.nn.functional.binary_cross_entropy_with_logits(z, Yt, reduction="sum")
         / 40).backward()
        with torch.no_grad():
            for p in W0 + b0:
                p -= 0.3 * p.grad
    for a, b in zip(net.weights + net.biases, W0 + b0):
        assert rel_err(a, b.detach().numpy()) <= 1e-10
    assert net.predict(X).shape == (40, 3)
    del Wt


@pytest.mark.parametrize("rule", [SGD(momentum=0.9, weight_decay=0.01),
                                  SGD(momentum=0.5, nesterov=True), SGD(weight_decay=0.1)])
def test_dual_resume_and_rollback_with_momentum(tmp_path, rule):
    """The dual first layer's coefficients (C, a, V, va) are checkpointed and resumed bit
    for bit, and interrupting mid-run leaves net and checkpoint consistent."""
    X, y = _data(12, 60, 3, "cross_entropy", seed=6)
    a, b = MLP((60, 5, 3), rng=0), MLP((60, 5, 3), rng=0)
    kw = dict(loss="cross_entropy", update=rule, first_layer="dual")
    h = PositionWise(0.05, **kw).fit(a, X, y, epochs=10)
    assert h.first_layer == "dual"
    ck = tmp_path / "ck.npz"
    PositionWise(0.05, **kw).fit(b, X, y, epochs=4, checkpoint=ck)
    PositionWise(0.05, **kw).fit(b, X, y, epochs=10, resume=ck)
    for x, z in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, z)


@pytest.mark.skipif(not _core.direct_supported(),
                    reason="no direct kernels on this CPU")
@pytest.mark.parametrize("rule", ["adam", "momentum", "rmsprop"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_layer_apply_any_thread_count(rule, dtype):
    # A first layer of 8192 x 20 = 163840 parameters is applied by up to 2 threads (each
    # takes at least PW_THREAD_GRAIN elements), walking the direct layer's transposed copy
    # in its memory order; mini-batch direct gradients split by columns, so any thread
    # count must give the very bits of one thread. The numpy twin checks the arithmetic.
    X, y = make_problem(400, 8192, 3, "cross_entropy", np.random.default_rng(5))
    X, net0 = X.astype(dtype), MLP((8192, 20, 3), dtype=dtype, rng=1)
    kw = dict(loss="cross_entropy", update=rule, batch_size=200, rng=0)
    nets = {}
    for threads in (1, 2, 3, 64):
        net = net0.copy()
        GradientDescent(1e-3, first_layer="direct", threads=threads, **kw).fit(
            net, X, y, epochs=2)
        nets[threads] = net
    for threads, net in nets.items():
        for a, b in zip(net.weights + net.biases, nets[1].weights + nets[1].biases):
            np.testing.assert_array_equal(a, b)
    if dtype == np.float64:     # (in float32, Adam's normalised steps amplify rounding)
        twin = net0.copy()
        GradientDescent(1e-3, backend="numpy", **kw).fit(twin, X, y, epochs=2)
        for a, b in zip(nets[1].weights + nets[1].biases, twin.weights + twin.biases):
            assert rel_err(a, b) <= 1e-10
