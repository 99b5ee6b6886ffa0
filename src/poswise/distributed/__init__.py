"""Data-parallel training over MPI: which rows a rank owns, start-up agreement, reductions
and the epoch runner.

Every rank holds the same network and a contiguous block of the rows
(:func:`rows_for_rank`); each span step's gradient sums are added over the ranks in one
reduction and every rank applies the same update, so all ranks keep identical weights. See
docs/scaling.md for launching (``mpirun``, ``srun``), thread settings and data on disk.

Nothing here imports mpi4py until a communicator is asked for (:func:`world`); install MPI
support with ``pip install "poswise[mpi]"``.
"""
from ._collective import (REDUCTIONS, DistributedError, Reduction, any_rank,
                          broadcast_arrays, broadcast_network, check_agreement,
                          collective_call,
                          network_fingerprint, trainer_fingerprint)
from ._fake import FakeComm, run_ranks
from ._launch import (LaunchInfo, MPILaunchError, check_launch, default_threads,
                      launch_info, launched_under_mpi, world)
from ._rows import (gather_shares, load_dataset_rows, load_h5_rows, load_npy_rows,
                    load_rows, rank_and_size, rows_for_rank, share_of)
from ._runner import EpochRunner, gd_spans, pwo_spans

__all__ = [
    "rows_for_rank", "rank_and_size", "load_npy_rows", "load_h5_rows", "load_rows",
    "load_dataset_rows", "share_of", "gather_shares",
    "LaunchInfo", "MPILaunchError", "launch_info", "launched_under_mpi", "check_launch",
    "world", "default_threads",
    "REDUCTIONS", "DistributedError", "Reduction", "collective_call", "any_rank",
    "check_agreement", "broadcast_arrays", "broadcast_network", "network_fingerprint",
    "trainer_fingerprint",
    "EpochRunner", "gd_spans", "pwo_spans",
    "FakeComm", "run_ranks",
]
