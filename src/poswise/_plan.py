"""The execution plan of a fit: the one place that decides how an epoch is computed.

A :class:`Plan` says which engine runs (the Cython kernels or the numpy twin), how the
first layer is held (``primal`` BLAS on ``W[0]``, ``dual`` through the Gram matrix,
``direct`` hand-written kernels on a transposed copy), whether full-batch epochs are fused
(one pass over X per GD epoch) or row-wise (``row_threads``: each span step's passes over
the activations go block by block, ``span_block`` rows at a time, split over the threads),
how many threads the kernels use, and whether BLAS is held to one thread during the
epochs. The trainers, the command line and the benchmarks read it; the engine refuses
a combination that contradicts it instead of silently running another schedule.
"""
import os
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Plan", "make_plan", "build_engines", "FIRST_LAYER_MODES", "BACKENDS"]

BACKENDS = ("cython", "numpy")
FIRST_LAYER_MODES = ("auto", "primal", "dual", "direct")
# Full-batch GD with the direct first layer runs fused: blocks of about this many bytes of
# X go forward and backward while in cache, so X is read once per epoch, not twice. Blocks
# are a multiple of 16 rows (the kernels' register blocks: a ragged tail re-streams the
# first-layer weights per row; 42-row CIFAR blocks were 1.3x slower than 48-row ones).
# Not an L2-sized tile: each block also re-reads the first layer's weights and gradient
# (2 n1 D values), so smaller blocks were slower on CIFAR-shaped data (0.75 MiB: 10-20 %;
# benchmarks/fused_block.py, docs/performance.md).
FUSED_BLOCK_BYTES = 3 << 19
# Span steps with the direct first layer run row-wise from this many rows on: their passes
# over the activations go block by block (cache-sized blocks of rows, the engine's
# ``span_block``), split over the threads when there are several.
SPAN_THREAD_MIN_ROWS = 4096
# Rows per block of those passes; None: as many as fit the level-2 cache the CPU reports
# with their activations and errors (the engine's ``span_block``).
SPAN_BLOCK_ROWS = None


def kernel_limits():
    """(max threads, widest direct first layer, direct kernels available) from the
    compiled kernels, where the limits are defined (``_kernels/_direct.h``)."""
    from ._kernels import _core
    return _core.MAX_THREADS, _core.DIRECT_MAX_WIDTH, _core.direct_supported()


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """How the epochs of one fit are computed (see the module docstring)."""
    backend: str
    first_layer: str
    threads: int
    fused_block: int = 0
    row_threads: bool = False
    minibatch: bool = False
    blas_single: bool = False
    span_block: int = 0

    def as_dict(self):
        return asdict(self)


def _dual_refusal(trainer, rule, full_batch, cosine_first):
    if trainer.backend != "cython":
        return "needs backend='cython'"
    if not full_batch:
        return "needs full-batch training"
    if cosine_first:
        return "cannot hold the am_softmax output layer"
    if not rule.row_space:
        return (f"keeps W[0] as a W0_init - C X, which the SGD family (momentum, Nesterov, "
                f"weight decay) preserves but {rule!r} does not: its elementwise scaling "
                f"of the gradient leaves the row space of X (use first_layer='direct' or "
                f"'primal')")
    return None


def make_plan(trainer, sizes, n_samples, n_features, epochs, rule, *, itemsize=8,
              mode=None, distributed=False, cores=None):
    """The plan for ``trainer`` training a network of ``sizes`` on ``n_samples`` rows.

    ``mode`` forces the first-layer mode (a resumed checkpoint's), else
    ``trainer.first_layer`` decides; an explicit mode that cannot run raises ValueError.
    ``distributed``: epochs are driven span by span through the engine's ``gradients`` and
    ``apply`` (poswise.distributed), so neither the dual first layer (tied to one
    process's rows) nor fused epochs apply.
    """
    N, D = n_samples, n_features
    n1 = sizes[1]
    full_batch = trainer.batch_size is None or trainer.batch_size >= N
    cosine_first = trainer.loss == "am_softmax" and len(sizes) == 2
    cython = trainer.backend == "cython"
    if cython:
        max_threads, max_width, direct_cpu = kernel_limits()
    else:
        max_threads, max_width, direct_cpu = 1, 0, False
    dual_no = _dual_refusal(trainer, rule, full_batch, cosine_first)
    if distributed and not dual_no:
        dual_no = ("keeps one process's rows (its Gram matrix): data-parallel training "
                   "runs primal or direct")
    direct_ok = cython and not cosine_first and n1 <= max_width and direct_cpu
    requested = mode or trainer.first_layer
    if requested == "dual" and dual_no:
        raise ValueError(f"first_layer='dual' needs backend='cython', full-batch training, "
                         f"an update rule of the SGD family and a first layer that is not "
                         f"the am_softmax output layer; here it {dual_no}.")
    if requested == "direct" and not direct_ok:
        if mode is not None:            # a direct checkpoint on a CPU without AVX2
            requested = "primal"
        else:
            raise ValueError(
                f"first_layer='direct' needs backend='cython', a CPU with AVX2 and FMA, at "
                f"most {max_width or 32} first-layer outputs (this network has {n1}) and a "
                f"first layer that is not the am_softmax output layer.")
    if requested == "auto":
        # Dual: set-up costs N^2 D (the Gram matrix) + N D n1 (P); each epoch saves about
        # 4 N D n1 (1 - N/D) flops: worth it once the fit is long enough.
        if not dual_no and 2 * N <= D and epochs * 4 * n1 * (1 - N / D) > N + n1:
            requested = "dual"
        # Direct: beats BLAS's general GEMM on skinny products once they are large enough
        # for the per-call overhead not to matter (benchmarks/).
        elif direct_ok and N * D >= 1 << 16:
            requested = "direct"
        else:
            requested = "primal"
    # cores: what this process may use (under MPI, its share of the node)
    threads = min(trainer.threads or cores or available_cores(), max_threads) if cython else 1
    plain = requested == "direct" and trainer.loss != "am_softmax" and full_batch
    fused = 0
    if plain and not distributed and list(trainer.spans(len(sizes) - 1)) == [0]:
        fused = max(16, FUSED_BLOCK_BYTES // (D * itemsize) // 16 * 16)
    row_threads = plain and not fused and N >= SPAN_THREAD_MIN_ROWS
    blas_single = requested == "direct" or (requested == "dual" and trainer.threads is None)
    span_block = int(SPAN_BLOCK_ROWS or 0) if row_threads else 0
    return Plan(trainer.backend, requested, int(threads), int(fused), bool(row_threads),
                not full_batch, bool(blas_single), span_block)


def _new_engine(backend, *args, **kwargs):
    if backend == "numpy":
        from ._numpy_backend import NumpyEngine
        for key in ("direct", "nthreads", "fused_block", "row_threads", "span_block"):
            kwargs.pop(key, None)
        return NumpyEngine(*args, **kwargs)
    from ._kernels._core import Engine
    rule = kwargs.get("rule")
    kwargs["rule"] = None if rule is None else rule.kernel_params()
    return Engine(*args, **kwargs)


def build_engines(plan, trainer, net, ws, bs, X, y, val, rule, state, dual_state=None,
                  sample_weight=None):
    """The training engine, the validation engine (or None), the function that writes the
    first layer back into ``net`` (or None), and the dual-mode arrays (or None).

    ``dual_state`` (``{"W0_init", "C"}``) continues a dual run; otherwise the dual first
    layer starts from the network's current ``W[0]``.
    """
    N = y.shape[0]           # (X is None when read from disk in blocks)
    L = len(ws)
    eng_args = (trainer.loss, net.activation, net.leak, float(trainer.s), float(trainer.m))
    common = dict(rule=rule, state=state, spans=trainer.spans(L), scales=trainer.scales(L))
    if plan.first_layer == "dual":
        from ._kernels._core import materialize_first_layer
        W0_init = ws[0].copy()
        C = np.zeros((ws[0].shape[0], N), dtype=ws[0].dtype)
        dual_arrays = {"W0_init": W0_init, "C": C, "a": np.ones(1), "va": np.zeros(1)}
        if rule.hyper().get("momentum", 0) > 0:
            dual_arrays["V"] = np.zeros_like(C)
        if dual_state is not None:
            for k, arr in dual_arrays.items():
                if k in dual_state:
                    np.copyto(arr, dual_state[k])
        extra = (dual_arrays["a"], dual_arrays.get("V"), dual_arrays["va"])
        P, G = X @ W0_init.T, X @ X.T
        eng = _new_engine(plan.backend, ws, bs, *eng_args, N, dual=(P, G, C) + extra,
                          **common)
        eng.set_data(X, y, P, G, sample_weight=sample_weight)
        veng = None
        if val is not None:
            Xv, yv = val
            Pv, Gv = Xv @ W0_init.T, Xv @ X.T
            veng = _new_engine(plan.backend, ws, bs, *eng_args, Xv.shape[0], train=False,
                               dual=(Pv, Gv, C) + extra, **common)
            veng.set_data(Xv, yv, Pv, Gv)

        def sync():
            materialize_first_layer(W0_init, C, X, ws[0], float(dual_arrays["a"][0]))
        return eng, veng, sync, dual_arrays

    direct = sync = None
    if plan.first_layer == "direct":
        from ._kernels._core import VEC_BYTES
        n1, D = ws[0].shape
        lanes = VEC_BYTES // ws[0].itemsize
        direct = np.zeros((D, -(-n1 // lanes) * lanes), dtype=ws[0].dtype)
        direct[:, :n1] = ws[0].T

        def sync():
            np.copyto(ws[0], direct[:, :n1].T)
    eng = _new_engine(plan.backend, ws, bs, *eng_args, N, direct=direct,
                      nthreads=plan.threads, fused_block=plan.fused_block,
                      row_threads=plan.row_threads, span_block=plan.span_block, **common)
    eng.set_data(X, y, sample_weight=sample_weight)
    veng = None
    if val is not None:
        Xv, yv = val
        veng = _new_engine(plan.backend, ws, bs, *eng_args, Xv.shape[0], train=False,
                           direct=direct, nthreads=plan.threads, **common)
        veng.set_data(Xv, yv)
    return eng, veng, sync, None
