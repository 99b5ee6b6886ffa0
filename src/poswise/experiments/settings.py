"""Checking an experiment's settings before any training: one message per problem,
naming the parameter, what was expected and what was given (:class:`CompareError`)."""
import math
from numbers import Integral, Real

import numpy as np

from ..updates import UPDATE_RULES, UpdateRule, get_update

__all__ = ["CompareError", "resolve_rules", "unpack_dataset", "as_list", "check",
           "is_real", "is_int"]


class CompareError(ValueError):
    """An invalid setting of :func:`compare`, detected before any training starts."""


# --------------------------------------------------------------------------- checks

def as_list(value, name, ok, what):
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if not items:
        raise CompareError(f"The {name!r} parameter of compare must not be empty.")
    if not all(ok(v) for v in items):
        raise CompareError(f"The {name!r} parameter of compare must be {what}. Got "
                           f"{value!r} instead.")
    if len(set(items)) != len(items):
        raise CompareError(f"The {name!r} parameter of compare must not repeat values. "
                           f"Got {value!r} instead.")
    return items


def is_real(v, low=0.0, inclusive=False):
    return (isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
            and (v >= low if inclusive else v > low))


def is_int(v, low):
    return isinstance(v, Integral) and not isinstance(v, bool) and v >= low


def check(value, name, ok, what, allow_none=False):
    if value is None and allow_none:
        return None
    if not ok(value):
        raise CompareError(f"The {name!r} parameter of compare must be {what}"
                           f"{' or None' if allow_none else ''}. Got {value!r} instead.")
    return value


SEED_WHAT = "an int >= 1 (a number of seeds) or a list of ints >= 0"


def seed_list_of(seeds, name="seeds", first=0):
    """The seeds an experiment's ``seeds`` option names: a count ``n`` is
    ``first .. first + n - 1``, a list is taken as given (:class:`CompareError` otherwise)."""
    if isinstance(seeds, Integral) and not isinstance(seeds, bool):
        n = check(seeds, name, lambda v: v >= 1, SEED_WHAT)
        return list(range(first, first + n))
    return [int(v) for v in as_list(seeds, name, lambda v: is_int(v, 0), SEED_WHAT)]


def resolve_rules(update, update_params=None):
    """``[(name, rule), ...]`` for compare's ``update`` and ``update_params``.

    Each override in ``update_params`` goes to the rules that take it (``momentum`` to
    SGD-family rules and RMSprop, ``betas`` to Adam/AdamW, ...); one that no rule takes is
    an error, as is a repeated rule.
    """
    names = update if isinstance(update, (list, tuple)) else [update]
    if not names:
        raise CompareError("The 'update' parameter of compare must not be empty.")
    params = dict(update_params or {})
    used, out = set(), []
    for u in names:
        if isinstance(u, UpdateRule):
            rule, name = u, u.name
        elif isinstance(u, str) and u in UPDATE_RULES:
            base = UPDATE_RULES[u]()
            mine = {k: v for k, v in params.items() if k in base.hyper()}
            used.update(mine)
            try:
                rule = get_update(u, **mine)
            except ValueError as exc:
                raise CompareError(str(exc)) from None
            name = u
        else:
            raise CompareError(f"The 'update' parameter of compare must be a rule name "
                               f"({', '.join(UPDATE_RULES)}), an UpdateRule or a list of "
                               f"them. Got {u!r} instead.")
        if any(name == n for n, _ in out):
            raise CompareError(f"The 'update' parameter of compare repeats {name!r}.")
        out.append((name, rule))
    unused = sorted(set(params) - used)
    if unused:
        raise CompareError(f"The update rule hyper-parameter(s) {', '.join(unused)} apply "
                           f"to none of the rules {', '.join(n for n, _ in out)}.")
    return out


def unpack_dataset(dataset):
    """(X_train, y_train, X_test, y_test, name, n_classes) from a Dataset-like input."""
    if isinstance(dataset, str):
        from ..datasets import DATASETS, load
        if dataset not in DATASETS:
            raise CompareError(f"The 'dataset' parameter of compare must be a Dataset, a "
                               f"tuple (X_train, y_train, X_test, y_test) or one of "
                               f"{', '.join(DATASETS)}. Got {dataset!r} instead.")
        dataset = load(dataset)
    if all(hasattr(dataset, a) for a in ("X_train", "y_train", "X_test", "y_test")):
        parts = (dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test)
        name = str(getattr(dataset, "name", "data"))
        classes = getattr(dataset, "classes", None)
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 4:
        parts, name, classes = tuple(dataset), "data", None
    else:
        raise CompareError(f"The 'dataset' parameter of compare must be a Dataset, a tuple "
                           f"(X_train, y_train, X_test, y_test) or a dataset name. Got "
                           f"{type(dataset).__name__} instead.")
    Xtr, ytr, Xte, yte = (np.asarray(p) for p in parts)
    for lab, arr in (("y_train", ytr), ("y_test", yte)):
        if arr.ndim != 1 or arr.dtype.kind not in "biuf" or (
                arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
            raise CompareError(f"compare needs integer class labels: {lab} must be a 1-D "
                               f"array of ints; got shape {arr.shape}, dtype {arr.dtype}.")
    if ytr.size == 0:
        raise CompareError("compare needs training data: y_train is empty.")
    if Xtr.ndim != 2 or Xte.ndim != 2 or Xtr.shape[1] != Xte.shape[1]:
        raise CompareError(f"compare needs X_train and X_test of shape (n_samples, "
                           f"n_features) with the same n_features; got {Xtr.shape} and "
                           f"{Xte.shape}.")
    top = max(int(ytr.max()), int(yte.max()) if yte.size else 0)
    n_classes = len(classes) if classes else top + 1
    return Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64), name, max(n_classes, 2)
