"""``poswise compare`` (and the engine of ``poswise reproduce``).

Order of work: check every output (the folder, results.json, table.txt, the figures)
before training; train (Ctrl-C or SIGTERM stops after the runs finished so far); write
the files with both signals held back; only then print the table, so that a reader that
goes away early (``poswise compare | head``) costs nothing written.
"""
import time
from pathlib import Path

from ._common import (DEFAULT_OUT, EXIT_DATA, EXIT_USAGE, Fail, check_data_args,
                      check_loss, check_output_dir, dataset_key, dtype_of, eprint, load_data, out,
                      progress_mode, resolve, rule_overrides, write_json, write_text)
from ..experiments.running import DEFAULT_PATIENCE, DEFAULT_STALL
from ..registry import dataset_label
from .parser import PRESETS

__all__ = ["cmd_compare", "run_compare"]


def _lr_tag(lr):
    return f"{lr:g}".replace(".", "p").replace("-", "m")


def _figure_plan(s, formats):
    """[(file name, plot function name, kwargs)] of the figures of an experiment with
    settings ``s`` (its ``lr`` list and ``paper_loss_thresholds``)."""
    base = [("comparison", "plot_comparison", {})]
    if len(s["lr"]) > 1:
        base.append(("lr_sweep", "plot_lr_sweep", {}))
        if s.get("target_loss") is not None:
            base.append(("reach", "plot_reach", {}))
        base += [(f"comparison_lr{_lr_tag(lr)}", "plot_comparison", {"lr": lr})
                 for lr in s["lr"]]
    if s.get("paper_loss_thresholds") is not None:
        base.append(("comparison_paper_loss", "plot_comparison", {"key": "paper_loss"}))
    return [(f"{name}.{fmt}", func, kw) for name, func, kw in base for fmt in formats]


def _write_figures(results, folder, formats):
    """Write the figures of ``results`` into ``folder``; return their paths."""
    # plots builds bare Figures (no pyplot), so no backend needs to be chosen here.
    from .. import plots
    runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"
            and r.get("role") != "select"]
    written = []
    if not runs:
        return written
    for name, func, kw in _figure_plan(results["settings"], formats):
        if "lr" in kw and not any(r["lr"] == kw["lr"] for r in runs):
            continue
        try:
            fig = getattr(plots, func)(results, **kw)
        except ValueError as exc:      # e.g. an interrupted sweep with nothing to draw
            eprint(f"warning: {name} not written: {exc}")
            continue
        plots.save_figure(fig, folder / name)
        written.append(folder / name)
    return written


def run_compare(args, key, preset, command, signals):
    """Run an experiment from parsed arguments; return the exit code."""
    from ..experiments import CompareError, compare, format_table
    from ..experiments.summary import for_json
    st = resolve(args, preset)
    folder = Path(args.out or DEFAULT_OUT)
    names = ["results.json", "table.txt"] + [n for n, _, _ in _figure_plan(st, args.format)]
    check_output_dir(folder, names)
    ds = load_data(args)
    check_loss(st, ds, args)
    quiet = args.quiet
    if getattr(args, "mpi", False):     # --mpi: the runs spread over the ranks, rank 0 writes
        from functools import partial
        from ..distributed import world
        from ..experiments.spread import compare_spread
        runner = partial(compare_spread, world())
        quiet = quiet or runner.args[0].Get_rank() != 0
    else:
        runner = compare
    n_seeds = st["seeds"] if isinstance(st["seeds"], int) else len(st["seeds"])
    eprint(f"Comparing {', '.join(args.optimizers)} with {', '.join(args.update)} on "
           f"{dataset_label(ds.name)} ({ds.n_train} train / {ds.n_test} validation "
           f"samples, "
           f"{ds.n_features} features): hidden {','.join(map(str, st['hidden'])) or 'none'}"
           f", {st['loss']}, lr {','.join(f'{v:g}' for v in st['lr'])}, target "
           f"{st['target_loss'] if st['target_loss'] is not None else 'none'}, at most "
           f"{st['max_epochs']} epochs, {n_seeds} seed(s).", quiet=quiet)
    t0 = time.perf_counter()
    try:
        results = runner(
            ds, hidden=st["hidden"], loss=st["loss"], lr=st["lr"],
            target_loss=st["target_loss"], max_epochs=st["max_epochs"], seeds=st["seeds"],
            dtype=dtype_of(args), init=args.init, batch_size=args.batch_size,
            activation=args.activation, threads=args.threads,
            first_layer=args.first_layer, progress=progress_mode(args),
            thresholds=st["thresholds"], paper_loss_thresholds=st["paper_loss_thresholds"],
            optimizers=args.optimizers, update=args.update,
            update_params=rule_overrides(args),
            select_seeds=getattr(args, "select_seeds", None),
            report_lrs=getattr(args, "report_lrs", "all"),
            min_reach=getattr(args, "min_reach", None),
            patience=getattr(args, "patience", DEFAULT_PATIENCE),
            stall=getattr(args, "stall", DEFAULT_STALL),
            epoch_budgets=getattr(args, "epoch_budgets", None) or (),
            flop_budgets=getattr(args, "flop_budgets", None) or (),
            log=None if quiet else eprint)
    except CompareError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    if results is None:                 # compare --mpi: a rank other than 0
        return 0
    results["settings"].update(command=command, dataset_key=key,
                               total_wall_seconds=time.perf_counter() - t0)
    table = format_table(results)
    with signals.deferred():
        try:
            write_json(folder / "results.json", for_json(results), compact=True)
            write_text(folder / "table.txt", f"$ {command}\n\n{table}\n")
            figures = _write_figures(results, folder, args.format)
        except OSError as exc:
            raise Fail(f"cannot write into {str(folder)!r}: {exc}", EXIT_DATA) from None
    out(table)
    files = ["results.json", "table.txt", *(f.name for f in figures)]
    out(f"\nWrote to {folder.resolve()}: {', '.join(files)}.")
    if results["interrupted"] or signals.pending:
        eprint("Interrupted: the results above cover the runs finished before it.")
        return signals.interrupted_code()
    return 0


def cmd_compare(args, command, signals):
    check_data_args(args)
    key = dataset_key(args)
    return run_compare(args, key, PRESETS.get(key, PRESETS["file"]), command, signals)
