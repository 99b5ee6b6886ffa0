"""Simulated MPI ranks in threads, for tests of the collective logic without mpirun.

``run_ranks(K, fn)`` calls ``fn(comm)`` on K threads, each with a :class:`FakeComm`
offering the subset of mpi4py's communicator API poswise uses, with mpi4py's
signatures. Sums are taken in rank order, so every simulated rank receives the same bits.
A failure on one rank breaks the others' pending collective (no deadlock) and is
re-raised by ``run_ranks``.
"""
import copy
import operator
import threading
from types import SimpleNamespace

import numpy as np

__all__ = ["FakeComm", "run_ranks"]

_SUM, _MAX, _MIN, _LOR = "SUM", "MAX", "MIN", "LOR"
_OPS = {_SUM: operator.add, _MAX: max, _MIN: min, _LOR: lambda a, b: a or b}
_NP_OPS = {_SUM: np.add, _MAX: np.maximum, _MIN: np.minimum}
# Stand-ins of mpi4py.MPI's constants (read by poswise.distributed.mpi_constants).
FAKE_MPI = SimpleNamespace(IN_PLACE=object(), SUM=_SUM, MAX=_MAX, MIN=_MIN, LOR=_LOR)


class _World:
    """Shared state of the simulated ranks: one slot each and a barrier that a failed
    rank breaks only for collectives it did not complete (threading.Barrier.abort would
    also break ranks still leaving a completed one)."""

    def __init__(self, size, timeout):
        self.size, self.timeout = size, timeout
        self.slots = [None] * size
        self._cond = threading.Condition()
        self._count = self._gen = 0
        self._dead = False

    def wait(self):
        with self._cond:
            if self._dead:
                raise threading.BrokenBarrierError
            gen = self._gen
            self._count += 1
            if self._count == self.size:
                self._count, self._gen = 0, gen + 1
                self._cond.notify_all()
                return
            while self._gen == gen:
                if self._dead or not self._cond.wait(self.timeout):
                    raise threading.BrokenBarrierError

    def kill(self):
        with self._cond:
            self._dead = True
            self._cond.notify_all()


class FakeComm:
    """One simulated rank of a world of threads (see :func:`run_ranks`)."""

    MPI = FAKE_MPI

    def __init__(self, world, rank):
        self._world, self.rank, self.size = world, rank, world.size
        self.calls = []          # names of the collectives called, in order (tests)

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def _exchange(self, name, value):
        """Deposit ``value``, wait for all ranks, return everyone's values."""
        self.calls.append(name)
        w = self._world
        w.slots[self.rank] = value
        w.wait()
        values = list(w.slots)
        w.wait()         # nobody overwrites a slot before all have read
        return values

    # ---------------------------------------------------------------- buffers
    def Allreduce(self, sendbuf, recvbuf, op=_SUM):
        src = recvbuf if sendbuf is FAKE_MPI.IN_PLACE else sendbuf
        values = self._exchange("Allreduce", np.array(src, copy=True))
        acc = values[0].copy()
        for v in values[1:]:
            _NP_OPS[op](acc, v, out=acc)
        np.copyto(recvbuf, acc)

    def Bcast(self, buf, root=0):
        values = self._exchange("Bcast", np.array(buf, copy=True))
        np.copyto(buf, values[root])

    def Gather(self, sendbuf, recvbuf, root=0):
        values = self._exchange("Gather", np.array(sendbuf, copy=True))
        if self.rank == root:
            for r, v in enumerate(values):
                recvbuf[r].reshape(-1)[...] = v.reshape(-1)

    def Barrier(self):
        self._exchange("Barrier", None)

    # ---------------------------------------------------------------- objects
    def allgather(self, obj):
        return [copy.deepcopy(v) for v in self._exchange("allgather", obj)]

    def gather(self, obj, root=0):
        values = self._exchange("gather", obj)
        return [copy.deepcopy(v) for v in values] if self.rank == root else None

    def bcast(self, obj, root=0):
        return copy.deepcopy(self._exchange("bcast", obj)[root])

    def allreduce(self, obj, op=_SUM):
        values = self._exchange("allreduce", obj)
        acc = values[0]
        for v in values[1:]:
            acc = _OPS[op](acc, v)
        return acc


def run_ranks(size, fn, *args, timeout=60.0, return_exceptions=False, **kwargs):
    """Run ``fn(comm, *args, **kwargs)`` on ``size`` simulated ranks; return the list of results.

    With ``return_exceptions`` each rank's exception takes its result's place.

    If any rank raises, the world's barrier is broken (the other ranks then fail with
    ``threading.BrokenBarrierError`` in their next collective) and the exception of the
    lowest failing rank that did not merely see the broken barrier is re-raised.
    """
    world = _World(size, timeout)
    results, errors = [None] * size, [None] * size

    def target(rank):
        try:
            results[rank] = fn(FakeComm(world, rank), *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller
            errors[rank] = exc
            world.kill()

    threads = [threading.Thread(target=target, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if return_exceptions:
        return [e if e is not None else r for r, e in zip(results, errors)]
    real = [e for e in errors if e is not None
            and not isinstance(e, threading.BrokenBarrierError)]
    if real or any(errors):
        raise (real or [e for e in errors if e is not None])[0]
    return results
