"""Workloads shared by the poswise benchmarks and ``benchmarks/memory.py``.

Everything here is plain Python with no pytest dependency, so ``memory.py`` can run it in a
fresh subprocess. The benchmark files (``test_bench_*.py``) only wire these pieces into
pytest-benchmark.

Shapes (``SHAPES``): ``tiny`` (pure per-epoch overhead), ``cat`` (N < D; the real data when
``$POSWISE_DATA`` has it), ``mnist`` and ``cifar`` (random data of the real datasets'
shapes). ``POSWISE_BENCH_SMOKE=1`` replaces them with small shapes of the same kind
(``cat`` keeps N < D, the others keep N > D and their output count) so that the whole
suite runs in seconds; the smoke test uses it.

Implementations (``IMPLS``): one epoch of

- ``floor``: numpy's two products with X alone (``X W0^T`` and ``dZ^T X``), each in the
  faster of its orientations, picked by timing at set-up (the "BLAS floor");
- ``poswise-gd`` / ``poswise-pwo``: the package (``backend="cython"``, ``first_layer=
  "auto"``); ``poswise-gd-primal`` / ``poswise-pwo-primal`` on shapes where ``auto`` may
  choose the dual first layer;
- ``numpy-gd`` / ``numpy-pwo``: the package's numpy twin (``backend="numpy"``);
- ``torch-gd`` / ``torch-pwo``: straightforward PyTorch CPU code with autograd (optional);
- ``sklearn-gd``: ``MLPClassifier(solver="sgd", batch_size=N, momentum=0, alpha=0,
  shuffle=False)``, one ``partial_fit`` per epoch (optional).

Per-epoch time excludes set-up: for poswise it is ``(History.seconds[k] -
History.seconds[0]) / k`` of a ``fit(epochs=k)`` (``History.seconds`` is wall time since
``fit`` began: input checks, workspaces, the Gram matrix of the dual mode and the initial
forward pass are before ``seconds[0]``; the trainer's per-epoch bookkeeping is inside); for
the other implementations everything that is not an epoch is done before the timer starts.
"""
import os
import time
from dataclasses import dataclass, field

import numpy as np

SMOKE = os.environ.get("POSWISE_BENCH_SMOKE", "0") not in ("", "0")
#: Multiplies every time budget (more epochs per round); 1 by default.
SCALE = float(os.environ.get("POSWISE_BENCH_SCALE", "1") or 1)
#: BLAS/torch threads for the whole run (None: the libraries' defaults).
THREADS = int(os.environ["POSWISE_BENCH_THREADS"]) if os.environ.get(
    "POSWISE_BENCH_THREADS") else None

HIDDEN = (20, 7, 5)
DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Shape:
    """A benchmark workload: data of ``n`` samples x ``d`` features, ``k`` outputs."""
    name: str
    title: str
    n: int
    d: int
    k: int
    loss: str
    lr: float
    budget_s: float          # target seconds of training per round
    rounds: int
    calib_epochs: int        # epochs of the calibration fit
    max_epochs: int = 5000
    real: str = ""           # dataset loader to try first ("cat")
    hidden: tuple = HIDDEN

    @property
    def sizes(self):
        return (self.d, *self.hidden, self.k)

    @property
    def widest_hidden(self):
        return max(self.hidden)


_FULL = {
    "tiny": Shape("tiny", "tiny (16 samples x 16 features)", 16, 16, 1, "bce", 0.01,
                  budget_s=0.05, rounds=7, calib_epochs=200),
    "cat": Shape("cat", "cat (209 samples x 12288 features, N < D)", 209, 12288, 1, "bce",
                 0.01, budget_s=0.1, rounds=7, calib_epochs=20, real="cat"),
    "mnist": Shape("mnist", "MNIST-shaped (60000 x 784, random data)", 60000, 784, 10,
                   "cross_entropy", 0.1, budget_s=0.6, rounds=5, calib_epochs=1),
    "cifar": Shape("cifar", "CIFAR-shaped (50000 x 3072, random data)", 50000, 3072, 10,
                   "cross_entropy", 0.1, budget_s=1.0, rounds=5, calib_epochs=1),
}
_SMOKE = {
    "tiny": Shape("tiny", "tiny (smoke)", 16, 16, 1, "bce", 0.01, budget_s=0.002, rounds=2,
                  calib_epochs=3, max_epochs=20),
    "cat": Shape("cat", "cat (smoke: 24 x 96, N < D)", 24, 96, 1, "bce", 0.01,
                 budget_s=0.002, rounds=2, calib_epochs=5, max_epochs=20),
    "mnist": Shape("mnist", "MNIST-shaped (smoke: 96 x 28)", 96, 28, 10, "cross_entropy",
                   0.1, budget_s=0.002, rounds=2, calib_epochs=1, max_epochs=20),
    "cifar": Shape("cifar", "CIFAR-shaped (smoke: 80 x 48)", 80, 48, 10, "cross_entropy",
                   0.1, budget_s=0.002, rounds=2, calib_epochs=1, max_epochs=20),
}
SHAPES = _SMOKE if SMOKE else _FULL

#: Implementation name -> (optimizer, kind); kind "poswise"/"numpy" run a poswise fit.
IMPLS = {
    "floor": ("floor", "floor"),
    "poswise-gd": ("gd", "poswise"),
    "poswise-pwo": ("pwo", "poswise"),
    "poswise-gd-primal": ("gd", "poswise"),
    "poswise-pwo-primal": ("pwo", "poswise"),
    "numpy-gd": ("gd", "numpy"),
    "numpy-pwo": ("pwo", "numpy"),
    "torch-gd": ("gd", "torch"),
    "torch-pwo": ("pwo", "torch"),
    "sklearn-gd": ("gd", "sklearn"),
}


def impls_for(shape):
    """Implementations benchmarked on ``shape``, in the order they run."""
    names = ["floor", "poswise-gd", "poswise-pwo"]
    if shape.name == "cat":
        names += ["poswise-gd-primal", "poswise-pwo-primal"]
    return names + ["numpy-gd", "numpy-pwo", "torch-gd", "torch-pwo", "sklearn-gd"]


def optional_import(name):
    """The module, or None when it is not installed (optional peers)."""
    try:
        return __import__(name)
    except ImportError:
        return None


# ------------------------------------------------------------------------------ data

_DATA_CACHE = {}


def fill_uniform(shape, dtype, seed):
    """Uniform [0, 1) data written in place, in blocks: no temporary larger than a block
    (so ``memory.py``'s baseline is the array itself)."""
    out = np.empty(shape, dtype=dtype)
    gen = np.random.default_rng(seed)
    rows = max(1, (1 << 22) // max(1, shape[1]))
    for start in range(0, shape[0], rows):
        gen.random(out=out[start:start + rows], dtype=dtype)
    return out


def make_data(shape, dtype, seed=0):
    """``(X, y, source)`` for ``shape`` in ``dtype``: real data when the shape has a loader
    that finds its files (``source = "real"``), else random data (``"random"``)."""
    X = y = None
    source = "random"
    if shape.real and not SMOKE:
        try:
            from poswise import datasets
            ds = getattr(datasets, f"load_{shape.real}")(dtype=dtype)
            X, y = ds.X_train, ds.y_train
            if X.shape != (shape.n, shape.d):
                X = y = None
            else:
                source = "real"
        except Exception:          # missing files, or the loader is not there yet
            X = y = None
    if X is None:
        X = fill_uniform((shape.n, shape.d), dtype, seed)
        y = np.random.default_rng(seed + 1).integers(0, max(shape.k, 2), size=shape.n)
    return np.ascontiguousarray(X, dtype=dtype), np.asarray(y, dtype=np.int64), source


def cached_data(shape, dtype):
    """``make_data`` once per (shape, dtype) per process; the other dtype's copy of a shape
    is released when a new shape is asked for, to bound memory."""
    key = (shape.name, np.dtype(dtype).name)
    if key not in _DATA_CACHE:
        for old in [k for k in _DATA_CACHE if k[0] != shape.name]:
            del _DATA_CACHE[old]
        _DATA_CACHE[key] = make_data(shape, dtype)
    return _DATA_CACHE[key]


def make_net(shape, dtype, seed=0):
    import poswise
    return poswise.MLP(shape.sizes, dtype=dtype, rng=seed)


def copy_net(net):
    import copy
    return copy.deepcopy(net)


# ------------------------------------------------------------------------ runners
#
# A runner is built once per benchmark (set-up excluded from every timing) and then
# called as ``runner.run(epochs)``, which returns a dict with at least ``epoch_s`` (seconds
# per epoch, set-up excluded) and ``loss``. ``runner.reset()`` restores the initial weights.


class PoswiseRunner:
    """A poswise ``fit(epochs=k)`` on a fresh copy of the initial network."""

    def __init__(self, shape, dtype, X, y, optimizer, backend="cython", first_layer="auto",
                 seed=0):
        import poswise
        self.cls = poswise.GradientDescent if optimizer == "gd" else poswise.PositionWise
        self.kw = dict(loss=shape.loss, backend=backend, first_layer=first_layer,
                       threads=THREADS)
        self.lr = shape.lr
        self.net0 = make_net(shape, dtype, seed)
        self.X, self.y = X, y
        self.net = None

    def reset(self):
        self.net = copy_net(self.net0)

    def run(self, epochs):
        if self.net is None:
            self.reset()
        t0 = time.perf_counter()
        hist = self.cls(self.lr, **self.kw).fit(self.net, self.X, self.y, epochs=epochs)
        wall = time.perf_counter() - t0
        k = hist.epochs
        self.net = None
        return {
            "epoch_s": (hist.seconds[k] - hist.seconds[0]) / max(k, 1),
            "setup_s": hist.seconds[0],
            "wall_s": wall,
            "epochs": k,
            "loss": hist.loss[-1],
            "first_layer": hist.first_layer,
            "stopped_reason": hist.stopped_reason,
        }


class FloorRunner:
    """numpy's two products with X per epoch, each in its faster orientation."""

    def __init__(self, shape, dtype, X, y, optimizer=None, seed=0):
        net = make_net(shape, dtype, seed)
        n1 = shape.sizes[1]
        N, D = X.shape
        W0 = net.weights[0]                       # (n1, D)
        gen = np.random.default_rng(seed)
        dZ = np.ascontiguousarray(gen.standard_normal((N, n1)).astype(dtype))   # (N, n1)
        dZT = np.ascontiguousarray(dZ.T)                                        # (n1, N)
        Z, ZT = np.empty((N, n1), dtype), np.empty((n1, N), dtype)
        G, GT = np.empty((n1, D), dtype), np.empty((D, n1), dtype)
        forward = {
            "X @ W0.T": lambda: np.matmul(X, W0.T, out=Z),
            "W0 @ X.T": lambda: np.matmul(W0, X.T, out=ZT),
        }
        backward = {
            "dZ.T @ X": lambda: np.matmul(dZ.T, X, out=G),
            "dZT @ X": lambda: np.matmul(dZT, X, out=G),
            "X.T @ dZ": lambda: np.matmul(X.T, dZ, out=GT),
        }
        self.choice = {}
        self.fns = []
        for label, cands in (("forward", forward), ("backward", backward)):
            best = min(cands, key=lambda name: _median_time(cands[name], 3))
            self.choice[label] = best
            self.fns.append(cands[best])
        self.loss = float("nan")

    def reset(self):
        pass

    def run(self, epochs):
        f, g = self.fns
        t0 = time.perf_counter()
        for _ in range(epochs):
            f()
            g()
        dt = time.perf_counter() - t0
        return {"epoch_s": dt / max(epochs, 1), "wall_s": dt, "epochs": epochs,
                "loss": float("nan"), "orientation": dict(self.choice)}


def _median_time(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


class TorchRunner:
    """Straightforward PyTorch CPU training, full batch, autograd for the gradients.

    GD epoch: forward, loss, ``autograd.grad`` of all parameters, ``p -= lr g``.
    PWO epoch: for ``first = L-1, ..., 0``: forward from the cached (detached) input of
    layer ``first`` with autograd, loss, gradients of layers ``first..L-1``, update them;
    then one no-grad forward from X refreshes the cached inputs for the next epoch. (Autograd
    needs a graph, so step ``first = 0`` redoes the forward product with X: three products
    with X per epoch where poswise does two.)
    """

    def __init__(self, shape, dtype, X, y, optimizer, seed=0):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F
        if THREADS is not None:
            torch.set_num_threads(THREADS)
        self.pwo = optimizer == "pwo"
        self.lr = shape.lr
        self.X = torch.from_numpy(X)
        if shape.loss == "bce":
            self.y = torch.from_numpy(y.astype(dtype))
            self.lossfn = lambda z, t: F.binary_cross_entropy_with_logits(z[:, 0], t)
        else:
            self.y = torch.from_numpy(y)
            self.lossfn = F.cross_entropy
        net = make_net(shape, dtype, seed)
        self.W0 = [torch.from_numpy(w.copy()) for w in net.weights]
        self.b0 = [torch.from_numpy(b.copy()) for b in net.biases]
        self.reset()

    def reset(self):
        self.W = [w.clone().requires_grad_(True) for w in self.W0]
        self.b = [b.clone().requires_grad_(True) for b in self.b0]
        self.acts = None
        if self.pwo:
            self._refresh()

    def _forward(self, a, first):
        F, L = self.F, len(self.W)
        for l in range(first, L):
            a = F.linear(a, self.W[l], self.b[l])
            if l < L - 1:
                a = self.torch.relu(a)
        return a

    def _refresh(self):
        """Inputs of every layer (detached) for the current weights; returns the loss."""
        F, L = self.F, len(self.W)
        with self.torch.no_grad():
            acts = [self.X]
            a = self.X
            for l in range(L - 1):
                a = self.torch.relu(F.linear(a, self.W[l], self.b[l]))
                acts.append(a)
            out = F.linear(a, self.W[-1], self.b[-1])
            self.acts = acts
            return self.lossfn(out, self.y)

    def gd_epoch(self):
        torch = self.torch
        loss = self.lossfn(self._forward(self.X, 0), self.y)
        params = self.W + self.b
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(g, alpha=-self.lr)
        return loss

    def pwo_epoch(self):
        torch, L = self.torch, len(self.W)
        for first in range(L - 1, -1, -1):
            loss = self.lossfn(self._forward(self.acts[first], first), self.y)
            params = self.W[first:] + self.b[first:]
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.add_(g, alpha=-self.lr)
        return self._refresh()

    def run(self, epochs):
        step = self.pwo_epoch if self.pwo else self.gd_epoch
        loss = None
        t0 = time.perf_counter()
        for _ in range(epochs):
            loss = step()
        dt = time.perf_counter() - t0
        loss = float(loss.detach()) if loss is not None else float("nan")
        return {"epoch_s": dt / max(epochs, 1), "wall_s": dt, "epochs": epochs,
                "loss": loss, "torch_threads": self.torch.get_num_threads()}


class SklearnRunner:
    """``MLPClassifier`` full batch; one ``partial_fit`` is one epoch.

    The first ``partial_fit`` (which initialises the network) is set-up. ``alpha=0`` (no L2,
    like poswise), ``shuffle=False`` (shuffling copies X every epoch, pointless at full
    batch) and ``assume_finite`` (skips the NaN scan of X on every call) keep the epoch the
    training work only.
    """

    def __init__(self, shape, dtype, X, y, optimizer="gd", seed=0):
        from sklearn.neural_network import MLPClassifier
        self.make = lambda: MLPClassifier(
            hidden_layer_sizes=shape.hidden, activation="relu", solver="sgd",
            batch_size=X.shape[0], momentum=0.0, nesterovs_momentum=False, alpha=0.0,
            learning_rate="constant", learning_rate_init=shape.lr, shuffle=False,
            random_state=seed)
        self.X, self.y = X, y
        self.classes = np.arange(max(shape.k, 2))
        self.reset()

    def reset(self):
        self.clf = None

    def run(self, epochs):
        import sklearn
        X, y = self.X, self.y
        with sklearn.config_context(assume_finite=True):
            if self.clf is None:            # set-up, not timed
                self.clf = self.make()
                self.clf.partial_fit(X, y, classes=self.classes)
            clf = self.clf
            t0 = time.perf_counter()
            for _ in range(epochs):
                clf.partial_fit(X, y)
            dt = time.perf_counter() - t0
        return {"epoch_s": dt / max(epochs, 1), "wall_s": dt, "epochs": epochs,
                "loss": float(clf.loss_)}


def make_runner(impl, shape, dtype, X, y, seed=0):
    """The runner of ``impl`` (see ``IMPLS``), or raise ImportError for a missing peer."""
    optimizer, kind = IMPLS[impl]
    if kind == "floor":
        return FloorRunner(shape, dtype, X, y, seed=seed)
    if kind == "poswise":
        fl = "primal" if impl.endswith("-primal") else "auto"
        return PoswiseRunner(shape, dtype, X, y, optimizer, first_layer=fl, seed=seed)
    if kind == "numpy":
        return PoswiseRunner(shape, dtype, X, y, optimizer, backend="numpy",
                             first_layer="primal", seed=seed)
    if kind == "torch":
        if optional_import("torch") is None:
            raise ImportError("torch is not installed")
        return TorchRunner(shape, dtype, X, y, optimizer, seed=seed)
    if kind == "sklearn":
        if optional_import("sklearn") is None:
            raise ImportError("scikit-learn is not installed")
        return SklearnRunner(shape, dtype, X, y, seed=seed)
    raise ValueError(impl)


def calibrate(runner, shape):
    """Epochs per round so that a round lasts about ``shape.budget_s * SCALE`` seconds,
    from one calibration fit of ``shape.calib_epochs`` epochs (which is also the warm-up).
    """
    r = runner.run(shape.calib_epochs)
    runner.reset()
    per_epoch = max(r["epoch_s"], 1e-7)
    k = int(round(shape.budget_s * SCALE / per_epoch))
    lo = 3 if shape.name == "cat" else 2     # auto needs >= 3 epochs to consider the dual
    return max(lo, min(shape.max_epochs, k)), r


# ----------------------------------------------------------------- environment

def _busy_cpu_s():
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    guest = sum(fields[8:10])                                       # counted in user too
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s():
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class OtherCpu:
    """Share of the machine's CPU used by *other* processes during a ``with`` block.

    ``(machine busy CPU time - this process's CPU time) / (wall time x cores)``, from
    ``/proc/stat`` and ``getrusage`` (10 ms resolution): 0 on an idle machine, 0.5 when
    another process kept one of two cores busy. ``share`` is None where ``/proc/stat`` is
    missing. The load average cannot tell this, since the benchmark itself loads the
    machine.
    """

    def __enter__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
        self.share = None
        return self

    def __exit__(self, *exc):
        busy = _busy_cpu_s()
        if busy is None or self.busy0 is None:
            return False
        wall = time.perf_counter() - self.t0
        other = (busy - self.busy0) - (_own_cpu_s() - self.own0)
        self.share = max(0.0, other) / max(wall * (os.cpu_count() or 1), 1e-9)
        return False


def threadpool_info():
    try:
        from threadpoolctl import threadpool_info as info
        return info()
    except Exception as exc:          # pragma: no cover - threadpoolctl is a dependency
        return [{"error": repr(exc)}]


def blas_threads():
    """Threads of the BLAS libraries loaded (numpy's and scipy's OpenBLAS)."""
    return sorted({d.get("num_threads") for d in threadpool_info()
                   if d.get("user_api") == "blas"} - {None})


@dataclass
class Summary:
    """Per-round results of one benchmark, and their medians."""
    rounds: list = field(default_factory=list)

    def add(self, r):
        self.rounds.append(r)

    def extra(self):
        ep = [r["epoch_s"] for r in self.rounds]
        out = {
            "epoch_s_rounds": ep,
            "epoch_s": float(np.median(ep)) if ep else None,
            "epoch_s_min": float(np.min(ep)) if ep else None,
            "epoch_s_max": float(np.max(ep)) if ep else None,
        }
        last = self.rounds[-1] if self.rounds else {}
        for key in ("epochs", "loss", "first_layer", "orientation", "torch_threads",
                    "stopped_reason"):
            if key in last:
                out[key] = last[key]
        if "setup_s" in last:
            out["setup_s"] = float(np.median([r["setup_s"] for r in self.rounds]))
            # Wall time of the whole fit beyond set-up and the initial forward, per epoch:
            # the epochs plus the trainer's per-epoch Python loop and the final sync.
            out["fit_epoch_s"] = float(np.median(
                [(r["wall_s"] - r["setup_s"]) / max(r["epochs"], 1) for r in self.rounds]))
        return out
