"""Collective operations poswise needs: reductions, start-up agreement, broadcasts.

Every function is collective: all ranks of ``comm`` must call it, in the same order.
Failures are collective too: an error found on one rank is raised on every rank (with
the same message), never left to deadlock the others in their next call.
"""
import numpy as np

__all__ = ["DistributedError", "REDUCTIONS", "Reduction", "mpi_constants",
           "collective_call", "any_rank", "check_agreement", "broadcast_arrays",
           "broadcast_network",
           "network_fingerprint", "trainer_fingerprint"]

#: Ways to sum a buffer over the ranks. "allreduce": the MPI library's Allreduce (fastest;
#: its summation order is the library's choice). "ordered": gather to rank 0, sum in rank
#: order, broadcast: the result depends only on the ranks' buffers (bitwise reproducible
#: across MPI libraries, algorithms and process placements).
REDUCTIONS = ("allreduce", "ordered")


class DistributedError(RuntimeError):
    """Raised on every rank when the ranks disagree or one of them failed."""


def mpi_constants(comm):
    """The module holding IN_PLACE, SUM, MAX... for ``comm``: mpi4py.MPI, or the fake
    communicator's stand-in (tests)."""
    fake = getattr(comm, "MPI", None)
    if fake is not None:
        return fake
    from mpi4py import MPI
    return MPI


class Reduction:
    """Sum a float buffer over the ranks, in place.

    Parameters
    ----------
    comm : mpi4py communicator
    method : {"allreduce", "ordered"}
        See :data:`REDUCTIONS`.

    Notes
    -----
    Both methods give every rank the same bits for a commutative sum of two ranks; with
    more ranks only "ordered" guarantees it for any MPI library. "ordered" costs about
    two latencies (gather, broadcast) instead of one.
    """

    def __init__(self, comm, method="allreduce"):
        if method not in REDUCTIONS:
            raise ValueError(f"The 'reduction' parameter must be one of {REDUCTIONS}. "
                             f"Got {method!r} instead.")
        self.comm, self.method = comm, method
        self.MPI = mpi_constants(comm)
        self._recv = {}          # (n, dtype) -> gather buffer of rank 0, allocated once

    def __call__(self, buf):
        comm, MPI = self.comm, self.MPI
        if comm.Get_size() == 1:
            return buf
        if self.method == "allreduce":
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        root = comm.Get_rank() == 0
        recv = None
        if root:
            key = (buf.size, buf.dtype.str)
            recv = self._recv.get(key)
            if recv is None:
                recv = self._recv[key] = np.empty((comm.Get_size(), buf.size), buf.dtype)
        comm.Gather(buf, recv, root=0)
        if root:
            np.copyto(buf, recv[0])
            for r in range(1, recv.shape[0]):
                buf += recv[r]
        comm.Bcast(buf, root=0)
        return buf


def collective_call(comm, fn, *args, **kwargs):
    """Run ``fn`` on every rank; if it raised on any rank, raise on all.

    An exception of the lowest failing rank is re-raised there unchanged; the other ranks
    raise a :class:`DistributedError` naming that rank and its message.
    """
    try:
        result, err = fn(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 -- shared with the other ranks, then re-raised
        result, err = None, exc
    msgs = comm.allgather(None if err is None else f"{type(err).__name__}: {err}")
    failed = [r for r, m in enumerate(msgs) if m is not None]
    if not failed:
        return result
    if err is not None and comm.Get_rank() == failed[0]:
        raise err
    raise DistributedError(f"rank {failed[0]} failed: {msgs[failed[0]]}") from err


def any_rank(comm, flag):
    """True on every rank if ``flag`` is true on any rank (e.g. a stop request)."""
    return bool(comm.allreduce(bool(flag), op=mpi_constants(comm).LOR))


def network_fingerprint(net):
    """What must agree across ranks about a network (not its weights: rank 0's win)."""
    return {"network sizes": tuple(net.sizes), "activation": net.activation,
            "leak": float(net.leak), "output head": net.output,
            "network dtype": np.dtype(net.dtype).name}


# Trainer attributes that may differ between ranks without changing the result.
_RANK_LOCAL = ("threads", "rng")


def trainer_fingerprint(trainer):
    """The trainer's class and public settings, update rule and hyper-parameters
    included, as comparable text."""
    fp = {"trainer": type(trainer).__name__}
    for key, value in sorted(vars(trainer).items()):
        if key.startswith("_") or key in _RANK_LOCAL:
            continue
        if hasattr(value, "hyper"):           # an update rule object
            value = (type(value).__name__, value.hyper())
        fp[f"trainer.{key}"] = repr(value)
    rule = getattr(trainer, "update", None)
    if isinstance(rule, str):
        from ..updates import get_update
        try:
            fp["update rule"] = repr(get_update(rule))
        except ValueError:
            pass
    return fp


def _describe(n_rows, X, net, trainer, extra):
    fp = {"n_features": int(X.shape[1]) if len(X.shape) == 2 else tuple(X.shape[1:]),
          "X dtype": np.dtype(X.dtype).name}
    fp.update(network_fingerprint(net))
    if trainer is not None:
        fp.update(trainer_fingerprint(trainer))
    if extra:
        fp.update({k: repr(v) for k, v in extra.items()})
    return fp


def check_agreement(comm, net, X, trainer=None, *, extra=None):
    """Check that every rank trains the same thing; return the global number of rows.

    Compares, across ranks: the feature count and dtype of ``X`` (this rank's rows), the
    network's shape, activation, head and dtype, the trainer's class and settings
    (learning rate, loss, update rule and its hyper-parameters...) and the entries of
    ``extra``. Every rank must own at least one row. On any difference every rank raises
    the same :class:`DistributedError`, listing what differs and on which ranks.
    """
    fp = _describe(int(X.shape[0]), X, net, trainer, extra)
    everyone = comm.allgather((int(X.shape[0]), fp))
    ref = everyone[0][1]
    problems = []
    keys = list(ref) + [k for _, f in everyone for k in f if k not in ref]
    for key in dict.fromkeys(keys):
        values = [f.get(key, "<missing>") for _, f in everyone]
        if any(v != values[0] for v in values):
            groups = {}
            for r, v in enumerate(values):
                groups.setdefault(repr(v) if not isinstance(v, str) else v, []).append(r)
            parts = "; ".join(f"ranks {rs}: {v}" for v, rs in groups.items())
            problems.append(f"  {key}: {parts}")
    empty = [r for r, (n, _) in enumerate(everyone) if n < 1]
    if empty:
        problems.append(f"  rows: ranks {empty} own no rows (every rank needs at least one)")
    if problems:
        raise DistributedError(
            "The MPI ranks do not agree on what to train (each rank must build the same "
            "network and trainer and load the same kind of data):\n" + "\n".join(problems))
    return sum(n for n, _ in everyone)


def broadcast_arrays(comm, arrays, root=0):
    """Overwrite every rank's ``arrays`` (same shapes and dtype on every rank) in place
    with those of ``root``, in one packed broadcast."""
    buf = np.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype)
    if comm.Get_rank() == root:
        np.concatenate([a.ravel() for a in arrays], out=buf)
    comm.Bcast(buf, root=root)
    pos = 0
    for a in arrays:
        a[...] = buf[pos:pos + a.size].reshape(a.shape)
        pos += a.size


def broadcast_network(comm, net, root=0):
    """Overwrite every rank's weights and biases in place with those of ``root``
    (one packed broadcast). The ranks must agree on the shapes (see
    :func:`check_agreement`)."""
    broadcast_arrays(comm, list(net.weights) + list(net.biases), root)
