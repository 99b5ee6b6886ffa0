"""An experiment spread over MPI ranks: ``poswise compare --mpi``.

The runs of :func:`~poswise.experiments.compare` are independent: every (seed, lr,
schedule, update rule) trains its own copy of the seed's network. :func:`compare_spread`
deals them out over the ranks of a communicator (round robin in the single process's
order, :func:`poswise.distributed.share_of`, so long and short runs mix on every rank),
each rank trains its runs with :func:`compare` restricted to one run, and the root rank
gathers them into the results the single process would have produced: the same runs in
the same order, with the same losses, accuracies, epochs and stopping reasons, and the
same settings (plus ``mpi_ranks``). Only the clock readings differ (each run is timed on
the rank that trained it).

Each rank warms up (untimed) the first run of every arm it trains, as the single process
warms up every arm once. A failure on one rank is raised on every rank once all ranks
finished their share (no rank is left waiting in a collective); an interrupt
(Ctrl-C, SIGTERM) stops a rank's remaining runs and the results say ``interrupted``.
"""
from ..registry import DEFAULT_SCHEDULES, SCHEDULES, run_label
from .running import _run_line, compare
from .settings import CompareError, as_list, is_real, resolve_rules, seed_list_of
from .summary import summarize

__all__ = ["compare_spread", "grid_of"]


def grid_of(*, seeds=3, lr=0.01, optimizers=DEFAULT_SCHEDULES, update="sgd",
            update_params=None):
    """The runs of an experiment in :func:`compare`'s order: a list of
    ``(seed, lr, schedule, rule name, UpdateRule)``, seed-major, then lr, then rule, then
    schedule. Checks the grid's settings as :func:`compare` does (:class:`CompareError`).
    """
    lrs = [float(v) for v in as_list(lr, "lr", is_real, "a float > 0 or a list of them")]
    seed_list = seed_list_of(seeds)
    schedules = as_list(optimizers, "optimizers", lambda v: v in SCHEDULES,
                        f"a list of schedules among {', '.join(SCHEDULES)}")
    rules = resolve_rules(update, update_params)
    return [(seed, lr_, s, u, r) for seed in seed_list for lr_ in lrs
            for u, r in rules for s in schedules]


def _run_share(comm, dataset, tasks, *, warmup, progress, log, options):
    """Train this rank's share of ``tasks``; return the message sent to the root."""
    from ..distributed import share_of
    rank, n = comm.Get_rank(), len(tasks)
    several_rules = len({u for *_, u, _ in tasks}) > 1
    mine = {"rank": rank, "runs": [], "settings": None, "interrupted": False,
            "error": None}
    warmed = set()
    try:
        for i, (seed, lr_, s, u, r) in share_of(tasks, comm):
            res = compare(dataset, seeds=[seed], lr=lr_, optimizers=[s], update=[r],
                          warmup=warmup and (s, u) not in warmed, progress=progress,
                          log=None, **options)
            warmed.add((s, u))
            if mine["settings"] is None:
                mine["settings"] = dict(res["settings"], work={})
            mine["settings"]["work"].update(res["settings"].get("work", {}))
            for run in res["runs"]:
                run["label"] = run_label(s, u, show_rule=several_rules or u != "sgd")
                mine["runs"].append((i, run))
                if log is not None:
                    log(_run_line(run, i + 1, n))
            if res["interrupted"]:
                mine["interrupted"] = True
                break
    except KeyboardInterrupt:
        mine["interrupted"] = True
    except Exception as exc:  # noqa: BLE001 -- raised again on every rank after the gather
        mine["error"] = (isinstance(exc, CompareError), rank,
                         str(exc) if isinstance(exc, CompareError)
                         else f"{type(exc).__name__}: {exc}")
        mine["exception"] = exc
    return mine


def compare_spread(comm, dataset, *, seeds=3, lr=0.01, optimizers=DEFAULT_SCHEDULES,
                   update="sgd", update_params=None, warmup=True, progress=False, log=None,
                   root=0, **options):
    """:func:`~poswise.experiments.compare` with its runs spread over the ranks of ``comm``.

    Every rank must call it with the same arguments (the data included). Parameters are
    those of :func:`compare`; ``progress`` is shown by the root rank only, ``log`` is
    called on each rank for the runs it trained (numbered in the whole grid).

    Parameters
    ----------
    comm : mpi4py communicator
        The ranks sharing the work (:func:`poswise.distributed.world`).
    root : int, default 0
        The rank that receives the results.

    Returns
    -------
    dict or None
        On ``root``: the results of :func:`compare` over the whole grid (the runs in the
        single process's order, the summary recomputed, ``settings["mpi_ranks"]``); None
        on the other ranks.

    Raises
    ------
    CompareError
        For an invalid setting, on every rank, before any training.
    poswise.distributed.DistributedError
        On every other rank when one rank failed (that rank raises its own exception).
    """
    from ..distributed import DistributedError
    tasks = grid_of(seeds=seeds, lr=lr, optimizers=optimizers, update=update,
                    update_params=update_params)
    if isinstance(dataset, str):       # load a named dataset once, not once per run
        from ..datasets import DATASETS, load
        if dataset in DATASETS:
            dataset = load(dataset)
    rank = comm.Get_rank()
    mine = _run_share(comm, dataset, tasks, warmup=warmup,
                      progress=progress if rank == root else False, log=log,
                      options=options)
    exc = mine.pop("exception", None)
    parts = comm.gather(mine, root=root)
    error = None
    if rank == root:              # the first failure in rank order, told to every rank
        error = next((p["error"] for p in parts if p["error"] is not None), None)
    error = comm.bcast(error, root=root)
    if error is not None:
        if exc is not None:
            raise exc
        usage, who, message = error
        if usage:                 # the same invalid setting on every rank
            raise CompareError(message)
        raise DistributedError(f"compare over {comm.Get_size()} MPI ranks failed on rank "
                               f"{who}: {message}")
    if rank != root:
        return None
    return _merge(parts, tasks, comm.Get_size(), warmup)


def _merge(parts, tasks, n_ranks, warmup):
    """The results of the whole grid from the ranks' messages."""
    runs = sorted((pair for p in parts for pair in p["runs"]), key=lambda pair: pair[0])
    first = min((p for p in parts if p["settings"] is not None),
                key=lambda p: p["runs"][0][0] if p["runs"] else len(tasks), default=None)
    settings = dict(first["settings"]) if first is not None else {}
    work = {}                       # each rank counts the work of the schedules it ran
    for p in parts:
        work.update((p["settings"] or {}).get("work", {}))
    if work:
        schedules = list(dict.fromkeys(t[2] for t in tasks))
        settings["work"] = {o: work[o] for o in schedules if o in work}
    rules = {u: r for *_, u, r in tasks}           # in order of first appearance
    settings.update(
        seeds=list(dict.fromkeys(t[0] for t in tasks)),
        lr=list(dict.fromkeys(t[1] for t in tasks)),
        optimizers=list(dict.fromkeys(t[2] for t in tasks)),
        updates=list(rules), update_params={u: r.hyper() for u, r in rules.items()},
        warmup=bool(warmup), mpi_ranks=int(n_ranks))
    results = {"settings": settings, "runs": [run for _, run in runs], "summary": {},
               "interrupted": any(p["interrupted"] for p in parts)}
    if settings:
        results["summary"] = summarize(results)
    return results
