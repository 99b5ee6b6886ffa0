"""Run under mpirun by tests/test_distributed.py: data-parallel training on real MPI ranks.

    mpirun -n K python tests/mpi_train.py OUT_DIR MODE

MODE "train": every schedule x update rule (x reduction, see REDUCTIONS_OF), 20 epochs, rows split over the
ranks; each rank writes its weights to OUT_DIR/rank<r>.npz. MODE "agree": rank 1 builds a
trainer with another learning rate; every rank writes the error it raised to
OUT_DIR/rank<r>.txt.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dist_cases import RULES, make_case, train_rank  # noqa: E402
from poswise import MLP  # noqa: E402
from poswise.distributed import (DistributedError, broadcast_network,  # noqa: E402
                                 check_agreement, check_launch, world)


# Every rule with the library's Allreduce, two of them with the ordered reduction too.
REDUCTIONS_OF = {rule: ("allreduce", "ordered") if rule in ("sgd", "adam") else ("allreduce",)
                 for rule in RULES}


# poswise's compiled engine (the test engine and the numpy twin are covered on simulated
# ranks).
ENGINE = "cython"


class Trainer:                     # stands for a trainer's public settings
    def __init__(self, lr, update):
        self.lr, self.update, self.loss = lr, update, "bce"


def main():
    out, mode = Path(sys.argv[1]), sys.argv[2]
    check_launch(True)             # --mpi given: never refuses
    comm = world()
    rank = comm.Get_rank()
    if mode == "train":
        X, y, W, b = make_case()
        res = {}
        for schedule in ("gd", "pwo"):
            for rule in RULES:
                for red in REDUCTIONS_OF[rule]:
                    Wk, bk, losses = train_rank(comm, X, y, W, b, schedule=schedule,
                                                update=rule, epochs=20, reduction=red,
                                                engine=ENGINE)
                    key = f"{schedule}_{rule}_{red}"
                    for l, (w, v) in enumerate(zip(Wk, bk)):
                        res[f"{key}_W{l}"], res[f"{key}_b{l}"] = w, v
                    res[f"{key}_loss"] = np.array(losses)
        np.savez(out / f"rank{rank}.npz", **res)
    elif mode == "agree":
        net = MLP((4, 3, 1), rng=rank)                # different weights per rank
        X = np.zeros((2 + rank, 4))
        try:
            check_agreement(comm, net, X, Trainer(0.1 if rank != 1 else 0.2, "adam"))
            msg = "no error"
        except DistributedError as exc:
            msg = str(exc)
        (out / f"rank{rank}.txt").write_text(msg)
        same = MLP((4, 3, 1), rng=rank)
        n = check_agreement(comm, same, X, Trainer(0.1, "adam"))
        broadcast_network(comm, same)
        np.savez(out / f"net{rank}.npz", *same.weights, *same.biases, n=n)


if __name__ == "__main__":
    main()
