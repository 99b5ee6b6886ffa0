"""Shared set-up of the data-parallel and streaming tests (also imported by the scripts
that the tests run under mpirun)."""
import numpy as np

from engine_ref import RefEngine
from poswise.distributed import EpochRunner, gd_spans, pwo_spans, rows_for_rank

RULES = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SIZES = (6, 5, 4, 3)
LRS = {"sgd": 0.3, "momentum": 0.1, "nesterov": 0.1, "adam": 0.01, "adamw": 0.01,
       "rmsprop": 0.003}


def make_case(N=37, sizes=SIZES, loss="cross_entropy", seed=0, dtype=np.float64):
    """Data and initial parameters (independent of the rank: every rank calls this)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, sizes[0])).astype(dtype)
    if loss == "bce":
        y = (rng.random(N) > 0.5).astype(dtype)
    elif loss == "mse":
        y = rng.standard_normal((N, sizes[-1])).astype(dtype)
    else:
        y = rng.integers(0, sizes[-1], size=N).astype(np.intc)
    W = [(rng.standard_normal((sizes[l + 1], sizes[l])) / np.sqrt(sizes[l])).astype(dtype)
         for l in range(len(sizes) - 1)]
    b = [(0.1 * rng.standard_normal(sizes[l + 1])).astype(dtype)
         for l in range(len(sizes) - 1)]
    return X, y, W, b


def spans_of(schedule, L):
    return gd_spans(L) if schedule == "gd" else pwo_spans(L)


ENGINES = ("ref", "numpy", "cython")


def make_engine(kind, W, b, loss, update, n_rows, spans):
    """The test engine ("ref", tests/engine_ref.py) or poswise's ("numpy", "cython")."""
    if kind == "ref":
        return RefEngine(W, b, loss, update=update)
    from poswise._plan import _new_engine
    from poswise.session import new_rule_state
    from poswise.updates import get_update
    rule = get_update(update)
    return _new_engine(kind, W, b, loss, "relu", 0.01, 30.0, 0.35, n_rows, rule=rule,
                       state=new_rule_state(rule, W), spans=spans)


def train(X, y, W, b, *, schedule, update, epochs, loss="cross_entropy", comm=None,
          n_total=None, reader=None, reduction="allreduce", lr=None, engine="ref"):
    """Train copies of (W, b) on (X, y); return (weights, biases, losses), the losses as
    in a History: the initial one, then one per epoch."""
    W = [w.copy() for w in W]
    b = [v.copy() for v in b]
    spans = spans_of(schedule, len(W))
    eng = make_engine(engine, W, b, loss, update, len(y), spans)
    if X is None:
        # Streamed: the engine only needs X's shape here (the runner gives it every block
        # through window()); poswise's engines want an array of the rows' count.
        X = np.zeros((len(y), W[0].shape[1]), W[0].dtype) if engine != "ref" else None
    eng.set_data(X, y, n_total=n_total)
    runner = EpochRunner(comm, reader=reader, reduction=reduction)
    lr = LRS[update] if lr is None else lr
    losses = [runner(eng, spans, lr) for _ in range(epochs)]
    return W, b, [runner.initial_loss] + losses


def train_rank(comm, X, y, W, b, **kw):
    """This rank's share of a data-parallel run: its rows, the global N."""
    rows = rows_for_rank(len(y), comm.Get_rank(), comm.Get_size())
    return train(X[rows], y[rows], W, b, comm=comm, n_total=len(y), **kw)


def rel_err(a, b):
    a = np.concatenate([np.ravel(x) for x in a]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in b]).astype(np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
