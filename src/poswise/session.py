"""Training sessions: one network, one trainer, the update rule's state, across fits.

``trainer.fit(net, X, y, ...)`` is a one-shot session. A :class:`TrainingSession`
(``trainer.session(net)``) keeps what outlives one call: the update rule's state (momentum
buffers, Adam moments, step counts) and, while the data and the plan stay the same, the
engine itself (and the Gram matrix of a dual first layer), so that ``partial_fit`` and
``warm_start`` cost no set-up. The epoch loop (:class:`_Loop`) lives here and nowhere else.

A fit has two phases. *Preparation* (validation, the checkpoint to resume, the output
path, the plan, the engines) changes nothing: an error or a Ctrl-C there leaves the
network, the session and every file as they were. *Training* starts with the initial
forward pass; from then on ``fit`` returns a :class:`History` (Ctrl-C included) or raises
an error with the network at the last completed epoch.

Invariants of the epoch loop, true between any two statements of the training phase (an
interrupt handler relies on them; a new fast path must keep them):

1. History: ``loss`` and ``seconds`` (and ``val_loss``, ``val_accuracy`` with validation
   data) hold one entry per completed epoch, 0 to ``hist.epochs``. Only ``_record``
   appends, values first computed, then appended; an interrupt between two appends is
   repaired by ``_trim`` (all lists cut to their common length).
2. Network: outside an epoch (``in_epoch`` False) the parameters -- with the engine's form
   of the first layer (``sync`` materialises it into ``W[0]``) and the update rule's state
   -- are those after the last recorded epoch. Inside an epoch they may be partly updated;
   the engine's backup then holds the epoch's start: mini-batch epochs take the snapshot
   before ``in_epoch`` is set; a full-batch ``engine.epoch`` takes it itself before its
   first change, and a change always advances the rule's step counts (``t_mark``: their
   bytes before the epoch), so a rollback happens exactly when something changed.
3. Shuffling: ``rng_state`` is the generator's state at the start of the current epoch.
4. Readers: parameters change only under the network's lock, followed by
   ``net._changed()`` (readers' snapshots are taken under the same lock).
5. Every file written is a complete checkpoint of a recorded epoch (atomic writes).

(Longer than the usual 400 lines: the loop, its interrupt handling and the end of a fit
share these invariants and are kept together, in one place to read and to extend.)
"""
import math
import sys
import time
import warnings

import numpy as np

from . import _layout
from ._plan import build_engines, make_plan
from .history import DivergenceWarning, History
from .losses import LOSSES

__all__ = ["TrainingSession"]

STATE_KEYS = ("s1W", "s2W", "s1b", "s2b")
# Epochs without per-epoch Python work run in chunks of about this many seconds.
CHUNK_SECONDS = 0.02


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

    def _engines(self, plan, net, ws, bs, X, y, val, rule, resume, sw=None):
        """Engines for this call: the cached ones when data, plan and arrays are the same
        (their copies of the first layer re-read from the network), else new ones."""
        # ws, bs are this fit's views of the network's arrays: key on the arrays
        key = (plan, id(X), y.shape, id(y), None if val is None else (id(val[0]), id(val[1])),
               tuple(id(a if a.base is None else a.base) for a in ws + bs), id(self.state),
               id(sw))
        c = self._cache
        if resume is None and c is not None and c["key"] == key and \
                np.array_equal(c["w0"], ws[0]):
            return c["engines"]
        dual_state = resume["arrays"] if resume is not None and \
            "W0_init" in resume["arrays"] else None
        engines = build_engines(plan, self.trainer, net, ws, bs, X, y, val, rule,
                                self.state, dual_state, sample_weight=sw)
        # the engine's copy of the first layer (direct, dual) is valid for a later call
        # only if W[0] still holds what the run left there (w0, set at its end)
        self._cache = {"key": key, "engines": engines, "refs": (X, y, val, sw), "w0": None}
        return engines

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, *, epochs, target_loss=None, validation_data=None, monitor="loss",
            callbacks=(), progress=False, checkpoint=None, checkpoint_every=None,
            resume=None, sample_weight=None, comm=None, reduction="allreduce",
            patience=None, tol=1e-4):
        """Train for up to ``epochs`` more epochs; see :meth:`GradientDescent.fit`.

        The update rule's state carries over from the previous call of this session.
        """
        from . import _checkpoint
        t_start = time.perf_counter()
        tr, net = self.trainer, self.net
        tr._validate_params()
        name = type(tr).__name__
        where = f"{name}.fit"
        epochs = _layout.check_scalar(epochs, "epochs", where, kind="int", low=0,
                                      low_inclusive=True)
        target_loss = _layout.check_scalar(target_loss, "target_loss", where,
                                           allow_none=True)
        _layout.check_choice(monitor, "monitor", where, ("loss", "val_loss"))
        if monitor == "val_loss" and validation_data is None:
            raise ValueError("monitor='val_loss' needs validation_data.")
        callbacks = _check_callbacks(callbacks)
        patience = _layout.check_scalar(patience, "patience", where, kind="int", low=1,
                                        low_inclusive=True, allow_none=True)
        tol = _layout.check_scalar(tol, "tol", where, low=0, low_inclusive=True)
        checkpoint_every = _layout.check_scalar(
            checkpoint_every, "checkpoint_every", where, kind="int", low=1,
            low_inclusive=True, allow_none=True)
        if checkpoint is not None:
            checkpoint = _checkpoint.check_output_path(checkpoint, "checkpoint", where)
        token, loop = object(), None
        try:
            try:
                net._acquire(name, token)
                o = _Options(epochs, target_loss, monitor, callbacks, progress, checkpoint,
                             checkpoint_every)
                o.comm, o.reduction = comm, reduction
                o.stall = None if patience is None else _Stall(patience, tol, monitor)
                loop = self._prepare(X, y, validation_data, resume, o, t_start,
                                     sample_weight)
                return loop.run()
            finally:
                net._release(token)
        except KeyboardInterrupt:
            # wherever it landed (even between two clean-up statements): release the
            # network; before training nothing was changed, once it began the History
            # is returned, completed by finish()
            net._release(token)
            if loop is None or not loop.started:
                raise
            loop.stop = "interrupted"
            return loop.finish()

    def _prepare(self, X, y, validation_data, resume, o, t_start, sample_weight=None):
        """Everything checked and read before training; changes nothing."""
        from . import _checkpoint
        tr, net = self.trainer, self.net
        where = f"{type(tr).__name__}.fit"
        ws, bs = net._train_views()
        sizes, dt = net.sizes, net.dtype
        o.reader = _stream_reader(X, dt, sizes[0])
        if o.reader is None:
            X = _layout.check_X(X, dt, sizes[0])
        shape = X.shape if o.reader is None else o.reader.shape
        y = _layout.check_y(y, tr.loss, shape[0], sizes[-1], dt)
        sw = _check_sample_weight(sample_weight, shape[0], where)
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
        if o.checkpoint is not None or resume is not None:
            o.data = _checkpoint.data_info(X if o.reader is None else None, y, val, sw,
                                           shape=shape)
        resumed = None
        if resume is not None:
            resumed = _checkpoint.read_checkpoint(resume, tr, net, rule, o.data)
        plan = make_plan(tr, sizes, shape[0], shape[1], o.epochs, rule,
                         itemsize=np.dtype(dt).itemsize,
                         mode=resumed["history"].first_layer if resumed else None,
                         distributed=o.comm is not None or o.reader is not None,
                         cores=_rank_cores(o.comm))
        if o.reader is not None and plan.minibatch:
            raise ValueError(f"{where}: X read from disk in blocks trains full batch "
                             f"(batch_size=None); load it into memory for mini-batches.")
        if o.reader is not None:
            X = None                   # the engines see X only through the reader's blocks
        if o.comm is not None:
            self._agree(o, X, val, sw, plan, where)
        gen = np.random.default_rng(tr.rng) if plan.minibatch else None
        if resumed is not None:
            _checkpoint.check_resumable(resume, resumed, tr, plan, gen, o.monitor)
        if o.checkpoint is not None:
            _checkpoint.check_rng_storable(gen, where)
        o.sample_weight = sw
        return _Loop(self, plan, rule, ws, bs, X, y, val, gen, o, resumed, t_start)


    def _agree(self, o, X, val, sw, plan, where):
        """Data-parallel training over ``o.comm``: every rank must train the same thing
        (checked, the same clear error on every rank); the global row counts."""
        from .distributed import REDUCTIONS, check_agreement
        if o.reduction not in REDUCTIONS:
            raise ValueError(f"The 'reduction' parameter of {where} must be one of "
                             f"{list(REDUCTIONS)}. Got {o.reduction!r} instead.")
        if plan.minibatch:
            raise ValueError(f"{where} with comm= trains full batch: mini-batches over "
                             f"ranks are not supported (batch_size=None).")
        extra = {"epochs": o.epochs, "target_loss": o.target_loss, "monitor": o.monitor,
                 "streamed": o.reader is not None,
                 "checkpoint_every": o.checkpoint_every, "reduction": o.reduction,
                 "sample weights": sw is not None, "validation data": val is not None,
                 "callbacks": len(o.callbacks), "first layer": plan.first_layer}
        Xd = X if o.reader is None else o.reader
        check_agreement(o.comm, self.net, Xd, self.trainer, extra=extra)
        o.n_total = (float(o.comm.allreduce(float(sw.sum()))) if sw is not None
                     else int(o.comm.allreduce(int(Xd.shape[0]))))
        o.nv_total = None if val is None else int(o.comm.allreduce(int(val[0].shape[0])))


class _Options:
    """What the caller asked of one fit (validated)."""

    def __init__(self, epochs, target_loss, monitor, callbacks, progress, checkpoint,
                 checkpoint_every):
        self.epochs, self.target_loss, self.monitor = epochs, target_loss, monitor
        self.callbacks, self.progress = callbacks, progress
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.data = None        # the data's fingerprints, when checkpointing or resuming
        self.sample_weight = None
        self.comm = None          # data-parallel training: this rank's rows of the data
        self.reader = None        # X read from disk in blocks (poswise._streaming)
        self.reduction = "allreduce"
        self.n_total = self.nv_total = None
        self.stall = None         # the patience rule (_Stall), if asked for


class _Loop:
    """One fit's training phase: engines, history, clock and the epoch loop (see the
    invariants in the module docstring)."""

    def __init__(self, session, plan, rule, ws, bs, X, y, val, gen, opts, resumed, t_start):
        tr = session.trainer
        self.sess, self.tr, self.net = session, tr, session.net
        self.plan, self.rule, self.ws, self.bs = plan, rule, ws, bs
        self.X, self.y, self.val, self.gen, self.o = X, y, val, gen, opts
        self.resumed = resumed
        self.lr = float(tr.lr)
        self.hist = History(optimizer=tr.schedule, lr=self.lr, first_layer=plan.first_layer,
                            update=rule.name, update_params=rule.hyper(),
                            threads=plan.threads)
        self.clock = _Clock(t_start)
        self.state = None
        self.eng = self.veng = self.sync = self.dual_arrays = self.batches = self.bar = None
        self.started = False       # the training phase began: fit returns a History
        self.in_epoch = False
        self.current = None        # the epoch being run
        self.t_mark = None         # the step counts before a full-batch epoch
        self.rng_state = None
        self.stop = None
        self.runner = None         # data-parallel epochs (poswise.distributed)
        self.spans = None
        self.pending = None        # a chunk of epochs being run: (first epoch, count)
        self.chunk_buf = None
        self.chunk_size = 1        # the first chunk measures the epoch time
        self.synced = False
        self.saved = False
        self.loaded = False

    # ------------------------------------------------------------------ phases
    def run(self):
        limits = []
        try:
            try:
                if self.tr.threads is not None:
                    from threadpoolctl import threadpool_limits
                    limits.append(threadpool_limits(limits=self.tr.threads))
                if self.resumed is not None:
                    # the training phase starts here: from now on the network holds the
                    # checkpoint's state (or, interrupted, gets it in finish)
                    self.started = True
                    self._load_resumed()
                self._setup()
                if self.plan.blas_single:
                    # Dual epochs are products of N x N x n1 (cat: 209 x 209 x 20): a
                    # second BLAS thread only adds synchronisation. In direct mode BLAS
                    # only computes the small layers, and its idle threads spin against
                    # the direct kernels' threads (measured: a 60000 x 784 GD epoch took
                    # 100 ms with two BLAS threads, 70 ms with one). The set-up products
                    # keep all threads.
                    from threadpoolctl import threadpool_limits
                    limits.append(threadpool_limits(limits=1, user_api="blas"))
                self._train()
            finally:
                for lim in reversed(limits):
                    lim.restore_original_limits()
        except KeyboardInterrupt:
            if not self.started:
                raise                  # preparation: nothing was changed
            self.stop = "interrupted"
        return self.finish()           # (interrupted, the caller runs it again)

    def _load_resumed(self):
        """The checkpoint's parameters, rule state, dual arrays and shuffling state
        (idempotent)."""
        res = self.resumed
        self.state = self.sess.state = res["state"]
        self.dual_arrays = res["arrays"] or None
        if self.gen is not None and res["rng"] is not None:
            self.gen.bit_generator.state = res["rng"]
        self._load(res["params"])
        self.loaded = True

    def _setup(self):
        """The engines (the session's cached ones when they still fit)."""
        sess = self.sess
        old_state = sess.state
        o = self.o
        if o.comm is not None and self.resumed is None:
            from .distributed import broadcast_arrays
            broadcast_arrays(o.comm, self.ws + self.bs)   # every rank starts from rank 0's
        try:
            sess._rule_state(self.rule, self.ws)
            self.eng, self.veng, self.sync, self.dual_arrays = sess._engines(
                self.plan, self.net, self.ws, self.bs, self.X, self.y, self.val, self.rule,
                self.resumed, self.o.sample_weight)
            self.state = sess.state
            if o.comm is not None or o.reader is not None:
                from .distributed import EpochRunner
                self.eng.set_data(self.X, self.y, n_total=o.n_total,
                                  sample_weight=o.sample_weight)
                if self.veng is not None and o.comm is not None:
                    self.veng.set_data(*self.val, n_total=o.nv_total)
                self.runner = EpochRunner(o.comm, o.reader, o.reduction)
                self.spans = self.tr.spans(len(self.ws))
        except BaseException:
            if self.resumed is None:
                sess.state = old_state
            raise

    def _load(self, arrays):
        with self.net._lock:
            for dst, src in zip(self.ws + self.bs, arrays):
                np.copyto(dst, src)
            self.net._changed()

    def _train(self):
        try:
            try:
                self.started = True
                with self.net._lock:
                    self.net._sync = self.sync
                if self.plan.minibatch:
                    self.batches = _Batches(self.X, self.y, self.tr.batch_size,
                                            self.tr.shuffle, self.o.sample_weight)
                self.bar = _progress(self.o.progress, self.o.epochs, type(self.tr).__name__)
                with _StopRequests(self.runner):
                    self._start()
                    self._loop()
            except KeyboardInterrupt:
                self._undo()
                self.stop = "interrupted"
        finally:
            self._end()

    def _start(self):
        """Epoch 0: the initial forward pass and its record, or the resumed history."""
        if self.plan.minibatch:         # a cached engine may point at a batch
            self.eng.set_data(self.X, self.y, sample_weight=self.o.sample_weight)
        if self.runner is not None:
            self.runner.reset()
            loss = self.runner.start(self.eng, self.spans)
        else:
            loss = self.eng.forward()
        if self.resumed is None:
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"The initial loss is {loss}: the network's output overflows on X. "
                    f"Scale the inputs (e.g. to [0, 1]) or re-initialise the network.")
            self.hist.setup_seconds = self.clock.now()
            self._record(loss)
        else:
            self._resume_history()
        self.net.output = LOSSES[self.tr.loss].output   # the head is part of the network

    def _resume_history(self):
        hist = self.hist
        self.clock.resume(self.resumed["history"], hist)
        # the target of this call decides (a new target after an old one was reached)
        hist.epochs_to_target = _first_below(hist, self.o.target_loss, self.o.monitor)

    def _loop(self):
        hist, o = self.hist, self.o
        self.stop = _stop_reason(hist, o, hist.epochs)
        if self._chunkable():
            while self.stop is None:
                self._chunk()
            return
        while self.stop is None:
            e = self.current = hist.epochs + 1
            loss = self._epoch()
            if not math.isfinite(loss):
                self.in_epoch = False
                self.stop = "diverged"
                break
            self._record(loss)
            self.in_epoch = False
            if self.bar is not None:
                self.bar.update(e, loss)
            self.stop = _stop_reason(hist, o, e)
            if self.stop is None and self.runner is not None and self.runner.stop_agreed:
                self.stop = "interrupted"      # some rank was asked to stop: all stop here
            if self.stop is None and o.checkpoint is not None and o.checkpoint_every and \
                    e % o.checkpoint_every == 0:
                self._save()

    # ------------------------------------------------------------------ chunks
    def _chunkable(self):
        """Whether epochs may run in chunks inside one kernel call: full batch, and nothing
        that needs Python after every epoch (validation, callbacks, a progress display;
        the target is checked by the kernel)."""
        o = self.o
        return (not self.plan.minibatch and self.veng is None and not o.callbacks
                and self.bar is None and o.monitor == "loss" and self.runner is None)

    def _chunk(self):
        """Several epochs in one GIL-free call (``engine.run_epochs``), recorded from the
        losses and clock readings the kernel wrote. Chunks last about CHUNK_SECONDS, so
        that Ctrl-C is honoured within that time; they end at checkpoint epochs."""
        hist, o = self.hist, self.o
        left = o.epochs - hist.epochs
        if o.checkpoint is not None and o.checkpoint_every:
            left = min(left, o.checkpoint_every - hist.epochs % o.checkpoint_every)
        if o.stall is not None:       # end the chunk where the patience rule could stop
            left = min(left, o.stall.epochs_left(hist))
        k = max(1, min(left, self.chunk_size))
        if self.chunk_buf is None or self.chunk_buf[0].shape[0] < k:
            self.chunk_buf = (np.empty(max(k, 64)), np.empty(max(k, 64)))
        losses, times = self.chunk_buf
        times[:k] = 0.0              # the kernel writes a reading > 0 after each epoch
        below = o.target_loss if o.target_loss is not None else -np.inf
        self.current = hist.epochs + 1
        t0 = time.perf_counter()
        with self.net._lock:
            self.pending = (self.current, k)
            self.in_epoch = True
            self.eng.run_epochs(k, self.lr, losses, times, below)
            self._settle_chunk()
            self.net._changed()
        done = hist.epochs - self.current + 1
        if done > 0:                  # aim the next chunk at CHUNK_SECONDS
            per = max((times[done - 1] - t0) / done, 1e-9)
            self.chunk_size = int(min(max(1, CHUNK_SECONDS / per), 1 << 20))
        if self.stop is None:
            e = hist.epochs
            self.stop = _stop_reason(hist, o, e)
            if self.stop is None and o.checkpoint is not None and o.checkpoint_every and \
                    e % o.checkpoint_every == 0:
                self._save()

    def _settle_chunk(self):
        """Record the epochs a chunk completed (idempotent: after an interrupt it records
        what the kernel finished, which cannot be undone beyond its last epoch); a last
        epoch that diverged is rolled back."""
        if self.pending is None:
            return
        first, k = self.pending
        losses, times = self.chunk_buf
        n = int(np.count_nonzero(times[:k] > 0))
        if n and not math.isfinite(losses[n - 1]):
            self.eng.rollback()     # the backup holds that epoch's start
            times[n - 1] = 0.0
            n -= 1
            self.stop = "diverged"
        _trim(self.hist, False, None)
        for i in range(self.hist.epochs - first + 1, n):
            self._record(float(losses[i]), self.clock.at(times[i]))
        self.pending = None
        self.in_epoch = False

    def _epoch(self):
        """One epoch under the network's lock (readers see whole epochs); NaN, with the
        epoch undone, if the loss or a parameter became non-finite."""
        eng, net = self.eng, self.net
        with net._lock:
            if self.plan.minibatch:
                gen = self.gen
                self.rng_state = gen.bit_generator.state
                eng.snapshot()
                self.t_mark = None
                self.in_epoch = True
                ok = self.batches.run(eng, gen, self.lr)
                eng.set_data(self.X, self.y, sample_weight=self.o.sample_weight)
                loss = eng.forward() if ok else float("nan")
            elif self.runner is not None:
                eng.snapshot()
                self.t_mark = None
                self.in_epoch = True
                loss = self.runner(eng, self.spans, self.lr)
                if not eng.params_finite():   # identical on every rank
                    loss = float("nan")
            else:
                self.t_mark = self.state["t"].tobytes()
                self.in_epoch = True
                loss = eng.epoch(self.lr)
            if not math.isfinite(loss):
                self._rollback()
                if self.plan.minibatch:
                    eng.forward()
            net._snap = None           # (net._changed(), the lock being held)
        return loss

    def _rollback(self):
        """Undo the current epoch (idempotent): parameters, rule state, shuffling."""
        if self.t_mark is None or self.state["t"].tobytes() != self.t_mark:
            self.eng.rollback()
        if self.runner is not None:
            self.runner.reset()         # its kept gradient was of the undone weights
        if self.gen is not None and self.rng_state is not None:
            self.gen.bit_generator.state = self.rng_state

    def _record(self, loss, seconds=None):
        hist, clock = self.hist, self.clock
        if seconds is None:
            seconds = clock.now()
        if self.veng is not None:
            with clock.excluded():
                vloss = self.veng.forward()
                vacc = self.veng.accuracy()
                if self.o.comm is not None:    # shares of the global means
                    nv = self.val[0].shape[0]
                    vloss, vacc = self.o.comm.allreduce(np.array([vloss, vacc * nv]))
                    vacc = vacc / self.o.nv_total
        hist.loss.append(loss)
        hist.seconds.append(seconds)
        if self.veng is not None:
            hist.val_loss.append(vloss)
            hist.val_accuracy.append(vacc)
        hist.epochs = len(hist.loss) - 1
        mon = hist.loss[-1] if self.o.monitor == "loss" else hist.val_loss[-1]
        t = self.o.target_loss
        if t is not None and hist.epochs_to_target is None and mon < t:
            hist.epochs_to_target = hist.epochs

    def _undo(self):
        """After an interrupt: back to the last recorded epoch (invariants 1-3)."""
        hist, net = self.hist, self.net
        cut = None
        if self.pending is not None:   # a chunk: keep what the kernel completed
            with net._lock:
                self._settle_chunk()
                net._changed()
            if self.stop == "diverged":
                self.stop = None
        if self.in_epoch:
            with net._lock:
                self._rollback()
                net._changed()
            self.in_epoch = False
            cut = self.current         # the epoch being run or recorded does not count
        _trim(hist, self.veng is not None, cut)
        if not hist.loss:              # interrupted before epoch 0 was recorded
            self._start()

    def _end(self):
        """Whatever happened: the first layer materialised into the network, the
        progress display closed."""
        try:
            with self.net._lock:
                if self.sync is not None:
                    self.sync()
                self.net._sync = None
                self.net._changed()
            self.synced = True
            self.sess._cache["w0"] = self.ws[0].copy()
        finally:
            bar = self.bar
            if bar is not None:
                self.bar = None
                try:
                    if self.hist.loss:
                        bar.update(self.hist.epochs, self.hist.loss[-1], force=True)
                finally:
                    bar.close()

    def finish(self):
        """The end of every fit that trained: the network complete (the checkpoint's
        state, the first layer materialised), the History's last fields, the final
        checkpoint, the divergence warning. Idempotent."""
        hist, net, tr = self.hist, self.net, self.tr
        if self.resumed is not None:   # interrupted before the loop: the checkpoint's state
            if not self.loaded:
                self._load_resumed()
            if not hist.loss:
                self._resume_history()
        if not self.synced and self.sync is not None:
            with net._lock:
                self.sync()
                net._sync = None
                net._changed()
            self.synced = True
        hist.stopped_reason = self.stop
        hist.val_seconds = self.clock.val_total()
        net.output = LOSSES[tr.loss].output
        if not self.saved:
            self.saved = True
            self._save(final=True)
        if self.stop == "diverged":
            msg = (f"{type(tr).__name__} diverged at epoch {hist.epochs + 1} (the loss or a "
                   f"parameter became non-finite) with lr={tr.lr!r}; the network was "
                   f"restored to epoch {hist.epochs}. Try a smaller learning rate.")
            if tr.on_divergence == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, DivergenceWarning, stacklevel=_caller_level())
        return hist

    def _save(self, final=False):
        """Write the checkpoint. A failure warns (training goes on, the History is
        returned); an interrupt during a periodic write is the loop's, during the final
        write it leaves the previous checkpoint in place."""
        path = self.o.checkpoint
        if path is None or (self.o.comm is not None and self.o.comm.Get_rank() != 0):
            return                      # data-parallel: rank 0 writes
        from ._checkpoint import write_checkpoint
        try:
            with self.net._lock:
                if self.sync is not None:
                    self.sync()
            self.hist.val_seconds = self.clock.val_total()
            write_checkpoint(path, self.tr, self.net, self.hist, self.gen,
                             self.dual_arrays, self.state, self.o.data)
        except KeyboardInterrupt:
            if not final:
                raise
            self.stop = self.hist.stopped_reason = "interrupted"
            warnings.warn(f"The checkpoint {path} was not updated (interrupted); it holds "
                          f"the previous one, if any.", RuntimeWarning,
                          stacklevel=_caller_level())
        except Exception as exc:       # noqa: BLE001 -- never lose the History to a file
            warnings.warn(f"The checkpoint {path} could not be written "
                          f"({type(exc).__name__}: {exc})"
                          f"{'' if final else '; training goes on'}.", RuntimeWarning,
                          stacklevel=_caller_level())


def _first_below(hist, target, monitor):
    """The first recorded epoch whose monitored loss is below ``target`` (or None)."""
    if target is None:
        return None
    values = hist.loss if monitor == "loss" else hist.val_loss
    for e, v in enumerate(values):
        if v < target:
            return e
    return None


def _caller_level():
    """The ``stacklevel`` of the first frame outside poswise (warnings point at the
    caller's line, whichever entry point it used)."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_globals.get("__name__", "").startswith("poswise."):
        f, level = f.f_back, level + 1
    return level


def _rank_cores(comm):
    """Under MPI, the cores of this rank's share of its node (one rank per core: 1)."""
    if comm is None:
        return None
    from .distributed import default_threads
    return default_threads(comm)


def _stream_reader(X, dtype, n_features):
    """A block reader for ``X`` when it should not be converted whole: an h5py dataset or
    another row-sliceable array-like, or a memmap whose conversion would copy it (another
    dtype or layout); None for data used as they are."""
    from ._streaming import BlockReader, is_streamable
    if not is_streamable(X) or hasattr(X, "nnz"):      # (sparse: check_X says what to do)
        return None
    if isinstance(X, np.ndarray) and X.dtype == dtype and X.flags.c_contiguous:
        return None                    # a memmap the kernels read directly, no copy
    return BlockReader(X, dtype, n_features=n_features)


class _StopRequests:
    """During data-parallel training, SIGINT and SIGTERM ask every rank to stop after the
    running epoch (a flag the epoch's last reduction carries) instead of raising on one
    rank in the middle of a collective; outside the main thread, nothing changes."""

    def __init__(self, runner):
        self.runner, self.saved = runner, {}

    def __enter__(self):
        import signal
        import threading
        if self.runner is None or threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.runner.request_stop()

    def __exit__(self, *exc):
        import signal
        for sig, old in self.saved.items():
            signal.signal(sig, old)


class _Batches:
    """Mini-batches of (X, y) (and sample weights) in preallocated buffers: shuffled, or
    in data order with ``shuffle=False``."""

    def __init__(self, X, y, size, shuffle=True, sw=None):
        self.X, self.y, self.B, self.shuffle, self.sw = X, y, size, shuffle, sw
        self.Xb = np.empty((size,) + X.shape[1:], dtype=X.dtype)
        self.yb = np.empty((size,) + y.shape[1:], dtype=y.dtype)
        self.wb = None if sw is None else np.empty(size, dtype=np.float64)

    def run(self, eng, gen, lr):
        """One pass over the batches, one schedule step each; False on a non-finite
        parameter. A batch whose weights are all 0 takes no step."""
        N = self.X.shape[0]
        perm = gen.permutation(N) if self.shuffle else np.arange(N)
        for start in range(0, N, self.B):
            idx = perm[start:start + self.B]
            nb = idx.shape[0]
            np.take(self.X, idx, axis=0, out=self.Xb[:nb])
            np.take(self.y, idx, axis=0, out=self.yb[:nb])
            wb = None
            if self.sw is not None:
                wb = np.take(self.sw, idx, out=self.wb[:nb])
                if not wb.sum() > 0:
                    continue
            eng.set_data(self.Xb[:nb], self.yb[:nb], sample_weight=wb)
            if not eng.batch_step(lr):
                return False
        return True


class _Clock:
    """Wall time of the call (plus a resumed run's), validation excluded."""

    def __init__(self, t_start):
        self.t_start, self.offset, self.val_time, self.val_offset = t_start, 0.0, 0.0, 0.0

    def now(self):
        return self.offset + time.perf_counter() - self.t_start - self.val_time

    def excluded(self):
        """A context whose time is not counted (validation)."""
        return _Excluded(self)

    def at(self, t):
        """``now()`` as it read at perf_counter time ``t``."""
        return self.offset + t - self.t_start - self.val_time

    def val_total(self):
        return self.val_offset + self.val_time

    def resume(self, prev, hist):
        for k in ("loss", "val_loss", "val_accuracy", "seconds", "epochs",
                  "epochs_to_target", "val_seconds", "setup_seconds"):
            v = getattr(prev, k)
            setattr(hist, k, list(v) if isinstance(v, list) else v)   # prev stays intact
        self.offset = hist.seconds[-1]
        self.val_offset = hist.val_seconds
        self.t_start = time.perf_counter()


class _Excluded:
    # a module-level class: one defined per call made every call grow object's
    # subclass table (seen as a slow memory creep over many fits)
    def __init__(self, clock):
        self.clock = clock

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.clock.val_time += time.perf_counter() - self.t0


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


def _check_sample_weight(sample_weight, n, where):
    """None, or the weights as contiguous float64 (one per sample, finite, >= 0, a
    positive sum)."""
    if sample_weight is None:
        return None
    w = _layout._as_numeric(sample_weight, "sample_weight")
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight must have one entry per sample ({n}); got shape "
                         f"{w.shape} (in {where}).")
    w = np.ascontiguousarray(w, dtype=np.float64)
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("sample_weight must be finite and >= 0.")
    if not w.sum() > 0:
        raise ValueError("sample_weight must have a positive sum.")
    return w


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


def _stop_reason(hist, o, epoch):
    stop = None
    for cb in o.callbacks:
        answer = cb(epoch, hist)
        if answer is True or answer is np.True_:
            stop = "callback"
    if hist.epochs_to_target is not None:
        return "target_reached"
    if stop is not None:
        return stop
    if o.stall is not None and o.stall.stalled(hist):
        return "no_improvement"
    if epoch >= o.epochs:
        return "max_epochs"
    return None


class _Stall:
    """The patience rule: training has stalled at epoch ``e`` when the monitored loss has
    not improved on its best by more than ``tol`` (relative) in the last ``patience``
    epochs, i.e. ``e - best_epoch >= patience``, where ``best_epoch`` is the last epoch
    whose loss was below ``best - tol * |best|`` of the epochs before it (epoch 0, the
    initial loss, counts). A function of the history alone, so a resumed run stops where
    the uninterrupted one would; non-finite losses never count as improvements."""

    def __init__(self, patience, tol, monitor):
        self.patience, self.tol, self.monitor = patience, tol, monitor
        self.seen = 0              # history entries scanned
        self.best = math.inf
        self.best_epoch = 0

    def _scan(self, hist):
        values = hist.loss if self.monitor == "loss" else hist.val_loss
        if len(values) < self.seen:            # a shorter history (rollback): rescan
            self.seen, self.best, self.best_epoch = 0, math.inf, 0
        for e in range(self.seen, len(values)):
            v = float(values[e])
            if math.isfinite(v) and (self.best == math.inf
                                     or v < self.best - self.tol * abs(self.best)):
                self.best, self.best_epoch = v, e
        self.seen = len(values)

    def stalled(self, hist):
        self._scan(hist)
        return hist.epochs - self.best_epoch >= self.patience

    def epochs_left(self, hist):
        """Epochs that may run before the rule can first stop training (at least 1)."""
        self._scan(hist)
        return max(1, self.best_epoch + self.patience - hist.epochs)


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
