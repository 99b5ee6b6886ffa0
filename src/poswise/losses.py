"""Losses of poswise: the output activation and the loss go together.

Every loss is the **mean** over the N samples of a per-sample loss; its gradient with
respect to the output layer's pre-activation ``Z`` is therefore a per-sample term over N.

=================  ==============  ======  =================================================
name               output          K       per-sample loss
=================  ==============  ======  =================================================
``bce``            sigmoid         >= 1    ``-sum_k (y log p + (1-y) log(1-p))``, logits
``cross_entropy``  softmax         >= 2    ``-log softmax(z)[y]``, integer labels
``am_softmax``     cosine          >= 2    ``-log softmax(s (cos - m [k = y]))[y]``
``mse``            identity        any     ``1/2 ||z - y||^2``
=================  ==============  ======  =================================================

``am_softmax`` is the additive-margin softmax of Wang et al. (2018): the last layer's weight
rows and its input features are L2-normalised (``v / max(|v|, 1e-12)``, as torch's
``F.normalize``), the logits are ``s (cos theta_k - m [k = y])``, and the last layer has no
bias (its bias is neither used nor updated). Prediction is ``argmax_k cos theta_k``.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["LOSSES", "LossSpec", "loss_value_and_delta"]


@dataclass(frozen=True)
class LossSpec:
    name: str
    output: str        # the MLP output head this loss trains: sigmoid/softmax/cosine/identity
    labels: str        # "binary", "class" or "real"


LOSSES = {
    "bce": LossSpec("bce", "sigmoid", "binary"),
    "cross_entropy": LossSpec("cross_entropy", "softmax", "class"),
    "am_softmax": LossSpec("am_softmax", "cosine", "class"),
    "mse": LossSpec("mse", "identity", "real"),
}


def _log_softmax(z):
    mx = z.max(axis=1, keepdims=True)
    shifted = z - mx
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss_value_and_delta(loss, out, y, *, s=30.0, m=0.35, n_total=None, weights=None):
    """Mean loss of the output-layer values ``out`` and ``dE/d(out)``.

    ``out`` is ``(N, K)``: logits for bce / cross_entropy / mse, cosines for am_softmax
    (the returned gradient is then with respect to the cosines). ``y`` is in the form of
    ``poswise._layout.check_y``. The mean is over ``n_total`` samples (default N): with
    more, the result is these rows' share of it. This is the numpy reference of the
    kernels' loss. ``bce`` with K > 1 outputs is K independent sigmoid outputs
    (multi-label), summed over outputs and averaged over samples. ``weights`` (one per
    row) make it the weighted mean: row i counts ``weights[i]`` times and the mean is over
    the sum of the weights (or ``n_total``).
    """
    if weights is not None:
        N = float(np.sum(weights)) if n_total is None else n_total
        w = np.asarray(weights, dtype=np.float64)[:, None]
        if loss in ("bce", "mse"):
            z = out
            yy = np.reshape(y, out.shape)
            if loss == "bce":
                e = np.exp(-np.abs(z))
                per = np.maximum(z, 0) - z * yy + np.log1p(e)
                d = np.where(z >= 0, 1 / (1 + e), e / (1 + e)) - yy
            else:
                d = z - yy
                per = 0.5 * d * d
            return np.sum(w * per) / N, (d * (w / N)).astype(out.dtype)
        value, delta = loss_value_and_delta(loss, out, y, s=s, m=m, n_total=1)
        # with n_total=1 the per-row terms are unscaled sums; reweight them
        rows = out.shape[0]
        per_row = _per_row_ce(loss, out, y, s, m)
        return float(np.sum(w[:, 0] * per_row)) / N, (delta * (w / N)).astype(out.dtype)
    N = out.shape[0] if n_total is None else n_total
    if loss == "bce":
        z = out
        y = np.reshape(y, out.shape)
        value = np.sum(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))) / N
        e = np.exp(-np.abs(z))
        p = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
        return value, ((p - y) / N).astype(out.dtype)
    if loss == "mse":
        r = out - y
        return 0.5 * np.sum(r * r) / N, (r / N).astype(out.dtype)
    rows = out.shape[0]
    onehot = np.zeros_like(out)
    onehot[np.arange(rows), y] = 1
    if loss == "am_softmax":
        logits = s * (out - m * onehot)
        scale = s
    else:
        logits = out
        scale = 1.0
    logp = _log_softmax(logits)
    value = -np.sum(logp[np.arange(rows), y]) / N
    return value, (scale * (np.exp(logp) - onehot) / N).astype(out.dtype)


def _per_row_ce(loss, out, y, s, m):
    """Per-row cross-entropy (or AM-softmax) terms."""
    rows = out.shape[0]
    onehot = np.zeros_like(out)
    onehot[np.arange(rows), y] = 1
    logits = s * (out - m * onehot) if loss == "am_softmax" else out
    return -_log_softmax(logits)[np.arange(rows), y]
