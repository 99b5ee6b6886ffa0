"""The epoch runner: full-batch epochs over MPI ranks and/or data streamed from disk.

An engine (``poswise._kernels._core.Engine`` or its numpy twin) offers ``forward(start)``,
``gradients(first, accumulate)``, ``apply(first, lr)`` and ``window(lo, hi, X_block)``
(see :class:`EpochRunner`). A runner drives them for one epoch of span steps (GD: the span
``first = 0``; PWO: ``L-1, ..., 0``) and returns the epoch's loss:

* every span step's gradient is summed over the ranks in **one** reduction of a packed
  float64 buffer, which also carries the loss share of the state the gradient was taken
  at; every rank then applies the same update, so all ranks hold the same weights;
* the reduction that ends an epoch already carries the gradient of the *next* epoch's
  first span (computed right after the epoch's last forward pass): the loss of the
  finished epoch needs a reduction anyway, and this way a GD epoch costs one reduction,
  a PWO epoch L — the minimum;
* the same reduction carries a stop flag: a rank that was asked to stop (Ctrl-C, SIGTERM
  from the launcher) sets it with :meth:`EpochRunner.request_stop`; after the epoch every
  rank reads the same :attr:`EpochRunner.stop_agreed` and all stop after that same,
  completed epoch, without an extra collective;
* with a :class:`~poswise._streaming.BlockReader`, the passes that need ``X`` (a span from
  layer 0) read it block by block through ``engine.window``: GD reads X once per epoch
  (forward and gradient of each block together), PWO twice (the gradient of span 0, then
  its forward pass with the new first layer). Spans from layer >= 1 need no X: the
  activations of layer 1 stay in memory.
"""
import numpy as np

from ._collective import Reduction

__all__ = ["EpochRunner", "pwo_spans", "gd_spans"]


def gd_spans(n_layers):
    """The spans of a GD epoch: ``(0,)``."""
    return (0,)


def pwo_spans(n_layers):
    """The spans of a position-wise epoch: ``(L-1, ..., 0)``."""
    return tuple(range(n_layers - 1, -1, -1))


class EpochRunner:
    """``runner(engine, spans, lr) -> loss``: one full-batch epoch.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The ranks sharing the data (each engine holds its rank's rows, with ``n_total`` the
        global row count). None: a single process.
    reader : poswise._streaming.BlockReader, optional
        This process's rows of ``X`` on disk; None when the engine holds ``X`` in memory.
    reduction : {"allreduce", "ordered"}
        How gradients are summed (see :data:`poswise.distributed.REDUCTIONS`).

    Notes
    -----
    Engine contract: ``forward(start)`` returns this process's loss share (sum of its rows'
    losses / ``n_total``) and refreshes the output error; ``gradients(first, accumulate)``
    returns the packed gradient of layers ``first..L-1`` (a view the runner may overwrite);
    ``apply(first, lr)`` updates those layers from that view; ``window(lo, hi, X_block)``
    restricts ``forward``/``gradients`` to rows ``lo..hi-1`` with ``X_block`` as their
    input, ``window(0, n)`` restores.

    The runner keeps the reduced gradient of the next epoch's first span between calls.
    Call :meth:`reset` whenever the weights change outside the runner (a rollback after
    divergence or an interrupt, a resumed checkpoint, new data); the next epoch then starts
    with a forward pass from layer 0.
    """

    def __init__(self, comm=None, reader=None, reduction="allreduce"):
        self.comm = comm
        self.reader = reader
        self.reduce = Reduction(comm, reduction) if comm is not None else None
        self._packed = {}          # span first -> float64 buffer: gradient, stop flag, loss
        self._stop = False         # this rank was asked to stop
        self.stop_agreed = False   # some rank was asked to stop (same on every rank)
        self._pending = None       # (engine, first, view) of a reduced, unapplied gradient
        self.initial_loss = None   # global loss of the weights the run started from
        self.n_reductions = 0

    def reset(self):
        """Forget the gradient kept for the next epoch (the weights were changed)."""
        self._pending = None

    def request_stop(self):
        """Ask all ranks to stop after the epoch that is running (safe in a signal
        handler: it only sets a flag, read at the epoch's last reduction)."""
        self._stop = True

    # ------------------------------------------------------------------ passes
    def _stream(self, engine, fn):
        try:
            for lo, hi, block in self.reader.stream():
                engine.window(lo, hi, block)
                fn(lo)
        finally:
            engine.window(0, self.reader.n_rows)

    def _forward(self, engine, first):
        """Forward from layer ``first``; the local loss share."""
        if first > 0 or self.reader is None:
            return engine.forward(first)
        share = [0.0]

        def one(lo):
            share[0] += engine.forward(0)
        self._stream(engine, one)
        return share[0]

    def _gradients(self, engine, first):
        """The local packed gradient of span ``first`` (a view)."""
        if first > 0 or self.reader is None:
            return engine.gradients(first)
        view = [None]

        def one(lo):
            view[0] = engine.gradients(0, accumulate=lo > 0)
        self._stream(engine, one)
        return view[0]

    def _forward_and_gradients(self, engine, first, nxt):
        """Forward from ``first``, then the gradient of span ``nxt``: one pass over X when
        both start at layer 0 (GD), which is what streaming is for."""
        if first == 0 and nxt == 0 and self.reader is not None:
            share, view = [0.0], [None]

            def one(lo):
                share[0] += engine.forward(0)
                view[0] = engine.gradients(0, accumulate=lo > 0)
            self._stream(engine, one)
            return share[0], view[0]
        share = self._forward(engine, first)
        return share, self._gradients(engine, nxt)

    # ------------------------------------------------------------------ reduction
    def _reduce(self, first, view, share):
        """Sum ``[view, stop flag, share]`` over the ranks into the span's packed buffer;
        return the global loss."""
        buf = self._packed.get(first)
        if buf is None or buf.size != view.size + 2:
            buf = self._packed[first] = np.empty(view.size + 2, dtype=np.float64)
        buf[:-2] = view.reshape(-1)
        buf[-2] = 1.0 if self._stop else 0.0
        buf[-1] = share
        if self.reduce is not None:
            self.reduce(buf)
            self.n_reductions += 1
        self.stop_agreed = self.stop_agreed or buf[-2] > 0
        return float(buf[-1])

    def _apply(self, engine, first, view, lr):
        # The engine's buffer is written from the reduced sum just before the update, so
        # nothing that ran in between (another call of the engine) can have changed it.
        view.reshape(-1)[...] = self._packed[first][:-2]
        engine.apply(first, lr)

    # ------------------------------------------------------------------ epoch
    def start(self, engine, spans):
        """Forward pass from layer 0 and the gradient of the first span, reduced; return
        the global loss of the current weights (a History's epoch-0 loss).

        Called by the first epoch (or the first after :meth:`reset`) if not called before.
        """
        first = int(tuple(spans)[0])
        share, view = self._forward_and_gradients(engine, 0, first)
        self.initial_loss = self._reduce(first, view, share)
        self._pending = (engine, first, view)
        return self.initial_loss

    def __call__(self, engine, spans, lr):
        spans = tuple(int(s) for s in spans)
        if not spans:
            raise ValueError("an epoch needs at least one span.")
        p = self._pending
        if p is None or p[0] is not engine or p[1] != spans[0]:
            self.start(engine, spans)
        view = self._pending[2]
        self._pending = None          # consumed: an exception below leaves no stale state
        share = None
        last = len(spans) - 1
        for i, first in enumerate(spans):
            if i > 0:
                view = self._gradients(engine, first)
                self._reduce(first, view, share)
            self._apply(engine, first, view, lr)
            if i < last:
                share = self._forward(engine, first)
        share, view = self._forward_and_gradients(engine, spans[-1], spans[0])
        loss = self._reduce(spans[0], view, share)
        self._pending = (engine, spans[0], view)
        return loss
