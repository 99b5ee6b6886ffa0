"""Update rules: how a gradient becomes a step.

A trainer's *schedule* says which layers each step updates (gradient descent: one span from
layer 0 per epoch; the position-wise optimizer: spans ``L-1, ..., 0``). Its *update rule*,
one of the classes here, says how the gradient ``g`` of the mean loss moves a parameter
``p``. The semantics are those of ``torch.optim`` (SGD with dampening 0, Adam, AdamW and
RMSprop with their defaults, not amsgrad, not centered, not maximize), with every weight
matrix and every bias vector its own parameter with its own state and its own step count
``t``: a parameter's state advances only when a step updates it. In a position-wise epoch
layer ``l`` (0 = the input layer) is updated ``l + 1`` times, so its ``t`` runs faster than
the first layer's.

The rule objects only hold hyper-parameters; the state (momentum buffers, moments, step
counts) belongs to a training session. The kernels (``_kernels/_rules.h``) and the numpy
twin (:meth:`UpdateRule.apply`, the specification they are tested against) implement the
same formulas.
"""
import math

import numpy as np

from ._layout import check_scalar

__all__ = ["UpdateRule", "SGD", "Adam", "AdamW", "RMSprop", "UPDATE_RULES",
           "get_update"]

# Kernel codes of the rules; _rules.h defines the same numbers (PW_RULE_*), and
# _kernels/_core.pyx checks at import that they agree.
RULE_CODES = {"sgd": 0, "adam": 1, "adamw": 2, "rmsprop": 3}


class UpdateRule:
    """Base class of the update rules (hyper-parameters only; no state)."""

    #: kernel family, a key of RULE_CODES
    family = ""
    #: number of state arrays per parameter
    n_state = 0

    def __eq__(self, other):
        return type(self) is type(other) and self.hyper() == other.hyper()

    def __hash__(self):
        return hash((type(self).__name__, tuple(self.hyper().items())))

    def hyper(self):
        """The hyper-parameters as a JSON-friendly dict (History, checkpoints)."""
        raise NotImplementedError

    @property
    def name(self):
        """Registry name of an object with these hyper-parameters (e.g. "adam")."""
        for key, make in UPDATE_RULES.items():
            if make() == self:
                return key
        return self.family

    @property
    def is_plain_sgd(self):
        """True for ``p -= lr * g`` (the kernels' fused fast path)."""
        return False

    @property
    def row_space(self):
        """Whether the step of a weight stays in the row space of its layer's input plus
        the weight itself (then ``first_layer="dual"`` can represent it exactly)."""
        return False

    def kernel_params(self):
        """(code, momentum, nesterov, weight_decay, beta1, beta2, eps, alpha,
        decay_biases)."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}"
                         for k, v in self.hyper().items())
        return f"{type(self).__name__}({args})"

    def new_state(self, p):
        """Fresh state for parameter ``p``: a list of ``n_state`` zero arrays."""
        return [np.zeros_like(p) for _ in range(self.n_state)]

    def apply(self, p, g, state, t, lr, bias=False):
        """Numpy reference: update ``p`` in place with gradient ``g``.

        ``state`` is the list from :meth:`new_state` (updated in place) and ``t`` the
        parameter's step count including this step (1 on its first update); ``bias``
        says that ``p`` is a bias vector (no weight decay with ``decay_biases=False``).
        """
        raise NotImplementedError

    def _decay(self, bias):
        return 0.0 if bias and not self.decay_biases else self.weight_decay


def _check_bool(value, name, cls):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"The '{name}' parameter of {cls} must be a bool. Got {value!r} "
                         f"instead.")
    return bool(value)


def _check_nonneg(value, name, cls, *, upper=None):
    value = check_scalar(value, name, cls, low=0, low_inclusive=True)
    if upper is not None and not value < upper:
        raise ValueError(f"The '{name}' parameter of {cls} must be a float in "
                         f"[0, {upper}). Got {value!r} instead.")
    return float(value)


class SGD(UpdateRule):
    """Stochastic gradient descent with optional momentum (``torch.optim.SGD``).

    For each step, with ``g`` the gradient, ``v`` the momentum buffer (zero at first)::

        g = g + weight_decay * p
        v = momentum * v + g                    (if momentum > 0)
        step = g + momentum * v if nesterov else v      (g when momentum == 0)
        p = p - lr * step

    Parameters
    ----------
    momentum : float in [0, 1), default 0
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0``).
    weight_decay : float >= 0, default 0
        L2 penalty added to the gradient.
    decay_biases : bool, default True
        Whether weight decay applies to the bias vectors too (torch's default for one
        parameter group); False decays the weight matrices only (scikit-learn's
        ``alpha``).
    """
    family = "sgd"

    def __init__(self, momentum=0.0, nesterov=False, weight_decay=0.0, decay_biases=True):
        self.momentum = _check_nonneg(momentum, "momentum", "SGD", upper=1)
        self.nesterov = _check_bool(nesterov, "nesterov", "SGD")
        self.decay_biases = _check_bool(decay_biases, "decay_biases", "SGD")
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD with nesterov=True needs a momentum > 0 (as torch.optim).")
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", "SGD")

    @property
    def n_state(self):
        return 1 if self.momentum > 0 else 0

    def hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "decay_biases": self.decay_biases}

    @property
    def is_plain_sgd(self):
        return self.momentum == 0 and self.weight_decay == 0

    @property
    def row_space(self):
        return True

    def kernel_params(self):
        return (RULE_CODES["sgd"], self.momentum, int(self.nesterov), self.weight_decay,
                0.0, 0.0, 0.0, 0.0, int(self.decay_biases))

    def apply(self, p, g, state, t, lr, bias=False):
        wd = self._decay(bias)
        if wd:
            g = g + wd * p
        if self.momentum:
            v = state[0]
            v *= self.momentum
            v += g
            step = g + self.momentum * v if self.nesterov else v
        else:
            step = g
        p -= lr * step


class Adam(UpdateRule):
    """Adam (``torch.optim.Adam``, not amsgrad), L2 penalty added to the gradient.

    With ``m`` and ``s`` the first and second moments (zero at first) and ``t`` the
    parameter's step count::

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        p = p - (lr / (1 - beta1**t)) * m / (sqrt(s) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    decay_biases : bool, default True
        Whether weight decay applies to the bias vectors too (torch's default for one
        parameter group); False decays the weight matrices only (scikit-learn's
        ``alpha``).
    """
    family = "adam"
    n_state = 2
    _default_decay = 0.0

    def __init__(self, betas=(0.9, 0.999), eps=1e-8, weight_decay=None, decay_biases=True):
        cls = type(self).__name__
        self.decay_biases = _check_bool(decay_biases, "decay_biases", cls)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"The 'betas' parameter of {cls} must be a pair of floats in "
                             f"[0, 1). Got {betas!r} instead.") from None
        self.betas = (_check_nonneg(b1, "betas[0]", cls, upper=1),
                      _check_nonneg(b2, "betas[1]", cls, upper=1))
        self.eps = float(check_scalar(eps, "eps", cls, low=0))
        if weight_decay is None:
            weight_decay = self._default_decay
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", cls)

    def hyper(self):
        return {"betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "decay_biases": self.decay_biases}

    def kernel_params(self):
        return (RULE_CODES[self.family], 0.0, 0, self.weight_decay, self.betas[0],
                self.betas[1], self.eps, 0.0, int(self.decay_biases))

    def apply(self, p, g, state, t, lr, bias=False):
        b1, b2 = self.betas
        wd = self._decay(bias)
        if self.family == "adamw":
            p *= 1 - lr * wd
        elif wd:
            g = g + wd * p
        m, s = state
        m += (g - m) * (1 - b1)
        s *= b2
        s += (1 - b2) * g * g
        step_size = lr / (1 - b1 ** t)
        denom = np.sqrt(s) / math.sqrt(1 - b2 ** t) + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam with decoupled weight decay.

    As :class:`Adam` without ``g += weight_decay * p``, and ``p *= 1 - lr * weight_decay``
    before the step. Default ``weight_decay=0.01``.
    """
    family = "adamw"
    _default_decay = 0.01


class RMSprop(UpdateRule):
    """RMSprop (``torch.optim.RMSprop``, not centered).

    With ``s`` the square average and ``b`` the momentum buffer (zero at first)::

        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g**2
        d = g / (sqrt(s) + eps)
        b = momentum * b + d;  p = p - lr * b       (momentum > 0)
        p = p - lr * d                              (momentum == 0)

    Parameters
    ----------
    alpha : float in [0, 1), default 0.99
    eps : float > 0, default 1e-8
    momentum : float in [0, 1), default 0
    weight_decay : float >= 0, default 0
    decay_biases : bool, default True
        Whether weight decay applies to the bias vectors too (torch's default for one
        parameter group); False decays the weight matrices only (scikit-learn's
        ``alpha``).
    """
    family = "rmsprop"

    def __init__(self, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0,
                 decay_biases=True):
        self.decay_biases = _check_bool(decay_biases, "decay_biases", "RMSprop")
        self.alpha = _check_nonneg(alpha, "alpha", "RMSprop", upper=1)
        self.eps = float(check_scalar(eps, "eps", "RMSprop", low=0))
        self.momentum = _check_nonneg(momentum, "momentum", "RMSprop", upper=1)
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", "RMSprop")

    @property
    def n_state(self):
        return 2 if self.momentum > 0 else 1

    def hyper(self):
        return {"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "decay_biases": self.decay_biases}

    def kernel_params(self):
        return (RULE_CODES["rmsprop"], self.momentum, 0, self.weight_decay, 0.0, 0.0,
                self.eps, self.alpha, int(self.decay_biases))

    def apply(self, p, g, state, t, lr, bias=False):
        wd = self._decay(bias)
        if wd:
            g = g + wd * p
        s = state[0]
        s *= self.alpha
        s += (1 - self.alpha) * g * g
        d = g / (np.sqrt(s) + self.eps)
        if self.momentum > 0:
            b = state[1]
            b *= self.momentum
            b += d
            p -= lr * b
        else:
            p -= lr * d


#: Names accepted wherever an update rule is (trainers, command line, estimators), each
#: with the rule it stands for.
UPDATE_RULES = {
    "sgd": SGD,
    "momentum": lambda: SGD(momentum=0.9),
    "nesterov": lambda: SGD(momentum=0.9, nesterov=True),
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
}

#: Display labels of the names above.
UPDATE_LABELS = {"sgd": "SGD", "momentum": "momentum", "nesterov": "Nesterov",
                 "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}

# Which hyper-parameters each family takes (command-line flags, estimators).
FAMILY_CLASSES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get_update(update, owner="the trainer", **overrides):
    """An :class:`UpdateRule` from a rule object or a name of :data:`UPDATE_RULES`.

    ``overrides`` replace hyper-parameters of a named rule (e.g.
    ``get_update("momentum", momentum=0.8)``); keys the rule does not take raise.
    """
    if isinstance(update, UpdateRule):
        if overrides:
            raise ValueError("hyper-parameter overrides go with a rule name, not an object.")
        return update
    if not isinstance(update, str) or update not in UPDATE_RULES:
        raise ValueError(f"The 'update' parameter of {owner} must be an UpdateRule "
                         f"(poswise.SGD, Adam, AdamW, RMSprop) or one of "
                         f"{sorted(UPDATE_RULES)}. Got {update!r} instead.")
    rule = UPDATE_RULES[update]()
    if overrides:
        params = rule.hyper()
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise ValueError(f"The update rule {update!r} takes {sorted(params)}; got "
                             f"{unknown}.")
        params.update(overrides)
        rule = type(rule)(**params)
    return rule


def from_hyper(family, hyper):
    """Rebuild a rule from its family and :meth:`UpdateRule.hyper` (checkpoints)."""
    if family not in FAMILY_CLASSES:
        raise ValueError(f"unknown update rule family {family!r}")
    hyper = dict(hyper)
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    return FAMILY_CLASSES[family](**hyper)
