"""The loss the paper's reference code reported (a measurement, not a training loss).

Per-class binary cross-entropy of the output head's probabilities, summed over the classes
and averaged over the samples, with the reference code's ``1e-5`` inside the logarithms.
A uniform 10-class prediction gives 3.2506, so the paper's MNIST and CIFAR-10 thresholds
(3.248, 3.23) sit barely below chance: :func:`poswise.experiments.compare` records it next
to the real training loss so that both can be read.
"""
import numpy as np

__all__ = ["paper_loss", "PAPER_LOSS_EPS"]

#: The small constant the reference code adds inside its logarithms.
PAPER_LOSS_EPS = 1e-5


def paper_loss(net, X, y, *, n_classes=None):
    """The loss the paper's reference code reported.

    ::

        -(1/N) sum_n sum_k [ y_nk log(p_nk + 1e-5) + (1 - y_nk) log(1 - p_nk + 1e-5) ]

    For a softmax head ``y`` is one-hot; for one sigmoid output it is the plain binary
    cross-entropy.

    Parameters
    ----------
    net : MLP
        Read through ``net.predict_proba`` (its output head must match the loss it is
        trained with).
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Integer labels.
    n_classes : int, optional
        Number of outputs; default ``net.sizes[-1]``.

    Returns
    -------
    float
    """
    p = np.asarray(net.predict_proba(X), dtype=np.float64)
    K = p.shape[1] if n_classes is None else n_classes
    return from_proba(p, targets(y, K))


def targets(y, K):
    """Labels -> the reference code's targets: a column of 0/1, or one-hot rows."""
    y = np.asarray(y, dtype=np.int64)
    if K == 1:
        return y.astype(np.float64).reshape(-1, 1)
    Y = np.zeros((y.shape[0], K))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def from_proba(p, Y):
    """The paper's loss of probabilities ``p`` against targets ``Y`` (same shape)."""
    eps = PAPER_LOSS_EPS
    per = Y * np.log(p + eps) + (1 - Y) * np.log(1 - p + eps)
    return float(-per.sum() / p.shape[0])


def fast(net, X, Y):
    """:func:`paper_loss` for validated ``X`` and precomputed targets ``Y`` (per epoch).

    Skips ``predict_proba``'s input checks (a full pass over X); same values.
    """
    from .._numpy_backend import forward_output
    head = net._head()
    z = forward_output(net.weights, net.biases, X, net.activation, net.leak,
                       cosine=head == "cosine").astype(np.float64)
    if head == "sigmoid":
        p = 0.5 * (1 + np.tanh(0.5 * z))       # the logistic function, overflow-free
    else:
        if head == "cosine":
            z = z * 30.0                        # predict_proba's default scale s
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        p = z / z.sum(axis=1, keepdims=True)
    return from_proba(p, Y)
