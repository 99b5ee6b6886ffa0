"""Training sessions: one network, one trainer, the update rule's state, across fits.

``trainer.fit(net, X, y, ...)`` is a one-shot session. A :class:`TrainingSession`
(``trainer.session(net)``) keeps what outlives one call: the update rule's state (momentum
buffers, Adam moments, step counts) and, while the data and the plan stay the same, the
engine itself (and the Gram matrix of a dual first layer), so that ``partial_fit`` and
``warm_start`` cost no set-up. The epoch loop lives here and nowhere else.

Ownership: a network has at most one running fit. While it runs, ``net.weights`` returns
the current values (materialised from the engine's form, under the network's lock).
"""
import math
import time
import warnings

import numpy as np

from . import _layout
from ._plan import build_engines, make_plan
from .history import DivergenceWarning, History
from .losses import LOSSES

__all__ = ["TrainingSession"]

STATE_KEYS = ("s1W", "s2W", "s1b", "s2b")


def new_rule_state(rule, ws):
    """Zero state of ``rule`` for the weight arrays ``ws`` (the engines' layout)."""
    from ._numpy_backend import new_rule_state as make
    return make(rule, [w.shape for w in ws], ws[0].dtype)


class TrainingSession:
    """A network trained by one trainer over one or more ``fit`` calls.

    Parameters
    ----------
    trainer : GradientDescent, PositionWise or LayerwiseGD
    net : MLP
        Trained in place.

    Attributes
    ----------
    state : dict or None
        The update rule's state: ``t`` (per-layer step counts) and per-layer arrays
        ``s1W``, ``s2W``, ``s1b``, ``s2b`` (None where the rule keeps none); None before
        the first fit.
    """

    def __init__(self, trainer, net):
        from .network import MLP
        if not isinstance(net, MLP):
            raise TypeError(f"net must be a poswise.MLP; got {type(net).__name__}.")
        self.trainer = trainer
        self.net = net
        self.state = None
        self._cache = None

    def reset(self):
        """Forget the update rule's state and the engine (the weights stay)."""
        self.state = None
        self._cache = None

    # ------------------------------------------------------------------ set-up
    def _rule_state(self, rule, ws):
        st = self.state
        ok = st is not None and st["t"].shape == (len(ws),) and all(
            (a is None) == (rule.n_state < k) and (a is None or a.shape == w.shape and
                                                   a.dtype == w.dtype)
            for key, k in zip(STATE_KEYS, (1, 2, 1, 2))
            for a, w in zip(st[key], ws if key.endswith("W") else [w[:, 0] for w in ws]))
        if not ok:
            self.state = new_rule_state(rule, ws)
        return self.state

    def _engines(self, plan, net, ws, bs, X, y, val, rule, resume):
        """Engines for this call: the cached ones when data, plan and arrays are the same
        (their copies of the first layer re-read from the network), else new ones."""
        key = (plan, id(X), X.shape, id(y), None if val is None else (id(val[0]), id(val[1])),
               tuple(id(a) for a in ws + bs), id(self.state))
        c = self._cache
        if resume is None and c is not None and c["key"] == key and \
                np.array_equal(c["w0"], ws[0]):
            return c["engines"]
        dual_state = resume["arrays"] if resume is not None and \
            "W0_init" in resume["arrays"] else None
        engines = build_engines(plan, self.trainer, net, ws, bs, X, y, val, rule,
                                self.state, dual_state)
        # the engine's copy of the first layer (direct, dual) is valid for a later call
        # only if W[0] still holds what the run left there (w0, set at its end)
        self._cache = {"key": key, "engines": engines, "refs": (X, y, val), "w0": None}
        return engines

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, *, epochs, target_loss=None, validation_data=None, monitor="loss",
            callbacks=(), progress=False, checkpoint=None, checkpoint_every=None,
            resume=None):
        """Train for up to ``epochs`` more epochs; see :meth:`GradientDescent.fit`.

        The update rule's state carries over from the previous call of this session.
        """
        t_start = time.perf_counter()
        tr, net = self.trainer, self.net
        tr._validate_params()
        name = type(tr).__name__
        epochs = _layout.check_scalar(epochs, "epochs", f"{name}.fit", kind="int", low=0,
                                      low_inclusive=True)
        target_loss = _layout.check_scalar(target_loss, "target_loss", f"{name}.fit",
                                           allow_none=True)
        _layout.check_choice(monitor, "monitor", f"{name}.fit", ("loss", "val_loss"))
        if monitor == "val_loss" and validation_data is None:
            raise ValueError("monitor='val_loss' needs validation_data.")
        callbacks = _check_callbacks(callbacks)
        checkpoint_every = _layout.check_scalar(
            checkpoint_every, "checkpoint_every", f"{name}.fit", kind="int", low=1,
            low_inclusive=True, allow_none=True)
        with net._owner(name):
            ws, bs = net._checked_params()
            sizes, dt = net.sizes, net.dtype
            X = _layout.check_X(X, dt, sizes[0])
            y = _layout.check_y(y, tr.loss, X.shape[0], sizes[-1], dt)
            val = None
            if validation_data is not None:
                try:
                    Xv, yv = validation_data
                except (TypeError, ValueError):
                    raise ValueError("validation_data must be a pair (X_val, y_val).") from None
                Xv = _layout.check_X(Xv, dt, sizes[0], name="X_val")
                yv = _layout.check_y(yv, tr.loss, Xv.shape[0], sizes[-1], dt, name="y_val")
                val = (Xv, yv)
            rule = tr._rule()
            resumed = None
            if resume is not None:
                from ._checkpoint import read_checkpoint
                resumed = read_checkpoint(resume, tr, net, X, rule)
            plan = make_plan(tr, sizes, X.shape[0], X.shape[1], epochs, rule,
                             itemsize=X.itemsize,
                             mode=resumed["history"].first_layer if resumed else None)
            if resumed is not None:
                self.state = resumed["state"]
            self._rule_state(rule, ws)
            threads_ctx = None
            if tr.threads is not None:
                from threadpoolctl import threadpool_limits
                threads_ctx = threadpool_limits(limits=tr.threads)
            try:
                return self._run(plan, rule, ws, bs, X, y, val, epochs, target_loss, monitor,
                                 callbacks, progress, t_start, resumed,
                                 (checkpoint, checkpoint_every) if checkpoint else None)
            finally:
                if threads_ctx is not None:
                    threads_ctx.restore_original_limits()

    def _run(self, plan, rule, ws, bs, X, y, val, epochs, target_loss, monitor, callbacks,
             progress, t_start, resumed, ckpt):
        tr, net = self.trainer, self.net
        N = X.shape[0]
        hist = History(optimizer=tr.schedule, lr=float(tr.lr), first_layer=plan.first_layer,
                       update=rule.name, update_params=rule.hyper(), threads=plan.threads)
        eng, veng, sync, dual_arrays = self._engines(plan, net, ws, bs, X, y, val, rule,
                                                     resumed)
        gen = batches = None
        if plan.minibatch:
            gen = np.random.default_rng(tr.rng)
            if resumed is not None and resumed["rng"] is not None:
                gen.bit_generator.state = resumed["rng"]
            batches = _Batches(X, y, tr.batch_size, tr.shuffle)
        lr = float(tr.lr)
        clock = _Clock(t_start, hist)
        bar = _progress(progress, epochs, type(tr).__name__)

        def record(loss):
            hist.loss.append(loss)
            hist.seconds.append(clock.now())
            if veng is not None:
                with clock.excluded():
                    hist.val_loss.append(veng.forward())
                    hist.val_accuracy.append(veng.accuracy())
            hist.epochs = len(hist.loss) - 1
            mon = hist.loss[-1] if monitor == "loss" else hist.val_loss[-1]
            if target_loss is not None and hist.epochs_to_target is None and mon < target_loss:
                hist.epochs_to_target = hist.epochs

        def save_checkpoint():
            from ._checkpoint import write_checkpoint
            if sync is not None:
                sync()
            hist.val_seconds = clock.val_total()
            try:
                write_checkpoint(ckpt[0], tr, net, hist, gen, dual_arrays, N, self.state)
            except OSError as exc:
                warnings.warn(f"The checkpoint {ckpt[0]} could not be written ({exc}); "
                              f"training goes on.", RuntimeWarning, stacklevel=5)

        blas_limit = None
        if plan.blas_single:
            # Dual epochs are products of N x N x n1 (cat: 209 x 209 x 20): a second BLAS
            # thread only adds synchronisation. In direct mode BLAS only computes the small
            # layers, and its idle threads spin against the direct kernels' threads
            # (measured: a 60000 x 784 GD epoch took 100 ms with two BLAS threads, 70 ms
            # with one). The set-up products above keep all threads.
            from threadpoolctl import threadpool_limits
            blas_limit = threadpool_limits(limits=1, user_api="blas")
        in_epoch = False
        rng_state = None
        stop = None
        e = 0
        net._sync = sync
        try:
            loss = eng.forward()
            if resumed is None:
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"The initial loss is {loss}: the network's output overflows on X. "
                        f"Scale the inputs (e.g. to [0, 1]) or re-initialise the network.")
                hist.setup_seconds = clock.now()
                record(loss)
            else:
                clock.resume(resumed["history"], hist)
            net.output = LOSSES[tr.loss].output   # the head is part of the trained network
            e = hist.epochs
            stop = _stop_reason(hist, callbacks, e, epochs)
            while stop is None:
                e += 1
                in_epoch = True
                with net._lock:      # readers of net.weights see whole epochs
                    if plan.minibatch:
                        eng.snapshot()
                        rng_state = gen.bit_generator.state
                        ok = batches.run(eng, gen, lr)
                        eng.set_data(X, y)
                        loss = eng.forward() if ok else float("nan")
                    else:
                        loss = eng.epoch(lr)
                if not math.isfinite(loss):
                    eng.rollback()
                    if gen is not None:
                        gen.bit_generator.state = rng_state
                    if plan.minibatch:
                        eng.forward()
                    in_epoch = False
                    stop = "diverged"
                    break
                record(loss)
                in_epoch = False
                if bar is not None:
                    bar.update(e, loss)
                stop = _stop_reason(hist, callbacks, e, epochs)
                if ckpt is not None and stop is None and ckpt[1] and e % ckpt[1] == 0:
                    save_checkpoint()
        except KeyboardInterrupt:
            # Keep the network and the history at the same, last completed epoch: an
            # interrupt inside an epoch (or while it was being recorded) undoes that epoch.
            if in_epoch:
                eng.rollback()
                if gen is not None and rng_state is not None:
                    gen.bit_generator.state = rng_state
            _trim(hist, veng is not None, e if in_epoch else None)
            stop = "interrupted"
        finally:
            net._sync = None
            if sync is not None:
                sync()
            self._cache["w0"] = ws[0].copy()
            if blas_limit is not None:
                blas_limit.restore_original_limits()
            if bar is not None:
                if hist.loss:
                    bar.update(hist.epochs, hist.loss[-1], force=True)
                bar.close()
        hist.stopped_reason = stop
        hist.val_seconds = clock.val_total()
        net.output = LOSSES[tr.loss].output
        if ckpt is not None:
            save_checkpoint()
        if stop == "diverged":
            msg = (f"{type(tr).__name__} diverged at epoch {hist.epochs + 1} (the loss or a "
                   f"parameter became non-finite) with lr={tr.lr!r}; the network was "
                   f"restored to epoch {hist.epochs}. Try a smaller learning rate.")
            if tr.on_divergence == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, DivergenceWarning, stacklevel=4)
        return hist


class _Batches:
    """Shuffled mini-batches of (X, y) in preallocated buffers."""

    def __init__(self, X, y, size, shuffle=True):
        self.X, self.y, self.B, self.shuffle = X, y, size, shuffle
        self.Xb = np.empty((size,) + X.shape[1:], dtype=X.dtype)
        self.yb = np.empty((size,) + y.shape[1:], dtype=y.dtype)

    def run(self, eng, gen, lr):
        """One pass over shuffled batches, one schedule step each; False on a
        non-finite parameter."""
        N = self.X.shape[0]
        perm = gen.permutation(N) if self.shuffle else np.arange(N)
        for start in range(0, N, self.B):
            idx = perm[start:start + self.B]
            nb = idx.shape[0]
            np.take(self.X, idx, axis=0, out=self.Xb[:nb])
            np.take(self.y, idx, axis=0, out=self.yb[:nb])
            eng.set_data(self.Xb[:nb], self.yb[:nb])
            if not eng.batch_step(lr):
                return False
        return True


class _Clock:
    """Wall time of the call (plus a resumed run's), validation excluded."""

    def __init__(self, t_start, hist):
        self.t_start, self.offset, self.val_time, self.val_offset = t_start, 0.0, 0.0, 0.0

    def now(self):
        return self.offset + time.perf_counter() - self.t_start - self.val_time

    def excluded(self):
        clock = self

        class _Excluded:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock.val_time += time.perf_counter() - self.t0
        return _Excluded()

    def val_total(self):
        return self.val_offset + self.val_time

    def resume(self, prev, hist):
        for k in ("loss", "val_loss", "val_accuracy", "seconds", "epochs",
                  "epochs_to_target", "val_seconds", "setup_seconds"):
            setattr(hist, k, getattr(prev, k))
        self.offset = hist.seconds[-1]
        self.val_offset = hist.val_seconds
        self.t_start = time.perf_counter()


def _trim(hist, has_val, in_epoch):
    """Cut every list of ``hist`` to the last epoch they all completed (and before the
    epoch ``in_epoch`` that was undone)."""
    n = min(len(hist.loss), len(hist.seconds))
    if has_val:
        n = min(n, len(hist.val_loss), len(hist.val_accuracy))
    if in_epoch is not None:
        n = min(n, in_epoch)
    for k in ("loss", "seconds", "val_loss", "val_accuracy"):
        del getattr(hist, k)[n:]
    hist.epochs = max(n - 1, 0)
    if hist.epochs_to_target is not None and hist.epochs_to_target >= n:
        hist.epochs_to_target = None


def _check_callbacks(callbacks):
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
    return callbacks


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


def _progress(progress, total, label):
    """None, the built-in display, or the caller's object with update()/close()."""
    if progress is None or progress is False:
        return None
    if hasattr(progress, "update") and hasattr(progress, "close"):
        return progress
    try:
        from .progress import Progress
    except ImportError:
        return _Line(total, label)
    return Progress(total, label)


class _Line:
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
