"""Full-batch gradient descent and the position-wise optimizer.

The trainers are thin: they validate, build an engine (the Cython kernels, or their numpy
twin with ``backend="numpy"``), and run the epoch loop (timing, history, validation,
callbacks, stopping, divergence and interruption). They do not know how gradients are
computed: anything with the engine interface (``forward``, ``epoch``, ``batch_step``,
``snapshot``, ``rollback``, ``accuracy``) can drive them.
"""
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _layout
from ._layout import check_choice, check_scalar
from .losses import LOSSES
from .network import MLP

__all__ = ["History", "GradientDescent", "PositionWise", "DivergenceWarning"]

BACKENDS = ("cython", "numpy")
FIRST_LAYER_MODES = ("auto", "primal", "dual", "direct")
# The direct kernels vectorise across at most 32 first-layer outputs (_direct.h).
DIRECT_MAX_WIDTH = 32
# Full-batch GD with the direct first layer runs fused: blocks of about this many bytes of
# X go forward and backward while in cache, so X is read once per epoch, not twice. Blocks
# are a multiple of 16 rows (the kernels' register blocks: a ragged tail re-streams the
# first-layer weights per row; 42-row CIFAR blocks were 1.3x slower than 48-row ones).
FUSED_BLOCK_BYTES = 3 << 19
# PWO with the direct first layer splits each span step's row-wise work over threads from
# this many rows on (below it, thread start-up costs more than it saves).
SPAN_THREAD_MIN_ROWS = 4096
STOP_REASONS = ("max_epochs", "target_reached", "callback", "diverged", "interrupted")


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite."""


@dataclass
class History:
    """What happened during one ``fit``.

    Attributes
    ----------
    loss : list of float
        Training loss: entry 0 before training, entry i after i epochs (the same
        definition for GD and PWO; for mini-batch training, the full-data loss after the
        epoch's last step).
    val_loss, val_accuracy : list of float
        The same for ``validation_data`` (empty without it; accuracy is NaN for mse).
    seconds : list of float
        Cumulative wall time (``time.perf_counter``) after each entry of ``loss``, the
        set-up and the initial forward pass included, validation excluded.
    val_seconds : float
        Total time spent evaluating validation data.
    epochs : int
        Epochs run.
    epochs_to_target : int or None
        First epoch whose monitored loss was below ``target_loss``.
    stopped_reason : str
        ``"max_epochs"``, ``"target_reached"``, ``"callback"``, ``"diverged"`` or
        ``"interrupted"``.
    """
    optimizer: str = ""
    lr: float = float("nan")
    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    val_seconds: float = 0.0
    epochs: int = 0
    epochs_to_target: int = None
    stopped_reason: str = ""
    first_layer: str = "primal"

    @property
    def seconds_to_target(self):
        """Wall time when the target was reached, or None."""
        if self.epochs_to_target is None:
            return None
        return self.seconds[self.epochs_to_target]

    def to_dict(self):
        """A JSON-serialisable dict (non-finite floats become None)."""
        def clean(v):
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v
        return {k: clean(getattr(self, k)) for k in (
            "optimizer", "lr", "loss", "val_loss", "val_accuracy", "seconds",
            "val_seconds", "epochs", "epochs_to_target", "stopped_reason", "first_layer")}


def _available_cores():
    try:
        import os
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        import os
        return os.cpu_count() or 1


def _direct_supported():
    from ._kernels._core import direct_supported
    return direct_supported()


def _new_engine(backend, *args, direct=None, nthreads=1, fused_block=0, row_threads=False,
                **kwargs):
    if backend == "numpy":
        from ._numpy_backend import NumpyEngine
        return NumpyEngine(*args, **kwargs)
    kwargs.update(direct=direct, nthreads=nthreads, fused_block=fused_block,
                  row_threads=row_threads)
    from ._kernels._core import Engine
    return Engine(*args, **kwargs)


class _Trainer:
    _pwo = False
    _short = ""

    def __init__(self, lr, *, loss="bce", batch_size=None, backend="cython",
                 first_layer="auto", threads=None, rng=None, s=30.0, m=0.35,
                 on_divergence="stop"):
        self.lr = lr
        self.loss = loss
        self.batch_size = batch_size
        self.backend = backend
        self.first_layer = first_layer
        self.threads = threads
        self.rng = rng
        self.s = s
        self.m = m
        self.on_divergence = on_divergence
        self._validate_params()

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr!r}, loss={self.loss!r}, "
                f"batch_size={self.batch_size!r}, backend={self.backend!r})")

    def _validate_params(self):
        name = type(self).__name__
        check_scalar(self.lr, "lr", name, low=0)
        check_choice(self.loss, "loss", name, tuple(LOSSES))
        check_scalar(self.batch_size, "batch_size", name, kind="int", low=1,
                     low_inclusive=True, allow_none=True)
        check_choice(self.backend, "backend", name, BACKENDS)
        check_choice(self.first_layer, "first_layer", name, FIRST_LAYER_MODES)
        check_scalar(self.threads, "threads", name, kind="int", low=1, low_inclusive=True,
                     allow_none=True)
        check_scalar(self.s, "s", name, low=0)
        check_scalar(self.m, "m", name, low=0, low_inclusive=True)
        check_choice(self.on_divergence, "on_divergence", name, ("stop", "raise"))

    # ------------------------------------------------------------------ fit
    def fit(self, net, X, y, *, epochs, target_loss=None, validation_data=None,
            monitor="loss", callbacks=(), progress=False, checkpoint=None,
            checkpoint_every=None, resume=None):
        """Train ``net`` in place and return its :class:`History`.

        Parameters
        ----------
        net : MLP
            Updated in place. A call that fails validation leaves it untouched; a run that
            diverges or is interrupted leaves it at the last completed, finite epoch.
        X : array-like of shape (n_samples, n_features)
            Converted to the network's dtype, C order.
        y : array-like
            Labels 0/1 (bce), integer classes (cross_entropy, am_softmax) or real targets
            of shape (n_samples, n_outputs) (mse).
        epochs : int
            Maximum number of epochs. An epoch is one full-batch step (GD) or one
            position-wise sweep (PWO); with ``batch_size`` it is one pass over shuffled
            mini-batches, each taking one such step.
        target_loss : float, optional
            Stop at the first epoch whose monitored loss is below it.
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch (time reported separately).
        monitor : {"loss", "val_loss"}
            The loss that ``target_loss`` is compared with.
        callbacks : sequence of callables
            Each is called as ``callback(epoch, history)`` after every epoch (and with
            epoch 0 before training); one that returns True stops training.
        progress : bool
            Print a progress line to stderr.
        checkpoint : path-like, optional
            Write a checkpoint (a model file with the training state, see
            ``poswise.io``) every ``checkpoint_every`` epochs and when training stops.
        checkpoint_every : int, optional
            Epochs between checkpoints (default: only when training stops).
        resume : path-like, optional
            Continue from a checkpoint written by the same trainer settings on the same
            data: ``net`` receives the checkpoint's weights, the history and the shuffling
            state are restored, and training runs up to ``epochs`` in total, exactly as an
            uninterrupted run would.

        Returns
        -------
        History

        Raises
        ------
        ValueError, TypeError
            Invalid parameters or inputs (the network is left untouched).
        FloatingPointError
            The initial loss is not finite (inputs too large for the network), or the
            loss diverged with ``on_divergence="raise"``.
        """
        t_start = time.perf_counter()
        self._validate_params()
        name = type(self).__name__
        if not isinstance(net, MLP):
            raise TypeError(f"net must be a poswise.MLP; got {type(net).__name__}.")
        epochs = check_scalar(epochs, "epochs", f"{name}.fit", kind="int", low=0,
                              low_inclusive=True)
        target_loss = check_scalar(target_loss, "target_loss", f"{name}.fit",
                                   allow_none=True)
        check_choice(monitor, "monitor", f"{name}.fit", ("loss", "val_loss"))
        if monitor == "val_loss" and validation_data is None:
            raise ValueError("monitor='val_loss' needs validation_data.")
        if callable(callbacks):
            callbacks = (callbacks,)
        try:
            callbacks = tuple(callbacks)
        except TypeError:
            raise TypeError(f"callbacks must be a callable or a sequence of callables; got "
                            f"{callbacks!r}.") from None
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables; got {cb!r}.")
        checkpoint_every = check_scalar(checkpoint_every, "checkpoint_every", f"{name}.fit",
                                        kind="int", low=1, low_inclusive=True,
                                        allow_none=True)
        ws, bs = net._checked_params()
        sizes, dt = net.sizes, net.dtype
        X = _layout.check_X(X, dt, sizes[0])
        y = _layout.check_y(y, self.loss, X.shape[0], sizes[-1], dt)
        val = None
        if validation_data is not None:
            try:
                Xv, yv = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val).") from None
            Xv = _layout.check_X(Xv, dt, sizes[0], name="X_val")
            yv = _layout.check_y(yv, self.loss, Xv.shape[0], sizes[-1], dt, name="y_val")
            val = (Xv, yv)

        state = None
        if resume is not None:
            state = self._read_checkpoint(resume, net, X)
        ckpt = None
        if checkpoint is not None:
            ckpt = (checkpoint, checkpoint_every)

        threads_ctx = None
        if self.threads is not None:
            from threadpoolctl import threadpool_limits
            threads_ctx = threadpool_limits(limits=self.threads)
        try:
            return self._run(net, ws, bs, X, y, val, epochs,
                             target_loss, monitor, callbacks, progress, t_start, state, ckpt)
        finally:
            if threads_ctx is not None:
                threads_ctx.restore_original_limits()

    def _first_layer_mode(self, net, X, epochs):
        """'primal' (BLAS on W[0]), 'dual' (Gram matrix) or 'direct' (hand kernels)."""
        N, D = X.shape
        n1 = net.sizes[1]
        full_batch = self.batch_size is None or self.batch_size >= N
        not_cosine = not (self.loss == "am_softmax" and net.n_layers == 1)
        dual_ok = self.backend == "cython" and full_batch and not_cosine
        direct_ok = (self.backend == "cython" and not_cosine and n1 <= DIRECT_MAX_WIDTH
                     and _direct_supported())
        if self.first_layer == "dual" and not dual_ok:
            raise ValueError(
                "first_layer='dual' needs backend='cython', full-batch training and a "
                "first layer that is not the am_softmax output layer.")
        if self.first_layer == "direct" and not direct_ok:
            raise ValueError(
                f"first_layer='direct' needs backend='cython', a CPU with AVX2 and FMA, at "
                f"most {DIRECT_MAX_WIDTH} first-layer outputs (this network has {n1}) and a "
                f"first layer that is not the am_softmax output layer.")
        if self.first_layer != "auto":
            return self.first_layer
        # Dual: set-up costs N^2 D (the Gram matrix) + N D n1 (P); each epoch saves about
        # 4 N D n1 (1 - N/D) flops: worth it once the fit is long enough.
        if dual_ok and 2 * N <= D and epochs * 4 * n1 * (1 - N / D) > N + n1:
            return "dual"
        # Direct: beats BLAS's general GEMM on skinny products once they are large enough
        # for the per-call overhead not to matter (benchmarks/bench_epoch.py).
        if direct_ok and N * D >= 1 << 16:
            return "direct"
        return "primal"

    def _settings(self):
        return {"optimizer": self._short, "lr": float(self.lr), "loss": self.loss,
                "batch_size": self.batch_size, "s": float(self.s), "m": float(self.m)}

    def _read_checkpoint(self, path, net, X):
        """Load a checkpoint into ``net``; return the state to resume from."""
        from . import io
        cnet, meta, arrays = io.read_model_file(path)
        info = meta.get("checkpoint") if isinstance(meta, dict) else None
        if not isinstance(info, dict):
            raise ValueError(f"{path} is a model file, not a training checkpoint.")
        if cnet.sizes != net.sizes or cnet.dtype != net.dtype or \
                cnet.activation != net.activation:
            raise ValueError(
                f"The checkpoint {path} holds a network {cnet.sizes} "
                f"({np.dtype(cnet.dtype).name}, {cnet.activation}); the network to resume "
                f"is {net.sizes} ({np.dtype(net.dtype).name}, {net.activation}).")
        mine = self._settings()
        theirs = info.get("settings", {})
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            pretty = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"The checkpoint {path} was written with other trainer "
                             f"settings ({pretty}); resume with the same settings.")
        if info.get("n_samples") != X.shape[0]:
            raise ValueError(f"The checkpoint {path} was written for {info.get('n_samples')} "
                             f"samples; X has {X.shape[0]}.")
        hist = History(**{k: v for k, v in info["history"].items()})
        hist.loss = [float("nan") if v is None else v for v in hist.loss]
        hist.val_loss = [float("nan") if v is None else v for v in hist.val_loss]
        hist.val_accuracy = [float("nan") if v is None else v for v in hist.val_accuracy]
        for dst, src in zip(net._weights + net._biases, cnet._weights + cnet._biases):
            np.copyto(dst, src)
        return {"history": hist, "rng": info.get("rng"), "arrays": arrays}

    def _write_checkpoint(self, path, net, hist, gen, dual_arrays, n_samples):
        from . import io
        info = {"settings": self._settings(), "history": hist.to_dict(),
                "n_samples": n_samples,
                "rng": gen.bit_generator.state if gen is not None else None}
        io.save_model(net, path, metadata={"checkpoint": info}, arrays=dual_arrays)

    def _build_engines(self, net, ws, bs, X, y, val, mode, state):
        """The training engine, the validation engine (or None), the function that
        writes the first layer back into ``net`` (or None), and the dual-mode arrays a
        checkpoint needs (or None)."""
        N = X.shape[0]
        eng_args = (self.loss, net.activation, net.leak, float(self.s), float(self.m))
        nthreads = self.threads or _available_cores()
        direct = dual_arrays = veng = None
        if mode == "dual":
            from ._kernels._core import materialize_first_layer
            W0_init = ws[0].copy()
            C = np.zeros((ws[0].shape[0], N), dtype=ws[0].dtype)
            if state is not None and "W0_init" in state["arrays"]:
                np.copyto(W0_init, state["arrays"]["W0_init"])
                np.copyto(C, state["arrays"]["C"])
            dual_arrays = {"W0_init": W0_init, "C": C}
            P, G = X @ W0_init.T, X @ X.T
            eng = _new_engine(self.backend, ws, bs, *eng_args, N, dual=(P, G, C))
            eng.set_data(X, y, P, G)
            if val is not None:
                Xv, yv = val
                Pv, Gv = Xv @ W0_init.T, Xv @ X.T
                veng = _new_engine(self.backend, ws, bs, *eng_args, Xv.shape[0],
                                   train=False, dual=(Pv, Gv, C))
                veng.set_data(Xv, yv, Pv, Gv)

            def sync():
                materialize_first_layer(W0_init, C, X, ws[0])
            return eng, veng, sync, dual_arrays

        sync = None
        if mode == "direct":
            n1, D = ws[0].shape
            lanes = 64 // ws[0].itemsize
            direct = np.zeros((D, -(-n1 // lanes) * lanes), dtype=ws[0].dtype)
            direct[:, :n1] = ws[0].T

            def sync():
                np.copyto(ws[0], direct[:, :n1].T)
        full_batch = self.batch_size is None or self.batch_size >= N
        plain = mode == "direct" and self.loss != "am_softmax" and full_batch
        fused = 0
        if plain and not self._pwo:
            fused = max(16, FUSED_BLOCK_BYTES // (X.shape[1] * X.itemsize) // 16 * 16)
        row_threads = plain and self._pwo and N >= SPAN_THREAD_MIN_ROWS
        eng = _new_engine(self.backend, ws, bs, *eng_args, N, direct=direct,
                          nthreads=nthreads, fused_block=fused, row_threads=row_threads)
        eng.set_data(X, y)
        if val is not None:
            Xv, yv = val
            veng = _new_engine(self.backend, ws, bs, *eng_args, Xv.shape[0], train=False,
                               direct=direct, nthreads=nthreads)
            veng.set_data(Xv, yv)
        return eng, veng, sync, dual_arrays

    def _run(self, net, ws, bs, X, y, val, epochs, target_loss, monitor, callbacks,
             progress, t_start, state=None, ckpt=None):
        N = X.shape[0]
        lossname = self.loss
        hist = History(optimizer=self._short, lr=float(self.lr))
        if state is not None:
            # continue in the checkpoint's arithmetic; the direct kernels need AVX2, so a
            # run moved to a CPU without it continues on BLAS (equal to rounding)
            mode = state["history"].first_layer
            if mode == "direct" and not _direct_supported():
                mode = "primal"
        else:
            mode = self._first_layer_mode(net, X, epochs)
        hist.first_layer = mode
        eng, veng, sync, dual_arrays = self._build_engines(net, ws, bs, X, y, val, mode,
                                                            state)
        blas_limit = None
        minibatch = self.batch_size is not None and self.batch_size < N
        gen = None
        if minibatch:
            gen = np.random.default_rng(self.rng)
            if state is not None and state["rng"] is not None:
                gen.bit_generator.state = state["rng"]
            B = self.batch_size
            Xb = np.empty((B,) + X.shape[1:], dtype=X.dtype)
            yb = np.empty((B,) + y.shape[1:], dtype=y.dtype)

        net._sync = sync
        lr, pwo = float(self.lr), self._pwo
        val_time = 0.0
        bar = _Progress(epochs, type(self).__name__) if progress else None

        def evaluate():
            nonlocal val_time
            t0 = time.perf_counter()
            hist.val_loss.append(veng.forward())
            hist.val_accuracy.append(veng.accuracy())
            val_time += time.perf_counter() - t0

        def record(loss):
            # wall time since the call started (plus the resumed run's), validation excluded
            hist.loss.append(loss)
            hist.seconds.append(t_offset + time.perf_counter() - t_start - val_time)
            if veng is not None:
                evaluate()
            hist.epochs = len(hist.loss) - 1
            mon = hist.loss[-1] if monitor == "loss" else hist.val_loss[-1]
            if target_loss is not None and hist.epochs_to_target is None and mon < target_loss:
                hist.epochs_to_target = hist.epochs

        def save_checkpoint():
            if sync is not None:
                sync()
            try:
                self._write_checkpoint(ckpt[0], net, hist, gen, dual_arrays, N)
            except OSError as exc:
                warnings.warn(f"The checkpoint {ckpt[0]} could not be written ({exc}); "
                              f"training goes on.", RuntimeWarning, stacklevel=4)

        def rollback():
            eng.rollback()
            if gen is not None:
                gen.bit_generator.state = rng_state

        if mode == "direct" or (mode == "dual" and self.threads is None):
            # Dual epochs are products of N x N x n1 (cat: 209 x 209 x 20): a second BLAS
            # thread only adds synchronisation, which costs up to 60x when another process
            # keeps the cores busy. In direct mode BLAS only computes the small layers, and
            # its idle threads spin against the direct kernels' threads (measured: a
            # 60000 x 784 GD epoch takes 100 ms with two BLAS threads, 70 ms with one). The
            # set-up products above keep all threads.
            from threadpoolctl import threadpool_limits
            blas_limit = threadpool_limits(limits=1, user_api="blas")
        in_epoch = False
        rng_state = None
        e = 0
        t_offset = val_offset = 0.0
        try:
            loss = eng.forward()
            if state is None:
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"The initial loss is {loss}: the network's output overflows on X. "
                        f"Scale the inputs (e.g. to [0, 1]) or re-initialise the network.")
                record(loss)
                e = 0
            else:
                prev = state["history"]
                for k in ("loss", "val_loss", "val_accuracy", "seconds", "epochs",
                          "epochs_to_target", "val_seconds"):
                    setattr(hist, k, getattr(prev, k))
                t_offset = hist.seconds[-1]
                val_offset = hist.val_seconds
                e = hist.epochs
            # the head is part of the trained network (and of its checkpoints)
            net.output = LOSSES[lossname].output
            stop = self._stop_reason(hist, callbacks, e, epochs)
            while stop is None:
                e += 1
                in_epoch = True
                if minibatch:
                    eng.snapshot()
                    rng_state = gen.bit_generator.state
                    perm = gen.permutation(N)
                    for start in range(0, N, B):
                        idx = perm[start:start + B]
                        nb = idx.shape[0]
                        np.take(X, idx, axis=0, out=Xb[:nb])
                        np.take(y, idx, axis=0, out=yb[:nb])
                        eng.set_data(Xb[:nb], yb[:nb])
                        eng.batch_step(pwo, lr)
                    eng.set_data(X, y)
                    loss = eng.forward()
                else:
                    loss = eng.epoch(pwo, lr)
                if not math.isfinite(loss):
                    rollback()
                    if minibatch:
                        eng.forward()
                    in_epoch = False
                    stop = "diverged"
                    break
                record(loss)
                in_epoch = False
                if bar is not None:
                    bar.update(e, loss)
                stop = self._stop_reason(hist, callbacks, e, epochs)
                if ckpt is not None and stop is None and ckpt[1] and e % ckpt[1] == 0:
                    hist.val_seconds = val_offset + val_time
                    save_checkpoint()
        except KeyboardInterrupt:
            # Keep the network and the history at the same, last completed epoch: an
            # interrupt inside an epoch (or while it was being recorded) undoes that epoch.
            n = min(len(hist.loss), len(hist.seconds))
            if veng is not None:
                n = min(n, len(hist.val_loss), len(hist.val_accuracy))
            if in_epoch and e >= 1:
                rollback()
                n = min(n, e)
            for k in ("loss", "seconds", "val_loss", "val_accuracy"):
                del getattr(hist, k)[n:]
            hist.epochs = max(n - 1, 0)
            if hist.epochs_to_target is not None and hist.epochs_to_target >= n:
                hist.epochs_to_target = None
            stop = "interrupted"
        finally:
            net._sync = None
            if sync is not None:
                sync()
            if blas_limit is not None:
                blas_limit.restore_original_limits()
            if bar is not None:
                if hist.loss:
                    bar.update(hist.epochs, hist.loss[-1], force=True)
                bar.close()
        hist.stopped_reason = stop
        hist.val_seconds = val_offset + val_time
        net.output = LOSSES[lossname].output
        if ckpt is not None:
            save_checkpoint()
        if stop == "diverged":
            msg = (f"{type(self).__name__} diverged at epoch {hist.epochs + 1} (loss became "
                   f"non-finite) with lr={self.lr!r}; the network was restored to epoch "
                   f"{hist.epochs}. Try a smaller learning rate.")
            if self.on_divergence == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, DivergenceWarning, stacklevel=3)
        return hist

    @staticmethod
    def _stop_reason(hist, callbacks, epoch, epochs):
        stop = None
        for cb in callbacks:
            answer = cb(epoch, hist)
            if answer is True or answer is np.True_:
                stop = "callback"
        if hist.epochs_to_target is not None:
            return "target_reached"
        if stop is not None:
            return stop
        if epoch >= epochs:
            return "max_epochs"
        return None


class GradientDescent(_Trainer):
    """Full-batch gradient descent: per epoch, every layer is updated once.

    Parameters
    ----------
    lr : float
        Learning rate (> 0); it multiplies the gradient of the mean loss.
    loss : {"bce", "cross_entropy", "am_softmax", "mse"}, default "bce"
        See :mod:`poswise.losses`.
    batch_size : int, optional
        If set (and smaller than the number of samples), each epoch takes one step per
        shuffled mini-batch of this size.
    backend : {"cython", "numpy"}, default "cython"
        The BLAS kernels, or their plain-numpy twin (the specification; slow).
    first_layer : {"auto", "primal", "dual", "direct"}, default "auto"
        How the first layer (whose products with X dominate an epoch) is computed.
        ``primal``: BLAS GEMMs on ``W[0]``. ``dual``: ``W[0]`` is kept as
        ``W0_init - C X`` and trained through the N x N Gram matrix of X, exact and far
        cheaper when N << D (full batch only). ``direct``: hand-written kernels on a
        transposed copy of ``W[0]``, faster than BLAS for first layers of at most 32
        units. ``auto`` picks dual, then direct, then primal, where each is possible and
        cheaper. All agree to float rounding; reading ``net.weights`` gives the current
        weights in every mode.
    threads : int, optional
        Limit the BLAS threads (numpy's and scipy's) during ``fit`` (threadpoolctl)
        and the threads of the direct kernels (default: every available core). During
        the epochs of a ``direct`` fit, and of a ``dual`` fit without ``threads``, BLAS
        runs on one thread: it only computes small products there, and its idle threads
        would spin against the kernels' threads.
    rng : None, int or numpy.random.Generator
        Seed for the mini-batch shuffling.
    s, m : float
        Scale and margin of ``am_softmax``.
    on_divergence : {"stop", "raise"}
        On a non-finite loss, restore the last finite epoch and stop with a
        :class:`DivergenceWarning`, or raise ``FloatingPointError``.
    """
    _pwo = False
    _short = "gd"


class PositionWise(_Trainer):
    """The position-wise optimizer (Valizadeh, arXiv 2204.05312).

    One epoch is a sweep ``j = 1..L``: from fresh activations, backpropagate the output
    error through layers ``L-1 .. L-j`` only, update those layers, and re-run the forward
    pass from layer ``L-j``. The last layer is updated L times per epoch, the first once.
    Parameters are those of :class:`GradientDescent`.
    """
    _pwo = True
    _short = "pwo"


class _Progress:
    """A one-line progress display on stderr, redrawn at most 10 times a second."""

    def __init__(self, total, label):
        import sys
        self.total, self.label, self.stream = total, label, sys.stderr
        self.last = 0.0

    def update(self, epoch, loss, force=False):
        now = time.perf_counter()
        if now - self.last < 0.1 and epoch < self.total and not force:
            return
        self.last = now
        width = 30
        done = int(width * epoch / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * done}{'.' * (width - done)}] "
                          f"{epoch}/{self.total} loss {loss:.5g}")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()
