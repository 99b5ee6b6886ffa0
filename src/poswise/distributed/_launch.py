"""How this process was started: MPI launchers' environment, the world, thread defaults.

Nothing here imports mpi4py until :func:`world` is called, so ``poswise`` without the
``mpi`` extra never touches MPI.
"""
import os
from dataclasses import dataclass

__all__ = ["LaunchInfo", "MPILaunchError", "launch_info", "launched_under_mpi",
           "check_launch", "world", "default_threads"]

# (launcher, rank variable, size variable), checked in this order. Open MPI's mpirun /
# prterun; MPICH's Hydra and Intel MPI (PMI); MVAPICH2; Slurm's srun (SLURM_STEP_NUM_TASKS
# is set for job steps only, not in the batch script itself, where one copy runs).
LAUNCHER_VARS = (
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("MPICH/Hydra (PMI)", "PMI_RANK", "PMI_SIZE"),
    ("MVAPICH2", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ("Slurm srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
    ("PMIx", "PMIX_RANK", None),
)

# Processes of this job on this node, by launcher.
LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE",
                   "SLURM_STEP_TASKS_PER_NODE")


class MPILaunchError(RuntimeError):
    """The command line was started by an MPI launcher without ``--mpi`` (or the reverse
    cannot work)."""


@dataclass(frozen=True)
class LaunchInfo:
    """What a launcher's environment says about this process.

    ``size`` is None when the launcher does not export it (bare PMIx).
    """
    launcher: str
    rank: int
    size: object


def _int(value):
    try:
        return int(str(value).split("(")[0].split(",")[0])
    except (TypeError, ValueError):
        return None


def launch_info(environ=None):
    """The :class:`LaunchInfo` of the first launcher whose variables are set, or None."""
    env = os.environ if environ is None else environ
    for launcher, rank_var, size_var in LAUNCHER_VARS:
        if rank_var in env and (size_var is None or size_var in env):
            rank = _int(env[rank_var])
            size = _int(env[size_var]) if size_var else None
            if rank is not None:
                return LaunchInfo(launcher, rank, size)
    return None


def launched_under_mpi(environ=None):
    """Whether this process is one of several started by mpirun / mpiexec / srun.

    A launcher that starts a single process (``mpirun -n 1``) does not count: one copy
    cannot overwrite another's files.
    """
    info = launch_info(environ)
    if info is None:
        return False
    return info.size is None and info.rank > 0 or (info.size or 0) > 1


def check_launch(mpi_flag, environ=None, command="poswise"):
    """Refuse to run K uncoordinated copies: raise :class:`MPILaunchError` when started by
    an MPI launcher with several processes and ``mpi_flag`` is false."""
    if mpi_flag or not launched_under_mpi(environ):
        return
    info = launch_info(environ)
    n = f"{info.size} processes" if info.size else "several processes"
    raise MPILaunchError(
        f"{command} was started by {info.launcher} as {n} (this is rank {info.rank}) but "
        f"without --mpi: every process would train the whole data set alone and write the "
        f"same output files. Add --mpi to train one model on the processes' rows together, "
        f"or run {command} without the launcher.")


def world():
    """``mpi4py.MPI.COMM_WORLD``, or an ImportError telling how to install MPI support."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"MPI support needs mpi4py and an MPI library: pip install \"poswise[mpi]\" "
            f"(on a cluster, build mpi4py against the site's MPI). ({exc})") from None
    return MPI.COMM_WORLD


def _local_size(comm, environ):
    for var in LOCAL_SIZE_VARS:
        n = _int(environ.get(var))
        if n:
            return n
    if comm is not None:
        try:
            from mpi4py import MPI
            shared = comm.Split_type(MPI.COMM_TYPE_SHARED)
            try:
                return shared.Get_size()
            finally:
                shared.Free()
        except Exception:   # a fake or foreign communicator: no node information
            pass
    return 1


def default_threads(comm=None, environ=None):
    """Compute threads for one rank: the cores this process may use, shared evenly by
    the job's ranks on this node.

    One rank per core gives 1; one rank per node gives all the node's cores. A launcher
    that binds each rank to its cores (``mpirun --bind-to core``, ``srun --cpu-bind``)
    already restricts the affinity mask, which is then the limit.
    """
    env = os.environ if environ is None else environ
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    total = os.cpu_count() or allowed
    per_rank = max(1, total // max(1, _local_size(comm, env)))
    return max(1, min(allowed, per_rank))
