"""The schedules: full-batch gradient descent, the position-wise optimizer, and
layer-wise gradient descent, each with any update rule of :mod:`poswise.updates`.

A trainer holds settings only. Its *schedule* says which layers each step updates: an
epoch is a list of span steps, each backpropagating from the output to its first layer,
updating those layers and re-running the forward pass from there (``spans``); a layer-wise
schedule also scales each layer's learning rate (``scales``). Its *update rule* turns a
gradient into a step. ``fit`` runs a :class:`poswise.session.TrainingSession`; the plan
(:mod:`poswise._plan`) decides how the epochs are computed.
"""
import numpy as np

from ._layout import check_choice, check_scalar
from ._plan import BACKENDS, FIRST_LAYER_MODES
from .history import STOP_REASONS, DivergenceWarning, History
from .losses import LOSSES
from .session import TrainingSession
from .updates import UpdateRule, get_update

__all__ = ["History", "GradientDescent", "PositionWise", "LayerwiseGD", "DivergenceWarning",
           "SCHEDULES"]


class _Trainer:
    #: registry key of the schedule and its display label
    schedule = ""
    label = ""

    def __init__(self, lr, *, loss="bce", batch_size=None, shuffle=True, update="sgd",
                 backend="cython", first_layer="auto", threads=None, rng=None, s=30.0,
                 m=0.35, on_divergence="stop"):
        self.lr = lr
        self.loss = loss
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.update = update
        self.backend = backend
        self.first_layer = first_layer
        self.threads = threads
        self.rng = rng
        self.s = s
        self.m = m
        self.on_divergence = on_divergence
        self._validate_params()

    @property
    def _short(self):
        return self.schedule

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr!r}, loss={self.loss!r}, "
                f"batch_size={self.batch_size!r}, update={self.update!r}, "
                f"backend={self.backend!r})")

    def _validate_params(self):
        name = type(self).__name__
        check_scalar(self.lr, "lr", name, low=0)
        check_choice(self.loss, "loss", name, tuple(LOSSES))
        check_scalar(self.batch_size, "batch_size", name, kind="int", low=1,
                     low_inclusive=True, allow_none=True)
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise ValueError(f"The 'shuffle' parameter of {name} must be a bool. Got "
                             f"{self.shuffle!r} instead.")
        self._rule()
        check_choice(self.backend, "backend", name, BACKENDS)
        check_choice(self.first_layer, "first_layer", name, FIRST_LAYER_MODES)
        check_scalar(self.threads, "threads", name, kind="int", low=1, low_inclusive=True,
                     allow_none=True)
        check_scalar(self.s, "s", name, low=0)
        check_scalar(self.m, "m", name, low=0, low_inclusive=True)
        check_choice(self.on_divergence, "on_divergence", name, ("stop", "raise"))

    def _rule(self):
        """The update rule (an :class:`~poswise.updates.UpdateRule`)."""
        return get_update(self.update, type(self).__name__)

    def spans(self, L):
        """First layers of the span steps of one epoch of an ``L``-layer network."""
        raise NotImplementedError

    def scales(self, L):
        """Learning-rate multiplier of each layer."""
        return [1.0] * L

    def session(self, net):
        """A :class:`~poswise.session.TrainingSession` of this trainer on ``net``: its
        ``fit`` calls continue the update rule's state from one call to the next."""
        return TrainingSession(self, net)

    def fit(self, net, X, y, *, epochs, target_loss=None, validation_data=None,
            monitor="loss", callbacks=(), progress=False, checkpoint=None,
            checkpoint_every=None, resume=None, sample_weight=None, comm=None,
            reduction="allreduce", patience=None, tol=1e-4):
        """Train ``net`` in place and return its :class:`History`.

        Parameters
        ----------
        net : MLP
            Updated in place. A call that fails validation leaves it untouched; a run that
            diverges or is interrupted leaves it at the last completed, finite epoch.
        X : array-like of shape (n_samples, n_features)
            Converted to the network's dtype, C order.
        y : array-like
            Labels 0/1 (bce; one column per output for several outputs), integer classes
            (cross_entropy, am_softmax) or real targets of shape (n_samples, n_outputs)
            (mse).
        epochs : int
            Maximum number of epochs. An epoch is one pass of the schedule over the full
            batch; with ``batch_size`` it is one pass over shuffled mini-batches, each
            taking one pass of the schedule.
        target_loss : float, optional
            Stop at the first epoch whose monitored loss is below it.
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch (time reported separately).
        monitor : {"loss", "val_loss"}
            The loss that ``target_loss`` is compared with.
        callbacks : sequence of callables
            Each is called as ``callback(epoch, history)`` after every epoch (and with
            epoch 0 before training); one that returns True stops training. A callback
            may read the network (``net.weights`` and ``net.biases`` are a read-only
            snapshot of the last completed epoch) but cannot change it: the arrays are
            read-only during a fit, and a second fit of the same network is refused.
        progress : bool or object
            Print progress to stderr, or an object with ``update(epoch, loss)`` and
            ``close()`` (see :mod:`poswise.progress`).
        checkpoint : path-like, optional
            Write a checkpoint (a model file with the training state, see
            ``poswise.io``) every ``checkpoint_every`` epochs and when training stops.
        checkpoint_every : int, optional
            Epochs between checkpoints (default: only when training stops).
        resume : path-like, optional
            Continue from a checkpoint written by the same trainer settings on the same
            data: ``net`` receives the checkpoint's weights, the history, the update
            rule's state and the shuffling state are restored, and training runs up to
            ``epochs`` in total, exactly as an uninterrupted run would.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights: the loss becomes the weighted mean (sample i counts
            ``sample_weight[i]`` times; the mean is over the sum of the weights), so
            integer weights train as duplicated samples.
        comm : mpi4py communicator, optional
            Data-parallel training: ``X`` and ``y`` (and ``sample_weight``,
            ``validation_data``) are this rank's rows. The ranks' settings are checked to
            agree, every rank starts from rank 0's weights, and every span step
            all-reduces one packed buffer of gradient sums, so all ranks hold identical
            weights; losses, stopping and the History are global; rank 0 writes the
            checkpoints; SIGINT/SIGTERM on any rank stops all after the same epoch. Full
            batch only. See docs/scaling.md and :mod:`poswise.distributed`.
        reduction : {"allreduce", "ordered"}
            How the ranks' sums are added: MPI's Allreduce, or gathered and summed in
            rank order (the same bits whatever the MPI library's algorithm).
        patience : int, optional
            Stop (``stopped_reason == "no_improvement"``) once the monitored loss has not
            improved on its best by more than ``tol`` (relative) for ``patience``
            epochs, as scikit-learn's ``n_iter_no_change``: a run that has stalled (for
            example a network whose ReLUs all died) stops instead of spending its
            epoch budget. Decided from the history alone, at the exact epoch, whether
            or not epochs run in chunks.
        tol : float
            The relative improvement that counts for ``patience`` (default 1e-4).

        Returns
        -------
        History

        Raises
        ------
        ValueError, TypeError
            Invalid parameters or inputs (the network is left untouched).
        RuntimeError
            The network is being trained by another fit.
        FloatingPointError
            The initial loss is not finite (inputs too large for the network), or the
            run diverged with ``on_divergence="raise"``.
        """
        return self.session(net).fit(
            X, y, epochs=epochs, target_loss=target_loss, validation_data=validation_data,
            monitor=monitor, callbacks=callbacks, progress=progress, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, resume=resume, sample_weight=sample_weight,
            comm=comm, reduction=reduction, patience=patience, tol=tol)


_COMMON_DOC = """
    Parameters
    ----------
    lr : float
        Learning rate (> 0); it multiplies the gradient of the mean loss.
    loss : {"bce", "cross_entropy", "am_softmax", "mse"}, default "bce"
        See :mod:`poswise.losses`.
    batch_size : int, optional
        If set (and smaller than the number of samples), each epoch takes one pass of the
        schedule per mini-batch of this size.
    shuffle : bool, default True
        Draw each epoch's mini-batches from a new permutation of the samples (``rng``);
        False takes them in data order.
    update : str or UpdateRule, default "sgd"
        How a gradient becomes a step: a name of :data:`poswise.updates.UPDATE_RULES`
        (``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``, ``"adamw"``,
        ``"rmsprop"``) or a rule object (:class:`poswise.SGD`, :class:`poswise.Adam`,
        :class:`poswise.AdamW`, :class:`poswise.RMSprop`). Every weight matrix and every
        bias vector is its own parameter with its own state and step count, as separate
        tensors of one ``torch.optim`` parameter group; a parameter's state advances each
        time a step updates it.
    backend : {"cython", "numpy"}, default "cython"
        The BLAS kernels, or their plain-numpy twin (the specification; slow).
    first_layer : {"auto", "primal", "dual", "direct"}, default "auto"
        How the first layer (whose products with X dominate an epoch) is computed.
        ``primal``: BLAS GEMMs on ``W[0]``. ``dual``: ``W[0]`` is kept as
        ``W0_init - C X`` and trained through the N x N Gram matrix of X, exact and far
        cheaper when N << D (full batch and plain SGD only). ``direct``: hand-written
        kernels on a transposed copy of ``W[0]``, faster than BLAS for first layers of at
        most 32 units. ``auto`` picks dual, then direct, then primal, where each is
        possible and cheaper. All agree to float rounding; reading ``net.weights`` gives
        the current weights in every mode.
    threads : int, optional
        Limit the BLAS threads (numpy's and scipy's) during ``fit`` (threadpoolctl)
        and the threads of the direct kernels (default: every available core; more than
        the kernels' limit, ``poswise._kernels._core.MAX_THREADS``, runs that many; the
        count used is ``History.threads``). During the epochs of a ``direct`` fit, and of
        a ``dual`` fit without ``threads``, BLAS runs on one thread: it only computes
        small products there, and its idle threads would spin against the kernels'.
    rng : None, int or numpy.random.Generator
        Seed for the mini-batch shuffling.
    s, m : float
        Scale and margin of ``am_softmax``.
    on_divergence : {"stop", "raise"}
        On a non-finite loss or parameter, restore the last finite epoch and stop with a
        :class:`DivergenceWarning`, or raise ``FloatingPointError``.
"""


class GradientDescent(_Trainer):
    __doc__ = """Full-batch gradient descent: per epoch, every layer is updated once.
""" + _COMMON_DOC
    schedule = "gd"
    label = "GD"

    def spans(self, L):
        return [0]


class PositionWise(_Trainer):
    __doc__ = """The position-wise optimizer (Valizadeh, arXiv 2204.05312).

    One epoch is a sweep ``j = 1..L``: from fresh activations, backpropagate the output
    error through layers ``L-1 .. L-j`` only, update those layers, and re-run the forward
    pass from layer ``L-j``. The last layer is updated L times per epoch, the first once.
""" + _COMMON_DOC
    schedule = "pwo"
    label = "PWO"

    def spans(self, L):
        return list(range(L - 1, -1, -1))


class LayerwiseGD(_Trainer):
    __doc__ = """Gradient descent with a learning rate per layer: the control for PWO's
    mechanism.

    One step per epoch from layer 0, as :class:`GradientDescent`, but layer ``l`` uses
    ``lr * layer_scales[l]``; by default ``layer_scales[l] = l + 1``, the number of times
    a position-wise epoch updates layer ``l`` (0 = the input layer), so the two take the
    same total step sizes per epoch without PWO's re-forward between spans.

    Parameters
    ----------
    layer_scales : sequence of float > 0, optional
        One multiplier per weight layer (input layer first); default ``1, 2, ..., L``.
""" + _COMMON_DOC
    schedule = "layerwise"
    label = "layer-wise GD"

    def __init__(self, lr, *, layer_scales=None, **kwargs):
        self.layer_scales = layer_scales
        super().__init__(lr, **kwargs)

    def _validate_params(self):
        super()._validate_params()
        if self.layer_scales is not None:
            try:
                scales = [float(c) for c in self.layer_scales]
            except (TypeError, ValueError):
                scales = None
            if not scales or not all(np.isfinite(c) and c > 0 for c in scales):
                raise ValueError(f"The 'layer_scales' parameter of LayerwiseGD must be a "
                                 f"sequence of floats > 0, one per layer. Got "
                                 f"{self.layer_scales!r} instead.")
            self.layer_scales = scales

    def spans(self, L):
        return [0]

    def scales(self, L):
        if self.layer_scales is None:
            return [float(l + 1) for l in range(L)]
        if len(self.layer_scales) != L:
            raise ValueError(f"layer_scales has {len(self.layer_scales)} entries; the "
                             f"network has {L} layers.")
        return list(self.layer_scales)


#: The schedules by name (``History.optimizer``, the command line, the estimators).
SCHEDULES = {cls.schedule: cls for cls in (GradientDescent, PositionWise, LayerwiseGD)}
