"""Training checkpoints: a model file (``poswise.io``) plus what resuming needs.

A checkpoint stores the network, the trainer's settings (schedule, learning rate, loss,
batch size, update rule and its hyper-parameters), the History, the shuffling state, the
dual first layer's arrays (``W0_init``, ``C``) and the update rule's state (step counts
and state arrays), so that a resumed run continues bit for bit as an uninterrupted one.
"""
import numpy as np

from .history import History

STATE_KEYS = ("s1W", "s2W", "s1b", "s2b")


def settings(trainer, rule):
    """The settings a resume must match."""
    return {"optimizer": trainer.schedule, "lr": float(trainer.lr), "loss": trainer.loss,
            "batch_size": trainer.batch_size, "shuffle": bool(trainer.shuffle), "s": float(trainer.s), "m": float(trainer.m),
            "update": rule.family, "update_params": rule.hyper(),
            "layer_scales": getattr(trainer, "layer_scales", None)}


# what a checkpoint written before update rules existed meant
_OLD_DEFAULTS = {"update": "sgd",
                 "update_params": {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
                                   "decay_biases": True},
                 "layer_scales": None, "shuffle": True}


def write_checkpoint(path, trainer, net, hist, gen, dual_arrays, n_samples, state):
    from . import io
    rule = trainer._rule()
    arrays = dict(dual_arrays or {})
    arrays["rule_t"] = state["t"]
    for key in STATE_KEYS:
        for l, a in enumerate(state[key]):
            if a is not None:
                arrays[f"rule_{key}_{l}"] = a
    info = {"settings": settings(trainer, rule), "history": hist.to_dict(),
            "n_samples": n_samples,
            "rng": gen.bit_generator.state if gen is not None else None}
    io.save_model(net, path, metadata={"checkpoint": info}, arrays=arrays)


def read_checkpoint(path, trainer, net, X, rule):
    """Load a checkpoint into ``net``; return what the session resumes from."""
    from . import io
    cnet, meta, arrays = io.read_model_file(path)
    info = meta.get("checkpoint") if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        raise ValueError(f"{path} is a model file, not a training checkpoint.")
    if cnet.sizes != net.sizes or cnet.dtype != net.dtype or \
            cnet.activation != net.activation:
        raise ValueError(
            f"The checkpoint {path} holds a network {cnet.sizes} "
            f"({np.dtype(cnet.dtype).name}, {cnet.activation}); the network to resume "
            f"is {net.sizes} ({np.dtype(net.dtype).name}, {net.activation}).")
    mine = settings(trainer, rule)
    theirs = dict(_OLD_DEFAULTS, **info.get("settings", {}))
    diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if diff:
        pretty = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"The checkpoint {path} was written with other trainer "
                         f"settings ({pretty}); resume with the same settings.")
    if info.get("n_samples") != X.shape[0]:
        raise ValueError(f"The checkpoint {path} was written for {info.get('n_samples')} "
                         f"samples; X has {X.shape[0]}.")
    hist = History.from_dict(info["history"])
    L = net.n_layers
    ws = net._weights
    t = np.asarray(arrays.get("rule_t", np.zeros(L, dtype=np.int64)), dtype=np.int64)
    state = {"t": np.ascontiguousarray(t).copy()}
    for key, k in zip(STATE_KEYS, (1, 2, 1, 2)):
        state[key] = []
        for l in range(L):
            shape = ws[l].shape if key.endswith("W") else (ws[l].shape[0],)
            if rule.n_state >= k:
                a = arrays.get(f"rule_{key}_{l}")
                if a is None or a.shape != shape:
                    raise ValueError(f"The checkpoint {path} lacks the update rule's state "
                                     f"{key}[{l}] of shape {shape}.")
                state[key].append(np.array(a, dtype=net.dtype, order="C"))
            else:
                state[key].append(None)
    if state["t"].shape != (L,):
        raise ValueError(f"The checkpoint {path} has {state['t'].shape} step counts for "
                         f"{L} layers.")
    for dst, src in zip(net._weights + net._biases, cnet._weights + cnet._biases):
        np.copyto(dst, src)
    dual = {k: arrays[k] for k in ("W0_init", "C", "a", "V", "va") if k in arrays}
    return {"history": hist, "rng": info.get("rng"), "arrays": dual, "state": state}
