"""A seeded synthetic dataset labelled by a random teacher MLP."""
from numbers import Real

import numpy as np

from .._layout import check_dtype, check_widths
from ._base import Dataset, check_int

#: The synthetic dataset of ``load("synthetic")`` (and of the command line).
SYNTHETIC_DEFAULTS = {"n_samples": 500, "n_features": 20, "rng": 0}


def make_synthetic(n_samples=500, n_features=20, n_classes=2, *, hidden=(16,),
                   n_test=None, noise=0.0, rng=None, dtype=np.float64):
    """Make a seeded classification dataset labelled by a random teacher MLP.

    Inputs are i.i.d. standard normal. Labels come from a "teacher" MLP with random
    weights (normal with variance ``1/fan_in``, biases normal with standard deviation
    0.5) and ``tanh`` hidden units: with 2 classes the teacher has one output,
    thresholded at its median over the training inputs, so that the training classes
    are balanced (``n_samples // 2`` ones); with ``K > 2`` classes it has ``K``
    outputs, each centered on its training mean, and the label is their argmax.

    Parameters
    ----------
    n_samples : int, default=500
        Number of training samples (>= 1).
    n_features : int, default=20
        Number of input features (>= 1).
    n_classes : int, default=2
        Number of classes (>= 2).
    hidden : sequence of int or int, default=(16,)
        Hidden layer widths of the teacher; ``()`` gives a linear teacher.
    n_test : int, optional
        Number of test samples (>= 0). Default: ``n_samples // 4``.
    noise : float, default=0.0
        Fraction in [0, 1] of labels replaced by a different class drawn at random
        (``round(noise * n)`` labels in each split).
    rng : None, int, numpy.random.Generator or SeedSequence, optional
        Seed or generator, passed to :func:`numpy.random.default_rng`. An int gives the
        same dataset every time.
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test`` (values are drawn in float64 and cast,
        so the seed gives the same data in both dtypes up to rounding).

    Returns
    -------
    Dataset
        ``name='synthetic'``, ``classes=('0', ..., str(n_classes - 1))``.

    Examples
    --------
    >>> ds = make_synthetic(rng=0)
    >>> ds.X_train.shape, ds.X_test.shape
    ((500, 20), (125, 20))
    """
    owner = "make_synthetic"
    n_samples = check_int(n_samples, "n_samples", owner, 1)
    n_features = check_int(n_features, "n_features", owner, 1)
    n_classes = check_int(n_classes, "n_classes", owner, 2)
    hidden_t = check_widths(hidden, "hidden", owner)
    n_test = n_samples // 4 if n_test is None else check_int(n_test, "n_test", owner, 0)
    if not (isinstance(noise, Real) and not isinstance(noise, bool)
            and 0.0 <= float(noise) <= 1.0):
        raise ValueError(f"The 'noise' parameter of {owner} must be a float in [0, 1]. "
                         f"Got {noise!r} instead.")
    dtype = check_dtype(dtype, owner)
    try:
        gen = np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise ValueError(f"The 'rng' parameter of {owner} must be None, an int >= 0, a "
                         f"numpy Generator or SeedSequence. Got {rng!r} instead.") from None

    sizes = [n_features, *[int(h) for h in hidden_t], 1 if n_classes == 2 else n_classes]
    weights = [gen.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])
               for i in range(len(sizes) - 1)]
    biases = [0.5 * gen.standard_normal(sizes[i + 1]) for i in range(len(sizes) - 1)]
    n_total = n_samples + n_test
    X = gen.standard_normal((n_total, n_features))

    a = X
    for W, b in zip(weights[:-1], biases[:-1]):
        a = np.tanh(a @ W.T + b)
    out = a @ weights[-1].T + biases[-1]
    if n_classes == 2:
        y = (out[:, 0] > np.median(out[:n_samples, 0])).astype(np.int64)
    else:
        out -= out[:n_samples].mean(axis=0)
        y = np.argmax(out, axis=1).astype(np.int64)

    if noise > 0:
        for lo, hi in ((0, n_samples), (n_samples, n_total)):
            k = int(round(float(noise) * (hi - lo)))
            if k:
                idx = lo + gen.choice(hi - lo, size=k, replace=False)
                y[idx] = (y[idx] + gen.integers(1, n_classes, size=k)) % n_classes

    X = X.astype(dtype, order="C")
    return Dataset(X_train=np.ascontiguousarray(X[:n_samples]),
                   y_train=np.ascontiguousarray(y[:n_samples]),
                   X_test=np.ascontiguousarray(X[n_samples:]),
                   y_test=np.ascontiguousarray(y[n_samples:]),
                   name="synthetic",
                   classes=tuple(str(k) for k in range(n_classes)))
