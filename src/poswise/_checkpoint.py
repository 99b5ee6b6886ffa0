"""Training checkpoints: a model file (``poswise.io``) plus what resuming needs.

A checkpoint stores the network, every trainer setting that changes the arithmetic
(schedule, learning rate, loss, batch size, backend, update rule and its
hyper-parameters, layer scales), a fingerprint of the training and validation data, the
History, the shuffling state, the dual first layer's arrays (``DUAL_KEYS``) and the
update rule's state (step counts and state arrays), so that a resumed run continues bit
for bit as an uninterrupted one -- or is refused, before anything changes, with a message
naming what differs.
"""
import hashlib
import json
import os
import tempfile

import numpy as np

from .history import History

STATE_KEYS = ("s1W", "s2W", "s1b", "s2b")
# the dual first layer's arrays (poswise._plan.build_engines): W[0] = a W0_init - C X,
# with the momentum of C in V (and va)
DUAL_KEYS = ("W0_init", "C", "a", "V", "va")


def settings(trainer, rule):
    """The settings a resume must match."""
    return {"optimizer": trainer.schedule, "lr": float(trainer.lr), "loss": trainer.loss,
            "batch_size": trainer.batch_size, "shuffle": bool(trainer.shuffle),
            "s": float(trainer.s), "m": float(trainer.m), "backend": trainer.backend,
            "update": rule.family, "update_params": rule.hyper(),
            "layer_scales": getattr(trainer, "layer_scales", None)}


# what a checkpoint written before a setting was stored meant (backend: not recorded,
# taken as the current one)
_OLD_DEFAULTS = {"update": "sgd",
                 "update_params": {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
                                   "decay_biases": True},
                 "layer_scales": None, "shuffle": True}


# ---------------------------------------------------------------------- checks before training
def check_output_path(path, name, where):
    """``path`` as a str if a file can be written there (a probe file is created and
    removed in its folder); ValueError naming the parameter otherwise."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"The {name!r} parameter of {where} must be a file path. Got "
                        f"{path!r} instead.") from None
    bad = None
    folder = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path:
        bad = "it is empty"
    elif os.path.isdir(path):
        bad = "it is a directory"
    elif os.path.lexists(path) and not os.path.islink(path) and not os.path.isfile(path):
        bad = "it exists and is not a regular file"
    elif not os.path.isdir(folder):
        bad = f"its folder {folder} does not exist"
    else:
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".poswise-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            bad = f"no file can be created in {folder} ({exc.strerror or exc})"
    if bad:
        raise ValueError(f"The {name!r} parameter of {where} must be a path where a file "
                         f"can be written; {path!r}: {bad}.")
    return path


def _fingerprint(a):
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
    return h.hexdigest()[:32]


def data_info(X, y, val, sample_weight=None):
    """What identifies the data of a run: sizes and fingerprints (sha-256 of the
    validated arrays, computed once per fit that checkpoints or resumes); sample weights
    count as part of y."""
    yf = _fingerprint(y) if sample_weight is None else \
        _fingerprint(y) + _fingerprint(sample_weight)[:8]
    return {"n_samples": int(X.shape[0]), "X": _fingerprint(X), "y": yf,
            "val": None if val is None else [_fingerprint(val[0]), _fingerprint(val[1])]}


def _to_json(v):
    """A bit generator's state as JSON types (arrays as tagged lists)."""
    if isinstance(v, dict):
        return {str(k): _to_json(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return {"__ndarray__": v.dtype.str, "data": v.tolist()}
    if isinstance(v, (list, tuple)):
        return [_to_json(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _from_json(v):
    if isinstance(v, dict):
        if set(v) == {"__ndarray__", "data"}:
            return np.array(v["data"], dtype=v["__ndarray__"])
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def check_rng_storable(gen, where):
    """Refuse, before training, a shuffling generator whose state cannot be stored."""
    if gen is None:
        return
    bg = gen.bit_generator
    try:
        text = json.dumps(_to_json(bg.state), allow_nan=False)
        twin = type(bg)()
        twin.state = _from_json(json.loads(text))
        ok = json.dumps(_to_json(twin.state)) == text
    except Exception as exc:      # noqa: BLE001 -- any failure means: cannot store
        ok, why = False, f"{type(exc).__name__}: {exc}"
    else:
        why = "its state does not survive a round trip"
    if not ok:
        raise ValueError(f"The rng of {where} ({type(bg).__name__}) cannot be stored in a "
                         f"checkpoint ({why}); use np.random.default_rng(seed) or one of "
                         f"numpy's bit generators (PCG64, PCG64DXSM, MT19937, Philox, "
                         f"SFC64).")


# ---------------------------------------------------------------------- write / read
def write_checkpoint(path, trainer, net, hist, gen, dual_arrays, state, data):
    from . import io
    rule = trainer._rule()
    arrays = dict(dual_arrays or {})
    arrays["rule_t"] = state["t"]
    for key in STATE_KEYS:
        for l, a in enumerate(state[key]):
            if a is not None:
                arrays[f"rule_{key}_{l}"] = a
    info = {"settings": settings(trainer, rule), "history": hist.to_dict(),
            "n_samples": data["n_samples"], "data": data,
            "rng": _to_json(gen.bit_generator.state) if gen is not None else None}
    io.save_model(net, path, metadata={"checkpoint": info}, arrays=arrays)


def read_checkpoint(path, trainer, net, rule, data):
    """Read and verify a checkpoint against this run (network, trainer settings, data);
    return what the session resumes from. Changes nothing: the caller loads
    ``params`` (weights then biases) into the network when training starts."""
    from . import io
    cnet, meta, arrays = io.read_model_file(path)
    info = meta.get("checkpoint") if isinstance(meta, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("history"), dict):
        raise ValueError(f"{path} is a model file, not a training checkpoint.")
    if cnet.sizes != net.sizes or cnet.dtype != net.dtype or \
            cnet.activation != net.activation or cnet.leak != net.leak:
        raise ValueError(
            f"The checkpoint {path} holds a network {cnet.sizes} "
            f"({np.dtype(cnet.dtype).name}, {cnet.activation}, leak {cnet.leak}); the "
            f"network to resume is {net.sizes} ({np.dtype(net.dtype).name}, "
            f"{net.activation}, leak {net.leak}).")
    mine = settings(trainer, rule)
    theirs = dict(_OLD_DEFAULTS, **info.get("settings", {}))
    theirs.setdefault("backend", mine["backend"])
    diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if diff:
        pretty = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"The checkpoint {path} was written with other trainer "
                         f"settings ({pretty}); resume with the same settings.")
    _check_data(path, info, data)
    try:
        hist = History.from_dict(info["history"])
        n = len(hist.loss)
    except (TypeError, ValueError):
        hist, n = None, 0
    if hist is None or n < 1 or len(hist.seconds) != n or hist.epochs != n - 1 or \
            len(hist.val_loss) not in (0, n) or len(hist.val_accuracy) != len(hist.val_loss):
        raise ValueError(f"The checkpoint {path} holds an unreadable or inconsistent "
                         f"history.")
    L = net.n_layers
    shapes = [w.shape for w in cnet._weights]
    t = np.asarray(arrays.get("rule_t", np.zeros(L, dtype=np.int64)), dtype=np.int64)
    state = {"t": np.ascontiguousarray(t).copy()}
    if state["t"].shape != (L,):
        raise ValueError(f"The checkpoint {path} has {state['t'].shape} step counts for "
                         f"{L} layers.")
    for key, k in zip(STATE_KEYS, (1, 2, 1, 2)):
        state[key] = []
        for l in range(L):
            shape = shapes[l] if key.endswith("W") else (shapes[l][0],)
            if rule.n_state >= k:
                a = arrays.get(f"rule_{key}_{l}")
                if a is None or a.shape != shape:
                    raise ValueError(f"The checkpoint {path} lacks the update rule's state "
                                     f"{key}[{l}] of shape {shape}.")
                state[key].append(np.array(a, dtype=net.dtype, order="C"))
            else:
                state[key].append(None)
    dual = {k: arrays[k] for k in DUAL_KEYS if k in arrays}
    rng = info.get("rng")
    return {"history": hist, "rng": None if rng is None else _from_json(rng),
            "arrays": dual, "state": state,
            "params": [np.array(a) for a in list(cnet._weights) + list(cnet._biases)]}


def _check_data(path, info, data):
    n = info.get("n_samples")
    if n != data["n_samples"]:
        raise ValueError(f"The checkpoint {path} was written for {n} samples; X has "
                         f"{data['n_samples']}.")
    theirs = info.get("data")
    if theirs is None:        # written before fingerprints were stored: size only
        return
    if theirs.get("X") != data["X"] or theirs.get("y") != data["y"]:
        which = " and ".join(k for k in ("X", "y") if theirs.get(k) != data[k])
        raise ValueError(f"The checkpoint {path} was written for other training data "
                         f"({which} differ, same size); resume with the data it was "
                         f"trained on.")
    if (theirs.get("val") is None) != (data["val"] is None):
        had = "with" if theirs.get("val") is not None else "without"
        raise ValueError(f"The checkpoint {path} was written {had} validation_data; "
                         f"resume {had} it (the history's val_loss must cover every "
                         f"epoch).")
    if theirs.get("val") is not None and list(theirs["val"]) != data["val"]:
        raise ValueError(f"The checkpoint {path} was written with other validation_data; "
                         f"resume with the same.")


def check_resumable(path, resumed, trainer, plan, gen, monitor):
    """What can only be checked once the plan is known."""
    hist = resumed["history"]
    if plan.first_layer != hist.first_layer:
        raise ValueError(f"The checkpoint {path} was trained with first_layer="
                         f"{hist.first_layer!r}, which cannot run here ({plan.first_layer!r}"
                         f" would); resume where it can.")
    if (plan.fused_block or plan.row_threads) and plan.threads != hist.threads:
        raise ValueError(f"The checkpoint {path} was trained with {hist.threads} threads "
                         f"and this run would use {plan.threads}; its sums depend on the "
                         f"thread count: pass threads={hist.threads} to the trainer.")
    if trainer.first_layer not in ("auto", hist.first_layer):
        raise ValueError(f"The checkpoint {path} was trained with first_layer="
                         f"{hist.first_layer!r}; the trainer asks for "
                         f"{trainer.first_layer!r}. Use 'auto' or {hist.first_layer!r}.")
    state = resumed["rng"]
    if gen is not None and state is not None:
        kind = type(gen.bit_generator).__name__
        if not isinstance(state, dict) or state.get("bit_generator") != kind:
            theirs = state.get("bit_generator") if isinstance(state, dict) else state
            raise ValueError(f"The checkpoint {path} shuffles with a {theirs} generator; "
                             f"the trainer's rng gives {kind}. Pass an rng of the same "
                             f"kind (its state is restored from the checkpoint).")
        try:
            type(gen.bit_generator)().state = state
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"The checkpoint {path} holds a shuffling state that cannot "
                             f"be restored ({exc}).") from None
    if gen is not None and state is None:
        raise ValueError(f"The checkpoint {path} holds no shuffling state for this "
                         f"mini-batch run.")
    if monitor == "val_loss" and not hist.val_loss:
        raise ValueError(f"monitor='val_loss' needs the checkpoint {path} to have been "
                         f"written with validation_data.")
