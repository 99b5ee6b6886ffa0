"""Validation at every public entry point: messages, no side effects, conversions, and
property-based tests that throw arbitrary arrays and parameters at the API."""
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from poswise import MLP, GradientDescent, PositionWise
from poswise.losses import LOSSES
from poswise.network import ACTIVATIONS, INITS, OUTPUTS
from poswise.trainers import BACKENDS as BACKEND_NAMES
from poswise.trainers import FIRST_LAYER_MODES

TRAINERS = (GradientDescent, PositionWise)
BACKENDS = ("cython", "numpy")
STOP_REASONS = {"max_epochs", "target_reached", "callback", "diverged", "interrupted"}
HUGE_INT = 10**400          # a Python int that is a Real but does not fit a float

PROPERTY = settings(max_examples=50, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def state(net):
    """Everything a fit may change, bit for bit."""
    return ([(a.dtype.str, a.shape, a.tobytes()) for a in net.weights + net.biases],
            net.activation, net.leak, net.output, net.init)


def data(n=20, d=4, k=1, loss="bce", seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if loss == "bce":
        y = (X[:, 0] > 0).astype(float)
    elif loss == "mse":
        y = rng.standard_normal((n, k))
    else:
        y = rng.integers(0, k, n)
    return X, y


def same(pattern):
    return re.escape(pattern)


# ======================================================================== MLP
class TestMLP:
    @pytest.mark.parametrize("sizes", [5, None, 3.0])
    def test_sizes_not_a_sequence(self, sizes):
        with pytest.raises(ValueError, match=same(
                f"The 'sizes' parameter of MLP must be a sequence of ints >= 1 (input width "
                f"first). Got {sizes!r} instead.")):
            MLP(sizes)

    @pytest.mark.parametrize("sizes", [[], [3], [3, 0], [3, -1], [0, 2], [3, 2.0], [3, True],
                                       ["3", 1], [3, None], [3, 1.5]])
    def test_sizes_bad_entries(self, sizes):
        with pytest.raises(ValueError, match=same(
                "The 'sizes' parameter of MLP must be a sequence of at least two ints >= 1 "
                f"(input width first). Got {tuple(sizes)!r} instead.")):
            MLP(sizes)

    def test_sizes_numpy_ints_accepted(self):
        net = MLP(np.array([4, 3, 1]), rng=0)
        assert net.sizes == (4, 3, 1) and all(type(s) is int for s in net.sizes)
        assert MLP((np.int8(2), np.uint64(1))).sizes == (2, 1)

    @pytest.mark.parametrize("param, choices", [("activation", ACTIVATIONS),
                                                ("init", INITS), ("output", OUTPUTS)])
    @pytest.mark.parametrize("value", ["gelu", "RELU", None, 1, ("relu",)])
    def test_unknown_names(self, param, choices, value):
        opts = ", ".join(repr(c) for c in choices)
        with pytest.raises(ValueError, match=same(
                f"The '{param}' parameter of MLP must be one of {opts}. Got {value!r} "
                f"instead.")):
            MLP([2, 1], **{param: value})

    @pytest.mark.parametrize("dtype", [np.float16, np.int64, int, "float128", object,
                                       np.complex128, "nope", None, "f8,f8", bool])
    def test_dtype(self, dtype):
        if dtype is None:     # np.dtype(None) is float64: accepted
            assert MLP([2, 1], dtype=None).dtype is np.float64
            return
        with pytest.raises(ValueError, match=same(
                f"The 'dtype' parameter of MLP must be float32 or float64. Got {dtype!r} "
                f"instead.")):
            MLP([2, 1], dtype=dtype)

    @pytest.mark.parametrize("dtype", [np.float32, "float32", "f4", np.dtype("float32")])
    def test_dtype_spellings(self, dtype):
        assert MLP([2, 1], dtype=dtype).dtype is np.float32

    @pytest.mark.parametrize("leak", [-0.1, float("nan"), float("inf"), True, "0.1", None,
                                      1j, np.array([0.1])])
    def test_leak(self, leak):
        with pytest.raises(ValueError, match=same(
                f"The 'leak' parameter of MLP must be a finite float >= 0. Got {leak!r} "
                f"instead.")):
            MLP([2, 1], leak=leak)

    def test_leak_huge_int(self):
        # BUG (poswise/_layout.py, check_scalar: `float(value)`): a Python int too large
        # for a float raises OverflowError instead of the parameter's ValueError.
        with pytest.raises(ValueError, match="The 'leak' parameter of MLP must be a finite "
                                             "float >= 0"):
            MLP([2, 1], leak=HUGE_INT)

    @pytest.mark.parametrize("rng", ["seed", 1.5, -1, object()])
    def test_rng(self, rng):
        with pytest.raises((TypeError, ValueError)):
            MLP([2, 1], rng=rng)

    def test_same_seed_same_weights(self):
        a, b = MLP([3, 4, 2], rng=7), MLP([3, 4, 2], rng=np.random.default_rng(7))
        assert state(a) == state(b)


# ======================================================================== from_arrays
class TestFromArrays:
    W = [np.ones((3, 2)), np.ones((1, 3))]
    B = [np.zeros(3), np.zeros(1)]

    @pytest.mark.parametrize("weights, biases", [(None, B), (W, None), (3, 4)])
    def test_not_sequences(self, weights, biases):
        with pytest.raises(ValueError, match=same(
                "weights and biases must be sequences of arrays.")):
            MLP.from_arrays(weights, biases)

    @pytest.mark.parametrize("weights, biases, nw, nb", [
        ([], [], 0, 0), (W, B[:1], 2, 1), (W[:1], B, 1, 2)])
    def test_counts(self, weights, biases, nw, nb):
        with pytest.raises(ValueError, match=same(
                f"from_arrays needs as many bias vectors as weight matrices (at least one); "
                f"got {nw} weights and {nb} biases.")):
            MLP.from_arrays(weights, biases)

    @pytest.mark.parametrize("w0, shape", [(np.ones(3), (3,)), (np.ones((3, 2, 1)), (3, 2, 1)),
                                           (np.ones((0, 2)), (0, 2)), (np.ones((3, 0)), (3, 0)),
                                           (1.0, ())])
    def test_weight_dims(self, w0, shape):
        with pytest.raises(ValueError, match=same(
                f"weights[0] must be a non-empty 2-D array (n_out, n_in); got shape "
                f"{shape}.")):
            MLP.from_arrays([w0, self.W[1]], self.B)

    def test_bias_shape(self):
        with pytest.raises(ValueError, match=same(
                "biases[0] must have shape (3,) to match weights[0] (3, 2); got (2,).")):
            MLP.from_arrays(self.W, [np.zeros(2), np.zeros(1)])
        with pytest.raises(ValueError, match=same("biases[1] must have shape (1,)")):
            MLP.from_arrays(self.W, [np.zeros(3), np.zeros((1, 1))])

    def test_chain(self):
        with pytest.raises(ValueError, match=same(
                "weights[1] takes 4 inputs but weights[0] has 3 outputs.")):
            MLP.from_arrays([np.ones((3, 2)), np.ones((1, 4))], self.B)

    @pytest.mark.parametrize("where", ["w", "b"])
    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite(self, where, bad):
        W = [w.copy() for w in self.W]
        B = [b.copy() for b in self.B]
        (W[1] if where == "w" else B[1])[0] = bad
        with pytest.raises(ValueError, match=same("weights[1] or biases[1] contain NaN or inf.")):
            MLP.from_arrays(W, B)

    @pytest.mark.parametrize("w0, dtype", [
        (np.array([["a", "b"]] * 3), "<U1"), (np.ones((3, 2), dtype=object), "object"),
        (np.ones((3, 2), dtype=complex), "complex128"), ([[None, 1]] * 3, "object")])
    def test_non_numeric(self, w0, dtype):
        with pytest.raises(ValueError, match=same(
                f"weights[0] must hold real numbers (bool, int or float); got an array of "
                f"dtype {dtype}.")):
            MLP.from_arrays([w0, self.W[1]], self.B)

    def test_ragged(self):
        with pytest.raises(ValueError, match=same("biases[0] could not be converted to a "
                                                  "numeric array")):
            MLP.from_arrays(self.W, [[1.0, [2.0], 3.0], np.zeros(1)])

    def test_settings_validated(self):
        with pytest.raises(ValueError, match="The 'activation' parameter of MLP"):
            MLP.from_arrays(self.W, self.B, activation="swish")
        with pytest.raises(ValueError, match="The 'output' parameter of MLP"):
            MLP.from_arrays(self.W, self.B, output="logits")
        with pytest.raises(ValueError, match="The 'leak' parameter of MLP must be a finite "
                                             "float >= 0. Got -1 instead."):
            MLP.from_arrays(self.W, self.B, leak=-1)

    def test_dtype_rule_and_copies(self):
        f32 = [w.astype(np.float32) for w in self.W], [b.astype(np.float32) for b in self.B]
        assert MLP.from_arrays(*f32).dtype is np.float32
        assert MLP.from_arrays(f32[0], self.B).dtype is np.float64
        ints = MLP.from_arrays([np.ones((3, 2), int), np.ones((1, 3), bool)],
                               [[0, 0, 0], [1]])
        assert ints.dtype is np.float64 and ints.biases[1][0] == 1.0
        W0 = np.asfortranarray(np.arange(6.0).reshape(3, 2))
        net = MLP.from_arrays([W0, np.arange(6.0)[::2][None]], self.B)
        assert all(a.flags.c_contiguous and a.flags.writeable and a.flags.owndata
                   for a in net.weights + net.biases)
        W0[0, 0] = 99.0                         # the network holds copies
        assert net.weights[0][0, 0] == 0.0
        assert np.array_equal(net.weights[1], [[0.0, 2.0, 4.0]])


# ======================================================================== trainers
def _param_message(owner, name, expected, value):
    return same(f"The '{name}' parameter of {owner} must be {expected}. Got {value!r} instead.")


class TestTrainerParameters:
    @pytest.mark.parametrize("cls", TRAINERS)
    @pytest.mark.parametrize("lr", [0, 0.0, -0.1, float("nan"), float("inf"), -float("inf"),
                                    "0.1", None, True, False, 1j, np.array(0.1), [0.1]])
    def test_lr(self, cls, lr):
        with pytest.raises(ValueError, match=_param_message(cls.__name__, "lr",
                                                            "a finite float > 0", lr)):
            cls(lr)

    @pytest.mark.parametrize("cls", TRAINERS)
    def test_lr_huge_int(self, cls):
        # BUG (poswise/_layout.py, check_scalar): float(10**400) raises OverflowError
        # before the check; expected the ValueError naming 'lr'.
        with pytest.raises(ValueError, match=f"The 'lr' parameter of {cls.__name__} must "
                                             f"be a finite float > 0"):
            cls(HUGE_INT)

    @pytest.mark.parametrize("lr", [1, 0.5, np.float32(0.1), np.int64(2), 1e-300])
    def test_lr_accepted(self, lr):
        assert GradientDescent(lr).lr == lr

    @pytest.mark.parametrize("cls", TRAINERS)
    @pytest.mark.parametrize("kwargs, name, expected", [
        (dict(loss="hinge"), "loss", "one of 'bce', 'cross_entropy', 'am_softmax', 'mse'"),
        (dict(loss=None), "loss", "one of 'bce', 'cross_entropy', 'am_softmax', 'mse'"),
        (dict(batch_size=0), "batch_size", "an int >= 1 or None"),
        (dict(batch_size=-3), "batch_size", "an int >= 1 or None"),
        (dict(batch_size=2.0), "batch_size", "an int >= 1 or None"),
        (dict(batch_size=True), "batch_size", "an int >= 1 or None"),
        (dict(batch_size="8"), "batch_size", "an int >= 1 or None"),
        (dict(backend="cuda"), "backend",
         "one of " + ", ".join(repr(b) for b in BACKEND_NAMES)),
        (dict(first_layer="both"), "first_layer",
         "one of " + ", ".join(repr(m) for m in FIRST_LAYER_MODES)),
        (dict(threads=0), "threads", "an int >= 1 or None"),
        (dict(threads=True), "threads", "an int >= 1 or None"),
        (dict(s=0), "s", "a finite float > 0"),
        (dict(s=float("nan")), "s", "a finite float > 0"),
        (dict(m=-0.1), "m", "a finite float >= 0"),
        (dict(m=False), "m", "a finite float >= 0"),
        (dict(on_divergence="ignore"), "on_divergence", "one of 'stop', 'raise'"),
    ])
    def test_parameters(self, cls, kwargs, name, expected):
        (value,) = kwargs.values()
        with pytest.raises(ValueError, match=_param_message(cls.__name__, name, expected,
                                                            value)):
            cls(0.1, **kwargs)

    def test_parameters_revalidated_at_fit(self):
        X, y = data()
        net = MLP([4, 3, 1], rng=0)
        before = state(net)
        gd = GradientDescent(0.1)
        gd.lr = -1.0
        with pytest.raises(ValueError, match=_param_message("GradientDescent", "lr",
                                                            "a finite float > 0", -1.0)):
            gd.fit(net, X, y, epochs=2)
        assert state(net) == before


# ======================================================================== fit inputs
X4, Y4 = data()
XC, YC = data(k=3, loss="cross_entropy")
XM, YM = data(k=2, loss="mse")


def _net(k=1, **kw):
    return MLP([4, 3, k], rng=0, **kw)


# (id, net factory, trainer kwargs, fit args, fit kwargs, exception, message)
BAD_FITS = [
    ("net-list", lambda: [1], {}, (X4, Y4), {}, TypeError,
     "net must be a poswise.MLP; got list."),
    ("epochs-negative", _net, {}, (X4, Y4), dict(epochs=-1), ValueError,
     "The 'epochs' parameter of GradientDescent.fit must be an int >= 0. Got -1 instead."),
    ("epochs-float", _net, {}, (X4, Y4), dict(epochs=2.0), ValueError,
     "The 'epochs' parameter of GradientDescent.fit must be an int >= 0. Got 2.0 instead."),
    ("epochs-bool", _net, {}, (X4, Y4), dict(epochs=True), ValueError,
     "The 'epochs' parameter of GradientDescent.fit must be an int >= 0. Got True instead."),
    ("epochs-none", _net, {}, (X4, Y4), dict(epochs=None), ValueError,
     "The 'epochs' parameter of GradientDescent.fit must be an int >= 0. Got None instead."),
    ("target-str", _net, {}, (X4, Y4), dict(target_loss="low"), ValueError,
     "The 'target_loss' parameter of GradientDescent.fit must be a finite float or None. "
     "Got 'low' instead."),
    ("target-nan", _net, {}, (X4, Y4), dict(target_loss=float("nan")), ValueError,
     "The 'target_loss' parameter of GradientDescent.fit must be a finite float or None. "
     "Got nan instead."),
    ("monitor", _net, {}, (X4, Y4), dict(monitor="accuracy"), ValueError,
     "The 'monitor' parameter of GradientDescent.fit must be one of 'loss', 'val_loss'. "
     "Got 'accuracy' instead."),
    ("monitor-no-val", _net, {}, (X4, Y4), dict(monitor="val_loss"), ValueError,
     "monitor='val_loss' needs validation_data."),
    ("callback-int", _net, {}, (X4, Y4), dict(callbacks=[print, 3]), TypeError,
     "callbacks must be callables; got 3."),
    ("checkpoint-every-0", _net, {}, (X4, Y4), dict(checkpoint_every=0), ValueError,
     "The 'checkpoint_every' parameter of GradientDescent.fit must be an int >= 1 or None. "
     "Got 0 instead."),
    ("checkpoint-every-bool", _net, {}, (X4, Y4), dict(checkpoint_every=True), ValueError,
     "The 'checkpoint_every' parameter of GradientDescent.fit must be an int >= 1 or None. "
     "Got True instead."),
    ("X-1d", _net, {}, (X4[:, 0], Y4), {}, ValueError,
     "X must be a 2-D array of shape (n_samples, n_features); got an array with 1 "
     "dimension(s) of shape (20,). Reshape a single sample with x.reshape(1, -1)"),
    ("X-3d", _net, {}, (X4[:, :, None], Y4), {}, ValueError,
     "X must be a 2-D array of shape (n_samples, n_features); got an array with 3 "
     "dimension(s) of shape (20, 4, 1)."),
    ("X-0d", _net, {}, (1.0, Y4), {}, ValueError,
     "X must be a 2-D array of shape (n_samples, n_features); got an array with 0 "
     "dimension(s) of shape ()."),
    ("X-no-rows", _net, {}, (X4[:0], Y4[:0]), {}, ValueError,
     "X is empty: shape (0, 4); need at least one sample and one feature."),
    ("X-no-cols", _net, {}, (X4[:, :0], Y4), {}, ValueError,
     "X is empty: shape (20, 0); need at least one sample and one feature."),
    ("X-empty-list", _net, {}, ([], []), {}, ValueError,
     "X must be a 2-D array of shape (n_samples, n_features); got an array with 1 "
     "dimension(s) of shape (0,)."),
    ("X-features", _net, {}, (X4[:, :3], Y4), {}, ValueError,
     "X has 3 features per sample but the network expects 4 (sizes[0])."),
    ("X-nan", _net, {}, (np.where(np.eye(20, 4) > 0, np.nan, X4), Y4), {}, ValueError,
     "X contains 4 NaN or infinite value(s) (after conversion to float64); clean or impute "
     "them first."),
    ("X-inf", _net, {}, (np.where(np.eye(20, 4) > 0, -np.inf, X4), Y4), {}, ValueError,
     "X contains 4 NaN or infinite value(s)"),
    ("X-overflow-f32", lambda: _net(dtype=np.float32), {}, (X4 * 1e300, Y4), {}, ValueError,
     "X contains 80 NaN or infinite value(s) (after conversion to float32)"),
    ("X-str", _net, {}, (X4.astype(str), Y4), {}, ValueError,
     "X must hold real numbers (bool, int or float); got an array of dtype <U"),
    ("X-object", _net, {}, (X4.astype(object), Y4), {}, ValueError,
     "X must hold real numbers (bool, int or float); got an array of dtype object."),
    ("X-complex", _net, {}, (X4 + 0j, Y4), {}, ValueError,
     "X must hold real numbers (bool, int or float); got an array of dtype complex128."),
    ("X-none", _net, {}, (None, Y4), {}, ValueError,
     "X must hold real numbers (bool, int or float); got an array of dtype object."),
    ("X-ragged", _net, {}, ([[1.0, 2.0], [3.0]], Y4), {}, ValueError,
     "X could not be converted to a numeric array"),
    ("y-length", _net, {}, (X4, Y4[:-1]), {}, ValueError,
     "y has 19 entries but X has 20 samples."),
    ("y-2d", _net, {}, (X4, np.stack([Y4, Y4], 1)), {}, ValueError,
     "y must be a 1-D array of labels, one per sample; got shape (20, 2)."),
    ("y-0d", _net, {}, (X4, 1.0), {}, ValueError,
     "y must be a 1-D array of labels, one per sample; got shape ()."),
    ("y-nan", _net, {}, (X4, np.where(Y4 > 0, np.nan, 0.0)), {}, ValueError,
     "y contains NaN or infinite values."),
    ("y-str", _net, {}, (X4, Y4.astype(str)), {}, ValueError,
     "y must hold real numbers (bool, int or float); got an array of dtype <U"),
    ("y-none", _net, {}, (X4, None), {}, ValueError,
     "y must hold real numbers (bool, int or float); got an array of dtype object."),
    ("bce-labels", _net, {}, (X4, np.r_[Y4[:-2], 2, 0.5]), {}, ValueError,
     "y for loss 'bce' must hold labels 0 and 1; found [0.5, 2.0]."),
    ("bce-minus-one", _net, {}, (X4, 2 * Y4 - 1), {}, ValueError,
     "y for loss 'bce' must hold labels 0 and 1; found [-1.0]."),
    ("bce-outputs", lambda: _net(3), {}, (XC, YC), {}, ValueError,
     "y for loss 'bce' with 3 outputs (multi-label) must have shape (n_samples, 3)"),
    ("ce-high", lambda: _net(3), dict(loss="cross_entropy"), (XC, np.r_[YC[:-1], 3]), {},
     ValueError, "y for loss 'cross_entropy' must hold labels in [0, 3) (the network has 3 "
                 "outputs); found labels from 0 to 3."),
    ("ce-negative", lambda: _net(3), dict(loss="cross_entropy"), (XC, np.r_[YC[:-1], -1]),
     {}, ValueError, "found labels from -1 to 2."),
    ("ce-fraction", lambda: _net(3), dict(loss="cross_entropy"), (XC, YC + 0.5), {},
     ValueError, "y for loss 'cross_entropy' must hold integer class labels; found "
                 "non-integer values."),
    ("ce-one-output", _net, dict(loss="cross_entropy"), (X4, Y4), {}, ValueError,
     "loss 'cross_entropy' needs a network with at least 2 outputs (one per class); this "
     "one has 1. Use loss='bce'"),
    ("am-high", lambda: _net(3), dict(loss="am_softmax"), (XC, YC + 1), {}, ValueError,
     "y for loss 'am_softmax' must hold labels in [0, 3)"),
    ("mse-shape", lambda: _net(2), dict(loss="mse"), (XM, np.c_[YM, YM[:, 0]]), {},
     ValueError, "y for loss 'mse' must have shape (n_samples, 2) to match the network's 2 "
                 "output(s); got shape (20, 3)."),
    ("mse-1d", lambda: _net(2), dict(loss="mse"), (XM, YM[:, 0]), {}, ValueError,
     "y for loss 'mse' must have shape (n_samples, 2) to match the network's 2 output(s); "
     "got shape (20,)."),
    ("mse-inf", lambda: _net(2), dict(loss="mse"), (XM, YM * np.inf), {}, ValueError,
     "y contains NaN or infinite values."),
    ("val-not-pair", _net, {}, (X4, Y4), dict(validation_data=X4), ValueError,
     "validation_data must be a pair (X_val, y_val)."),
    ("val-triple", _net, {}, (X4, Y4), dict(validation_data=(X4, Y4, Y4)), ValueError,
     "validation_data must be a pair (X_val, y_val)."),
    ("val-X", _net, {}, (X4, Y4), dict(validation_data=(X4[:, :2], Y4)), ValueError,
     "X_val has 2 features per sample but the network expects 4 (sizes[0])."),
    ("val-X-nan", _net, {}, (X4, Y4), dict(validation_data=(X4 * np.nan, Y4)), ValueError,
     "X_val contains 80 NaN or infinite value(s)"),
    ("val-y", _net, {}, (X4, Y4), dict(validation_data=(X4, Y4 + 1)), ValueError,
     "y_val for loss 'bce' must hold labels 0 and 1; found [2.0]."),
    ("val-y-length", _net, {}, (X4, Y4), dict(validation_data=(X4[:5], Y4)), ValueError,
     "y_val has 20 entries but X has 5 samples."),
    ("dual-numpy", lambda: MLP([40, 3, 1], rng=0),
     dict(backend="numpy", first_layer="dual"), data(6, 40), {}, ValueError,
     "first_layer='dual' needs backend='cython', full-batch training"),
    ("dual-minibatch", lambda: MLP([40, 3, 1], rng=0),
     dict(batch_size=2, first_layer="dual"), data(6, 40), {}, ValueError,
     "first_layer='dual' needs backend='cython', full-batch training"),
]


@pytest.mark.parametrize("cls", TRAINERS)
@pytest.mark.parametrize("case", BAD_FITS, ids=[c[0] for c in BAD_FITS])
def test_fit_rejects_and_leaves_network_untouched(cls, case):
    _, make_net, kwargs, args, fit_kwargs, exc, message = case
    message = message.replace("GradientDescent", cls.__name__)
    net = make_net()
    before = state(net) if isinstance(net, MLP) else None
    fit_kwargs = dict(dict(epochs=3), **fit_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # overflow in the f32 cast
        with pytest.raises(exc, match=same(message)):
            cls(0.1, **kwargs).fit(net, *args, **fit_kwargs)
    if before is not None:
        assert state(net) == before
        assert net.output == "auto"


@pytest.mark.parametrize("cls", TRAINERS)
def test_target_loss_huge_int(cls):
    # BUG (poswise/_layout.py, check_scalar): OverflowError instead of ValueError.
    net = _net()
    before = state(net)
    with pytest.raises(ValueError, match="The 'target_loss' parameter of"):
        cls(0.1).fit(net, X4, Y4, epochs=1, target_loss=HUGE_INT)
    assert state(net) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_mse_targets_that_overflow_the_network_dtype(backend):
    """BUG (poswise/_layout.py, check_y): y is checked for NaN/inf *before* it is cast to
    the network's dtype. For a float32 network, y = 1e300 (finite in float64) becomes inf,
    and fit then raises FloatingPointError("The initial loss is inf: the network's output
    overflows on X ...") -- the wrong exception type and a message blaming X. Expected, as
    check_X does: the finiteness check after the cast, ValueError naming y."""
    net = MLP([4, 3, 2], dtype=np.float32, rng=0)
    before = state(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=r"^y contains .*(NaN|inf)"):
            GradientDescent(0.1, loss="mse", backend=backend).fit(
                net, XM, np.full((20, 2), 1e300), epochs=1)
    assert state(net) == before


@pytest.mark.parametrize("cls", TRAINERS)
def test_resume_validation_leaves_network_untouched(tmp_path, cls):
    from poswise.io import ModelFileError, save_model
    net = _net()
    before = state(net)
    plain = tmp_path / "model.npz"
    save_model(MLP([4, 3, 1], rng=5), plain)
    ckpt = tmp_path / "ckpt.npz"
    cls(0.1).fit(MLP([4, 3, 1], rng=5), X4, Y4, epochs=2, checkpoint=ckpt)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk")
    cases = [
        (dict(resume=tmp_path / "missing.npz"), FileNotFoundError, "missing.npz"),
        (dict(resume=junk), ModelFileError, "junk.npz.*not a .npz model file"),
        (dict(resume=plain), ValueError, "model.npz is a model file, not a training "
                                         "checkpoint."),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            cls(0.1).fit(net, X4, Y4, epochs=3, **kwargs)
        assert state(net) == before
    with pytest.raises(ValueError, match=r"ckpt.npz was written with other trainer settings "
                                         r"\(lr: checkpoint 0.1, now 0.2\)"):
        cls(0.2).fit(net, X4, Y4, epochs=3, resume=ckpt)
    with pytest.raises(ValueError, match=r"holds a network \(4, 3, 1\).*is \(4, 2, 1\)"):
        cls(0.1).fit(MLP([4, 2, 1]), X4, Y4, epochs=3, resume=ckpt)
    with pytest.raises(ValueError, match="was written for 20 samples; X has 10"):
        cls(0.1).fit(net, X4[:10], Y4[:10], epochs=3, resume=ckpt)
    assert state(net) == before


def test_network_arrays_that_no_longer_chain():
    net = _net()
    with pytest.raises(ValueError, match=same("biases[0] must keep its shape (3,); got "
                                              "(7,).")):
        net.biases[0] = np.zeros(7)
    list.__setitem__(net.biases, 0, np.zeros(7))     # past the list's own check
    with pytest.raises(ValueError, match=same("The network's arrays no longer chain at "
                                              "layer 0: weights (3, 4), biases (7,).")):
        GradientDescent(0.1).fit(net, X4, Y4, epochs=1)


@pytest.mark.parametrize("dtype", [np.float16, np.int64])
def test_replacing_a_weight_array_keeps_the_network_dtype(dtype):
    """BUG (poswise/network.py, MLP.dtype -> self._weights[0].dtype.type, trusted by
    _checked_params and the trainers): assigning ``net.weights[0] = <float16 array>`` turns
    the whole network into float16; the Cython Engine then treats the float16 buffers as
    float32 (``self.f64`` is False) and reads/writes past their ends (observed: the initial
    loss is NaN -> FloatingPointError; memory corruption possible). With int64 the kernels
    silently "train" integer memory as float32. Expected: the dtype chosen at construction
    is kept (the replaced array is converted back, as _checked_params promises), or fit
    raises a ValueError naming weights[0]."""
    X, y = data(20, 4)
    net = _net()
    ref = net.copy()
    net.weights[0] = net.weights[0].astype(dtype)
    assert net.dtype is np.float64, (
        f"replacing weights[0] by a {np.dtype(dtype).name} array changed the network's "
        f"dtype to {np.dtype(net.dtype).name}")
    ref.weights[0][:] = net.weights[0]        # the same values, in float64
    try:
        h = GradientDescent(0.5).fit(net, X, y, epochs=3)
    except ValueError as exc:
        assert "weights[0]" in str(exc)
        return
    h_ref = GradientDescent(0.5).fit(ref, X, y, epochs=3)
    assert h.loss == h_ref.loss and state(net) == state(ref)


# ------------------------------------------------------------------------ inference
@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
def test_inference_validation(method):
    net = _net()
    f = getattr(net, method)
    with pytest.raises(ValueError, match=same("X has 3 features per sample but the network "
                                              "expects 4 (sizes[0]).")):
        f(X4[:, :3])
    with pytest.raises(ValueError, match=same("X must be a 2-D array")):
        f(X4[0])
    with pytest.raises(ValueError, match=same("X contains 1 NaN or infinite value(s)")):
        f(np.where(np.arange(4) == 2, np.nan, X4[:1]))
    with pytest.raises(ValueError, match=same("X is empty: shape (0, 4)")):
        f(X4[:0])
    with pytest.raises(ValueError, match=same("X must hold real numbers")):
        f(X4.astype(object))


# ======================================================================== conversions
def _layouts(X):
    """The same values in other layouts and types."""
    big = np.zeros((2 * X.shape[0], 3 * X.shape[1]))
    big[::2, ::3] = X
    rev = np.empty_like(X)[::-1, ::-1]
    rev[...] = X                               # negative strides, same values
    return {
        "fortran": np.asfortranarray(X),
        "strided": big[::2, ::3],
        "negative-strides": rev,
        "list": X.tolist(),
        "float32-input": X.astype(np.float32),      # exact: X holds small integers
        "read-only": np.array(X),
    }


@pytest.mark.parametrize("cls", TRAINERS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_converted_not_rejected(cls, backend, dtype):
    rng = np.random.default_rng(3)
    X = rng.integers(-3, 4, (24, 5)).astype(np.float64)
    y = (X[:, 0] + X[:, 1] > 0).astype(float)
    net0 = MLP([5, 4, 1], dtype=dtype, rng=1)

    def run(Xin, yin):
        net = net0.copy()
        h = cls(0.05, backend=backend, first_layer="primal").fit(net, Xin, yin, epochs=3)
        return h.loss, state(net), net.predict_proba(Xin)

    ref = run(np.ascontiguousarray(X), y)
    variants = _layouts(X)
    variants["read-only"].flags.writeable = False
    for name, Xv in variants.items():
        out = run(Xv, y)
        assert out[0] == ref[0] and out[1] == ref[1], name
        assert np.array_equal(out[2], ref[2]), name
    for name, Xi in {"int8": X.astype(np.int8), "int64": X.astype(np.int64),
                     "int32-F": np.asfortranarray(X.astype(np.int32))}.items():
        out = run(Xi, y)
        assert out[0] == ref[0] and out[1] == ref[1], name
    for name, yv in {"bool": y > 0, "int": y.astype(int), "list": y.tolist(),
                     "column": y[:, None], "strided": np.repeat(y, 2)[::2]}.items():
        out = run(X, yv)
        assert out[0] == ref[0] and out[1] == ref[1], name


def test_class_labels_converted():
    X, y = data(30, 4, k=3, loss="cross_entropy")
    net0 = MLP([4, 5, 3], rng=2)
    runs = []
    for yv in (y, y.astype(np.int8), y.astype(np.uint64), y.astype(float), y[:, None],
               y.tolist()):
        net = net0.copy()
        runs.append((GradientDescent(0.3, loss="cross_entropy").fit(net, X, yv, epochs=3).loss,
                     state(net)))
    assert all(r == runs[0] for r in runs)


def test_bool_X_is_numeric():
    X = np.random.default_rng(0).random((10, 3)) > 0.5
    net = MLP([3, 2, 1], rng=0)
    h = GradientDescent(0.1).fit(net, X, X[:, 0].astype(int), epochs=2)
    assert len(h.loss) == 3
    assert np.array_equal(net.predict(X), net.predict(X.astype(float)))


# ======================================================================== properties
NUMERIC_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.bool_,
                  np.float16, np.float32, np.float64]
ALL_DTYPES = NUMERIC_DTYPES + [np.complex64, np.complex128, object, np.str_]
ALLOWED = (ValueError, TypeError)


@st.composite
def arrays(draw, shape=None, dtypes=ALL_DTYPES, max_dims=3):
    """Arbitrary arrays: any dtype, NaN/inf/huge values, C/F order, strided and negatively
    strided views, or nested lists."""
    dtype = draw(st.sampled_from(dtypes))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=6))
    size = math.prod(shape)
    if dtype is object:
        items = draw(st.lists(st.one_of(st.floats(), st.integers(-3, 3), st.none(),
                                        st.text(max_size=2)),
                              min_size=size, max_size=size))
        arr = np.empty(size, dtype=object)
        arr[:] = items
        arr = arr.reshape(shape)
    elif dtype is np.str_:
        arr = draw(hnp.arrays(np.dtype("U3"), shape))
    else:
        elements = None
        if np.dtype(dtype).kind == "f":
            elements = st.one_of(st.floats(-4, 4, width=np.finfo(dtype).bits),
                                 st.sampled_from([0.0, np.nan, np.inf, -np.inf,
                                                  float(np.finfo(dtype).max),
                                                  float(np.finfo(dtype).tiny)]))
        arr = draw(hnp.arrays(dtype, shape, elements=elements))
    layout = draw(st.sampled_from(["C", "F", "strided", "negative", "list"]))
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = np.repeat(arr, 2, axis=0)[::2]
    elif layout == "negative" and arr.ndim:
        arr = arr[::-1]
    elif layout == "list":
        arr = arr.tolist()
    return arr


@st.composite
def networks(draw):
    d = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 4), max_size=2))
    k = draw(st.integers(1, 3))
    return MLP([d] + hidden + [k], dtype=draw(st.sampled_from([np.float32, np.float64])),
               activation=draw(st.sampled_from(ACTIVATIONS)), rng=draw(st.integers(0, 9)))


@st.composite
def inputs_for(draw, net):
    """X: usually of the right width, sometimes anything."""
    if draw(st.booleans()):
        return draw(arrays())
    n = draw(st.integers(1, 6))
    return draw(arrays(shape=(n, net.sizes[0]), dtypes=NUMERIC_DTYPES))


def _check_outcome(exc):
    assert isinstance(exc, ALLOWED), f"{type(exc).__name__}: {exc}"
    assert str(exc)


@PROPERTY
@given(data=st.data())
def test_property_inference(data):
    net = data.draw(networks())
    X = data.draw(inputs_for(net))
    before = state(net)
    for method in ("predict", "predict_proba", "decision_function"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = getattr(net, method)(X)
        except Exception as exc:               # noqa: BLE001 -- the property under test
            _check_outcome(exc)
        else:
            assert isinstance(out, np.ndarray) and out.shape[0] == np.shape(X)[0]
    assert state(net) == before


SIZE_ITEMS = st.one_of(st.integers(-2, 6), st.sampled_from([True, 2.0, "3", None, np.int64(3),
                                                            np.uint8(2), HUGE_INT]))
SCALARS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                    st.sampled_from([True, False, None, "0.1", 1j, HUGE_INT, -HUGE_INT,
                                     np.float32(0.1), np.int64(1), np.array(0.5), [0.1]]))
NAMES = st.one_of(st.sampled_from(ACTIVATIONS + INITS + OUTPUTS + ("", "RELU", "x")),
                  st.none(), st.integers())
DTYPE_LIKES = st.sampled_from([np.float32, np.float64, "float32", "f8", float, np.float16,
                               int, object, complex, "nope", None, np.dtype("f4"), "U3"])


@PROPERTY
@example(sizes=[2, 1], activation="relu", init="he_normal", output="auto", dtype=np.float64,
         leak=HUGE_INT)
@given(sizes=st.one_of(st.lists(SIZE_ITEMS, max_size=4), SIZE_ITEMS),
       activation=NAMES, init=NAMES, output=NAMES, dtype=DTYPE_LIKES, leak=SCALARS)
def test_property_mlp_construction(sizes, activation, init, output, dtype, leak):
    try:
        net = MLP(sizes, activation=activation, init=init, output=output, dtype=dtype,
                  leak=leak, rng=0)
    except Exception as exc:                   # noqa: BLE001
        _check_outcome(exc)
    else:
        assert net.dtype in (np.float32, np.float64)
        assert all(np.isfinite(w).all() for w in net.weights)


@PROPERTY
@given(data=st.data())
def test_property_from_arrays(data):
    n_layers = data.draw(st.integers(0, 3))
    weights = [data.draw(arrays(max_dims=3)) for _ in range(n_layers)]
    biases = [data.draw(arrays(max_dims=2)) for _ in range(data.draw(
        st.sampled_from([n_layers, max(n_layers - 1, 0)])))]
    try:
        net = MLP.from_arrays(weights, biases)
    except Exception as exc:                   # noqa: BLE001
        _check_outcome(exc)
    else:
        assert net.dtype in (np.float32, np.float64)
        assert all(np.isfinite(a).all() for a in net.weights + net.biases)


@st.composite
def labels_for(draw, net, loss, n):
    if draw(st.integers(0, 3)) == 0:
        return draw(arrays())
    k = net.sizes[-1]
    if loss == "bce":
        return draw(arrays(shape=(n,), dtypes=[np.int8, np.bool_, np.float32, np.float64]))
    if loss == "mse":
        return draw(arrays(shape=(n, k), dtypes=NUMERIC_DTYPES))
    return draw(hnp.arrays(np.int64, (n,), elements=st.integers(-1, k)))


@PROPERTY
@example(lr=HUGE_INT, loss="bce", backend="cython", batch_size=None, pwo=False, epochs=1)
@given(lr=st.one_of(st.sampled_from([0.05, 1.0, 1e3, 1e30]), SCALARS),
       loss=st.sampled_from(sorted(LOSSES)), backend=st.sampled_from(BACKENDS),
       batch_size=st.one_of(st.none(), st.integers(-1, 7), st.sampled_from([True, 2.5])),
       pwo=st.booleans(),
       epochs=st.one_of(st.integers(0, 3), st.integers(max_value=-1),
                        SCALARS.filter(lambda v: not isinstance(v, int) or v < 0)))
def test_property_trainer_parameters(lr, loss, backend, batch_size, pwo, epochs):
    cls = PositionWise if pwo else GradientDescent
    net = MLP([3, 2, 2], rng=0)
    X = np.random.default_rng(0).standard_normal((6, 3))
    y = {"bce": None, "mse": X[:, :2], "cross_entropy": X[:, 0] > 0,
         "am_softmax": X[:, 1] > 0}[loss]
    if loss == "bce":
        net = MLP([3, 2, 1], rng=0)
        y = X[:, 2] > 0
    before = state(net)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = cls(lr, loss=loss, backend=backend, batch_size=batch_size).fit(
                net, X, y, epochs=epochs)
    except Exception as exc:                   # noqa: BLE001
        _check_outcome(exc)
        assert state(net) == before
    else:
        assert hist.stopped_reason in STOP_REASONS
        assert all(np.isfinite(a).all() for a in net.weights + net.biases)


@PROPERTY
@given(data=st.data(), loss=st.sampled_from(sorted(LOSSES)), pwo=st.booleans(),
       backend=st.sampled_from(BACKENDS),
       batch_size=st.one_of(st.none(), st.integers(1, 7)), epochs=st.integers(0, 3),
       lr=st.sampled_from([0.01, 0.5, 1e4]))
def test_property_fit_inputs(data, loss, pwo, backend, batch_size, epochs, lr):
    """Arbitrary X and y at fit: a History, or ValueError/TypeError with the network
    untouched. The one other outcome is the documented FloatingPointError for an initial
    loss that overflows (huge but finite inputs)."""
    net = data.draw(networks())
    X = data.draw(inputs_for(net))
    n = np.shape(X)[0] if np.ndim(X) else 1
    y = data.draw(labels_for(net, loss, n))
    val = None
    if data.draw(st.integers(0, 4)) == 0:
        val = (data.draw(inputs_for(net)), data.draw(labels_for(net, loss, 2)))
    cls = PositionWise if pwo else GradientDescent
    before = state(net)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = cls(lr, loss=loss, backend=backend, batch_size=batch_size).fit(
                net, X, y, epochs=epochs, validation_data=val)
    except FloatingPointError as exc:
        assert str(exc).startswith("The initial loss is"), exc
        assert state(net) == before
    except Exception as exc:                   # noqa: BLE001
        _check_outcome(exc)
        assert state(net) == before
    else:
        assert hist.stopped_reason in STOP_REASONS
        assert len(hist.loss) == hist.epochs + 1 <= epochs + 1
        assert all(np.isfinite(a).all() for a in net.weights + net.biases)
        assert net.output == LOSSES[loss].output
