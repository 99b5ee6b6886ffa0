"""The multilayer perceptron that poswise trains.

(About 500 lines: besides the network and its settings, the class holds the ownership
rules of a running fit -- see "Ownership" in the class notes -- which every accessor of
the parameters must follow, so they live next to the accessors.)
"""
import threading

import numpy as np

from . import _layout
from ._layout import check_choice, check_dtype, check_scalar

__all__ = ["MLP", "ACTIVATIONS", "INITS", "OUTPUTS", "CONFIG_FIELDS"]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "identity")
INITS = ("xavier_normal", "xavier_uniform", "he_normal", "lecun_normal")
OUTPUTS = ("auto", "sigmoid", "softmax", "cosine", "identity")

#: The settings that, with the weights and biases, define a network: what
#: :meth:`MLP.get_config` returns and :meth:`MLP.from_config` accepts (plain JSON types).
CONFIG_FIELDS = ("sizes", "activation", "leak", "output", "init", "dtype")


def _init_weight(rng, init, n_out, n_in):
    """Draw one ``(n_out, n_in)`` weight matrix in float64."""
    if init == "xavier_normal":
        return rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / (n_in + n_out))
    if init == "xavier_uniform":
        a = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-a, a, size=(n_out, n_in))
    if init == "he_normal":
        return rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
    # lecun_normal: the reference code's randn(n_out, n_in) / sqrt(n_in)
    return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)


class MLP:
    """A fully-connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first: ``(D, n_1, ..., K)``; at least two entries, all >= 1.
    activation : {"relu", "tanh", "sigmoid", "leaky_relu", "identity"}, default "relu"
        Activation of the hidden layers. The output head is set by ``output``.
    init : {"xavier_normal", "xavier_uniform", "he_normal", "lecun_normal"}
        Weight initialisation; biases start at zero. ``xavier_normal`` is
        ``N(0, 2 / (n_in + n_out))`` (what the paper states); ``lecun_normal`` is
        ``randn / sqrt(n_in)`` (what its reference code used).
    dtype : float32 or float64, default float64
        The dtype of the parameters and of everything computed in training.
    rng : None, int or numpy.random.Generator
        Seed or generator for the initial weights. Weights are drawn in float64 and then
        rounded, so float32 and float64 networks with the same seed start the same.
    leak : float, default 0.01
        Negative slope of ``leaky_relu``.
    output : {"auto", "sigmoid", "softmax", "cosine", "identity"}, default "auto"
        How ``predict_proba`` and ``predict`` read the last layer. ``auto`` is sigmoid for
        one output and softmax otherwise; training sets it to the head of the loss used.

    Attributes
    ----------
    weights : list of ndarray
        ``weights[l]`` has shape ``(sizes[l+1], sizes[l])`` (torch's ``nn.Linear.weight``).
    biases : list of ndarray
        ``biases[l]`` has shape ``(sizes[l+1],)``.

    Notes
    -----
    Trainers update ``weights`` and ``biases`` in place. They may hold the first layer in
    a cheaper form during a fit; reading ``weights`` always gives the current values.

    Ownership: a network being trained belongs to its fit, in every first-layer mode and
    backend. A second ``fit`` (from another thread, or from a callback) raises
    ``RuntimeError`` ("is being trained"). ``weights`` and ``biases`` then return
    read-only snapshots: copies of the parameters as they were between two epochs, taken
    under the network's lock (the same snapshot until the next epoch; ``predict``,
    ``copy`` and pickling use it too, so weights and biases always belong together). The
    network's own arrays are read-only until the fit ends: an in-place edit
    (``net.weights[0][...] = 0``, also through a reference taken before the fit) raises
    ``ValueError``, replacing an entry or changing ``activation`` or ``leak`` raises
    ``RuntimeError``. When the fit ends, however it ends, the arrays are writeable again.
    """

    def __init__(self, sizes, *, activation="relu", init="xavier_normal",
                 dtype=np.float64, rng=None, leak=0.01, output="auto"):
        sizes = self._check_sizes(sizes)
        check_choice(activation, "activation", "MLP", ACTIVATIONS)
        check_choice(init, "init", "MLP", INITS)
        check_choice(output, "output", "MLP", OUTPUTS)
        dt = check_dtype(dtype, "MLP")
        leak = check_scalar(leak, "leak", "MLP", low=0, low_inclusive=True)
        gen = np.random.default_rng(rng)
        self._set(
            [_init_weight(gen, init, sizes[l + 1], sizes[l]).astype(dt)
             for l in range(len(sizes) - 1)],
            [np.zeros(sizes[l + 1], dtype=dt) for l in range(len(sizes) - 1)],
            activation, leak, output)
        self.init = init

    @staticmethod
    def _check_sizes(sizes):
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError(f"The 'sizes' parameter of MLP must be a sequence of ints >= 1 "
                             f"(input width first). Got {sizes!r} instead.") from None
        if len(sizes) < 2 or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                for s in sizes):
            raise ValueError(f"The 'sizes' parameter of MLP must be a sequence of at least "
                             f"two ints >= 1 (input width first). Got {sizes!r} instead.")
        return tuple(int(s) for s in sizes)

    def _set(self, weights, biases, activation, leak, output):
        self._dtype = weights[0].dtype.type
        self._weights = _ParamList(self, "weights", weights)
        self._biases = _ParamList(self, "biases", biases)
        self._init_ownership()
        self.activation = activation
        self.leak = float(leak)
        self.output = output

    def _init_ownership(self):
        # See "Ownership" in the class notes. The lock is held while an epoch runs, while
        # a fit restores or materialises parameters, and while a reader takes a snapshot.
        self._lock = threading.RLock()
        self._trainer = None    # who trains the network now, if anyone
        self._sync = None       # set by a running fit whose first layer lives elsewhere
        self._snap = None       # readers' snapshot of the current epoch (during a fit)
        self._locked = ()       # the arrays a running fit made read-only
        self._token = None      # the running fit's token (see _acquire)

    @classmethod
    def from_arrays(cls, weights, biases, *, activation="relu", leak=0.01, output="auto"):
        """Build a network from copies of the given arrays.

        ``weights[l]`` must have shape ``(n_{l+1}, n_l)`` and ``biases[l]`` shape
        ``(n_{l+1},)``; consecutive layers must chain. The dtype is float32 if every
        array is float32, else float64.
        """
        try:
            weights = list(weights)
            biases = list(biases)
        except TypeError:
            raise ValueError("weights and biases must be sequences of arrays.") from None
        if len(weights) < 1 or len(weights) != len(biases):
            raise ValueError(f"from_arrays needs as many bias vectors as weight matrices "
                             f"(at least one); got {len(weights)} weights and {len(biases)} "
                             f"biases.")
        check_choice(activation, "activation", "MLP", ACTIVATIONS)
        check_choice(output, "output", "MLP", OUTPUTS)
        leak = check_scalar(leak, "leak", "MLP", low=0, low_inclusive=True)
        arrays = [_layout._as_numeric(w, f"weights[{l}]") for l, w in enumerate(weights)]
        barrays = [_layout._as_numeric(b, f"biases[{l}]") for l, b in enumerate(biases)]
        all32 = all(a.dtype == np.float32 for a in arrays + barrays)
        dt = np.float32 if all32 else np.float64
        for l, (w, b) in enumerate(zip(arrays, barrays)):
            if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
                raise ValueError(f"weights[{l}] must be a non-empty 2-D array (n_out, n_in); "
                                 f"got shape {w.shape}.")
            if b.shape != (w.shape[0],):
                raise ValueError(f"biases[{l}] must have shape ({w.shape[0]},) to match "
                                 f"weights[{l}] {w.shape}; got {b.shape}.")
            if l > 0 and w.shape[1] != arrays[l - 1].shape[0]:
                raise ValueError(f"weights[{l}] takes {w.shape[1]} inputs but weights[{l-1}] "
                                 f"has {arrays[l-1].shape[0]} outputs.")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"weights[{l}] or biases[{l}] contain NaN or inf.")
        net = cls.__new__(cls)
        net._set([_layout.as_param(w, dt) for w in arrays],
                 [_layout.as_param(b, dt) for b in barrays], activation, leak, output)
        net.init = None
        return net

    # ------------------------------------------------------------------ attributes
    @property
    def weights(self):
        """Weight matrices, ``(n_out, n_in)`` each; during a fit, a read-only snapshot of
        the current values (between two epochs)."""
        return self._params()[0]

    @property
    def biases(self):
        """Bias vectors, ``(n_out,)`` each; during a fit, a read-only snapshot."""
        return self._params()[1]

    @property
    def activation(self):
        """Activation of the hidden layers (fixed while a fit runs)."""
        return self._activation

    @activation.setter
    def activation(self, value):
        self._refuse_change("activation")
        self._activation = value       # checked where it is used (fit, save)

    @property
    def leak(self):
        """Negative slope of ``leaky_relu`` (fixed while a fit runs)."""
        return self._leak

    @leak.setter
    def leak(self, value):
        self._refuse_change("leak")
        self._leak = value

    def _refuse_change(self, what):
        if getattr(self, "_trainer", None) is not None:
            raise RuntimeError(f"The MLP's {what} cannot change while it is being trained "
                               f"(by {self._trainer}).")

    def _params(self):
        """(weights, biases) that belong together: the network's lists, or during a fit
        the snapshot of the current epoch."""
        if self._trainer is None:
            return self._weights, self._biases
        with self._lock:
            if self._trainer is None:          # the fit ended while we waited
                return self._weights, self._biases
            if self._snap is None:
                if self._sync is not None:
                    self._sync()
                self._snap = tuple(
                    _ParamList(self, kind, [_frozen_copy(a) for a in lst])
                    for kind, lst in (("weights", self._weights), ("biases", self._biases)))
            return self._snap

    def _acquire(self, who, token):
        """Mark the network as being trained by ``who`` (``token``: the fit's own
        object, which :meth:`_release` must be given)."""
        with self._lock:
            if self._trainer is not None:
                raise RuntimeError(f"This MLP is being trained (by {self._trainer}); a "
                                   f"network takes one fit at a time. Train a copy "
                                   f"(net.copy()) to train in parallel.")
            self._trainer = who
            self._token = token
            self._snap = None

    def _release(self, token):
        """End the ownership of the fit holding ``token`` (idempotent; a no-op for any
        other token): the arrays are writeable again."""
        with self._lock:
            if self._token is not token:
                return
            for a in self._locked:
                a.flags.writeable = True
            self._locked = ()
            self._sync = None
            self._snap = None
            self._trainer = None
            self._token = None

    def _train_views(self):
        """For the running fit (after :meth:`_acquire`): the parameters checked and
        repaired (:meth:`_checked_params`), as writeable views for the engines; the
        network's arrays themselves are read-only until the fit ends. (A view keeps the
        writeable flag it was made with; the Cython kernels write through pointers, the
        numpy twin through these views.)"""
        ws, bs = self._checked_params()
        views = ([a.view() for a in ws], [a.view() for a in bs])
        with self._lock:
            self._locked = tuple(ws) + tuple(bs)
            for a in self._locked:
                a.flags.writeable = False
            self._snap = None
        return views

    def _changed(self):
        """A running fit changed the parameters: the readers' snapshot is stale."""
        with self._lock:
            self._snap = None

    def __getstate__(self):
        ws, bs = self._params()
        state = self.__dict__.copy()
        for k in ("_lock", "_sync", "_trainer", "_snap", "_locked", "_token"):
            state.pop(k, None)
        state["_weights"] = [np.array(a) for a in ws]
        state["_biases"] = [np.array(a) for a in bs]
        return state

    def __setstate__(self, state):
        weights, biases = state.pop("_weights"), state.pop("_biases")
        for old, new in (("activation", "_activation"), ("leak", "_leak")):
            if old in state:                   # pickled before these were properties
                state[new] = state.pop(old)
        self.__dict__.update(state)
        self._weights = _ParamList(self, "weights", weights)
        self._biases = _ParamList(self, "biases", biases)
        self._init_ownership()

    @property
    def sizes(self):
        return (self._weights[0].shape[1],) + tuple(w.shape[0] for w in self._weights)

    @property
    def n_layers(self):
        """Number of weight layers L."""
        return len(self._weights)

    @property
    def dtype(self):
        """float32 or float64, fixed at construction (replaced arrays are converted)."""
        return self._dtype

    def _head(self):
        if self.output != "auto":
            return self.output
        return "sigmoid" if self.sizes[-1] == 1 else "softmax"

    def __repr__(self):
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, "
                f"dtype={np.dtype(self.dtype).name}, output={self.output!r})")

    # ------------------------------------------------------------------ config / files
    def get_config(self):
        """The network's settings as a dict of JSON types (keys ``CONFIG_FIELDS``).

        ``MLP.from_config(net.get_config(), net.weights, net.biases)`` rebuilds ``net``.
        """
        return {"sizes": [int(n) for n in self.sizes], "activation": self.activation,
                "leak": float(self.leak), "output": self.output, "init": self.init,
                "dtype": np.dtype(self.dtype).name}

    @staticmethod
    def check_config(config):
        """Validate a config dict (as :meth:`get_config` makes); return it normalised.

        Raises ``ValueError`` naming the first field that is missing or invalid.
        """
        if not isinstance(config, dict):
            raise ValueError(f"A network config must be a dict with keys {CONFIG_FIELDS}; "
                             f"got {type(config).__name__}.")

        def bad(field, expected):
            raise ValueError(f"config field {field!r} must be {expected}; got "
                             f"{config.get(field, '<missing>')!r}.")

        sizes = config.get("sizes")
        if not (isinstance(sizes, (list, tuple)) and len(sizes) >= 2 and all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                for n in sizes)):
            bad("sizes", "a list of at least two ints >= 1")
        for field, choices in (("activation", ACTIVATIONS), ("output", OUTPUTS)):
            if not isinstance(config.get(field), str) or config.get(field) not in choices:
                bad(field, f"one of {choices}")
        init = config.get("init")
        if init is not None and (not isinstance(init, str) or init not in INITS):
            bad("init", f"null or one of {INITS}")
        leak = config.get("leak")
        try:
            leak_ok = (isinstance(leak, (int, float)) and not isinstance(leak, bool)
                       and np.isfinite(float(leak)) and leak >= 0)
        except OverflowError:          # an int beyond float range
            leak_ok = False
        if not leak_ok:
            bad("leak", "a finite number >= 0")
        if config.get("dtype") not in ("float32", "float64"):
            bad("dtype", "'float32' or 'float64'")
        return {"sizes": [int(n) for n in sizes], "activation": config["activation"],
                "leak": float(leak), "output": config["output"], "init": init,
                "dtype": config["dtype"]}

    @classmethod
    def from_config(cls, config, weights, biases):
        """Build a network from a config dict and copies of its arrays.

        The arrays are converted to ``config['dtype']`` and must have the shapes
        ``config['sizes']`` gives; ``ValueError`` otherwise.
        """
        cfg = cls.check_config(config)
        dt = np.dtype(cfg["dtype"])
        sizes = cfg["sizes"]
        weights, biases = list(weights), list(biases)
        if len(weights) != len(sizes) - 1 or len(biases) != len(sizes) - 1:
            raise ValueError(f"config sizes {sizes} need {len(sizes) - 1} weight matrices "
                             f"and bias vectors; got {len(weights)} and {len(biases)}.")
        for l, (w, b) in enumerate(zip(weights, biases)):
            if np.shape(w) != (sizes[l + 1], sizes[l]) or np.shape(b) != (sizes[l + 1],):
                raise ValueError(f"weights[{l}] {np.shape(w)} / biases[{l}] {np.shape(b)} do "
                                 f"not match config sizes {sizes}.")
        net = cls.from_arrays([np.asarray(w, dtype=dt) for w in weights],
                              [np.asarray(b, dtype=dt) for b in biases],
                              activation=cfg["activation"], leak=cfg["leak"],
                              output=cfg["output"])
        net.init = cfg["init"]
        return net

    #: The model-file writer ``writer(net, path, *, metadata=None)``. The file format
    #: owns files: :mod:`poswise.io` imports this module and registers its
    #: ``save_model`` here on import, so that this module never imports it.
    _writer = None

    def save(self, path, *, metadata=None):
        """Write the network to ``path`` (a poswise model file; see :mod:`poswise.io`)."""
        if MLP._writer is None:       # only if poswise.io was never imported
            raise RuntimeError("no model-file writer is registered; import poswise.io "
                               "(importing poswise does).")
        MLP._writer(self, path, metadata=metadata)

    def copy(self):
        """An independent copy of the network (weights, biases and settings); during a
        fit, of the snapshot between two epochs."""
        ws, bs = self._params()
        net = MLP.from_arrays(ws, bs, activation=self.activation,
                              leak=self.leak, output=self.output)
        net.init = self.init
        return net

    def _checked_params(self):
        """The parameter lists in the layout, repaired in place if a user replaced an
        array (dtype, order or shape are checked against the first layer's dtype)."""
        dt = self.dtype
        ws, bs = self._weights, self._biases
        for lst, kind in ((ws, "weights"), (bs, "biases")):
            for l, a in enumerate(lst):
                if not isinstance(a, np.ndarray) or a.dtype != dt or not a.flags.c_contiguous \
                        or not a.flags.writeable:
                    a = _layout._as_numeric(a, f"{kind}[{l}]")
                    list.__setitem__(lst, l, _layout.as_param(a, dt))
                if not np.isfinite(lst[l]).all():
                    raise ValueError(f"The network's {kind}[{l}] contains NaN or inf.")
        for l in range(len(ws)):
            if ws[l].ndim != 2 or bs[l].shape != (ws[l].shape[0],) or (
                    l > 0 and ws[l].shape[1] != ws[l - 1].shape[0]):
                raise ValueError(f"The network's arrays no longer chain at layer {l}: "
                                 f"weights {ws[l].shape}, biases {bs[l].shape}.")
        return ws, bs

    # ------------------------------------------------------------------ inference
    def decision_function(self, X):
        """Values of the last layer for ``X``: logits, or cosines for a cosine head."""
        from ._numpy_backend import forward_output
        X = _layout.check_X(X, self.dtype, self.sizes[0])
        ws, bs = self._params()
        return forward_output(ws, bs, X, self.activation, self.leak,
                              cosine=self._head() == "cosine")

    def predict_proba(self, X, *, s=30.0):
        """Output-head values, shape ``(N, K)``.

        sigmoid: probability of class 1; softmax: class probabilities; cosine:
        ``softmax(s cos)`` (``s``: a finite float > 0, the scale of the cosines);
        identity: the raw outputs.
        """
        s = check_scalar(s, "s", "MLP.predict_proba", low=0)
        z = self.decision_function(X)
        head = self._head()
        if head == "sigmoid":
            from ._numpy_backend import sigmoid
            return sigmoid(z)
        if head in ("softmax", "cosine"):
            z = z * s if head == "cosine" else z
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return z

    def predict(self, X):
        """Class labels (int64): 0/1 for one output, one 0/1 column per output for a
        sigmoid head with several outputs (multi-label), argmax otherwise; identity heads
        return the raw outputs."""
        z = self.decision_function(X)
        head = self._head()
        if head == "identity":
            return z
        if z.shape[1] == 1:
            return (z[:, 0] > 0).astype(np.int64)
        if head == "sigmoid":          # K independent labels (multi-label)
            return (z > 0).astype(np.int64)
        return np.argmax(z, axis=1).astype(np.int64)


def _frozen_copy(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


class _ParamList(list):
    """The weight or bias list of an MLP: fixed length; assigning an entry copies the
    values into the existing array after checking the shape (the dtype is converted),
    so that a running engine's pointers stay valid; refused while a fit runs."""

    def __init__(self, owner, kind, arrays):
        super().__init__(arrays)
        self._owner_ref = owner
        self._kind = kind

    def __setitem__(self, i, value):
        if isinstance(i, slice):
            raise TypeError(f"assign the {self._kind} one at a time.")
        net = self._owner_ref
        if getattr(net, "_trainer", None) is not None:
            raise RuntimeError(f"{self._kind}[{i}] cannot be replaced while the network is "
                               f"being trained (by {net._trainer}).")
        cur = list.__getitem__(self, i)
        arr = _layout._as_numeric(value, f"{self._kind}[{i}]")
        if arr.shape != cur.shape:
            raise ValueError(f"{self._kind}[{i}] must keep its shape {cur.shape}; got "
                             f"{arr.shape}.")
        if not np.isfinite(arr).all():
            raise ValueError(f"{self._kind}[{i}] must be finite.")
        np.copyto(cur, arr, casting="unsafe")

    def _fixed(self, *args, **kwargs):
        raise TypeError(f"the {self._kind} list of an MLP has one entry per layer; it "
                        f"cannot grow or shrink.")

    append = extend = insert = pop = remove = clear = sort = reverse = _fixed
    __delitem__ = __iadd__ = __imul__ = _fixed

    def __reduce__(self):
        return (list, (list(self),))
