"""``poswise train``: train one network with one schedule and update rule, and save it.

Every output (the model, its history, the checkpoint) is checked before the data are
loaded; a ``--resume`` of a run that already finished says so instead of training;
Ctrl-C and SIGTERM stop at the last completed epoch and the network, its history and its
checkpoint are saved (exit 130 / 143).
"""
from pathlib import Path

import numpy as np

from ..registry import dataset_label, json_clean, make_trainer, run_label
from ._common import (EXIT_DATA, EXIT_USAGE, Fail, check_data_args, check_loss,
                      check_output_file, dataset_key, debug, dtype_of, eprint, load_data,
                      out, progress_mode, resolve, rule_overrides, write_json)
from .parser import PRESETS

__all__ = ["cmd_train"]


def _with_suffix(save, suffix):
    stem = save.name[:-len(save.suffix)] if save.suffix else save.name
    return save.with_name(stem + suffix)


def _finished(path, max_epochs, target):
    """Why the run of checkpoint ``path`` has nothing left to do, or None."""
    from .. import io as pio
    try:
        _, meta, _ = pio.read_model_file(path)
    except (OSError, ValueError) as exc:
        raise Fail(f"--resume: {exc}", EXIT_DATA) from None
    info = meta.get("checkpoint") if isinstance(meta, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("history"), dict):
        raise Fail(f"--resume: {path} is a model file, not a training checkpoint.",
                   EXIT_DATA)
    h = info["history"]
    epochs, losses = h.get("epochs") or 0, h.get("loss") or []
    if epochs >= max_epochs:
        return (f"the run in {path} already ran {epochs} epochs and --max-epochs is "
                f"{max_epochs} (it counts the epochs before the checkpoint too); give a "
                f"larger --max-epochs to continue it.")
    last = losses[-1] if losses else None
    if (h.get("stopped_reason") == "target_reached" and target is not None
            and last is not None and last < target):
        return (f"the run in {path} already reached the target loss {target:g} (epoch "
                f"{h.get('epochs_to_target')}, loss {last:.4g}); give a lower "
                f"--target-loss (or 'none') to continue it.")
    return None


def cmd_train(args, command, signals):
    from .. import io as pio
    from ..experiments.settings import CompareError, resolve_rules
    from ..losses import LOSSES
    from ..network import MLP

    check_data_args(args)
    if len(args.lr or [0]) != 1:
        raise Fail("--lr takes one learning rate for 'train' (use 'compare' for a sweep).",
                   EXIT_USAGE)
    if len(args.update) != 1:
        raise Fail("--update takes one rule for 'train' (use 'compare' to compare rules).",
                   EXIT_USAGE)
    try:
        (update, rule), = resolve_rules(args.update, rule_overrides(args))
    except CompareError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    st = resolve(args, PRESETS.get(dataset_key(args), PRESETS["file"]))

    # Outputs first: a run must not end by finding it cannot be saved.
    save = check_output_file(args.save, "--save")
    hist_path = _with_suffix(save, ".history.json")
    ckpt = None
    if args.checkpoint_every is not None or args.checkpoint is not None:
        ckpt = Path(args.checkpoint) if args.checkpoint else _with_suffix(save, ".ckpt.npz")
        for other, what in ((save, "--save"), (hist_path, "the history file")):
            if ckpt.resolve() == other.resolve():
                raise Fail(f"--checkpoint {str(ckpt)!r} is the same file as {what}; give "
                           f"another path.", EXIT_USAGE)
        check_output_file(ckpt, "--checkpoint")
    if args.resume is not None:
        if not Path(args.resume).is_file():
            raise Fail(f"--resume: no checkpoint file {args.resume!r}.", EXIT_DATA)
        done = _finished(args.resume, st["max_epochs"], st["target_loss"])
        if done:
            out(f"Nothing to do, the run is finished: {done}")
            return 0

    comm = None
    if args.mpi:
        from ..distributed import world
        comm = world()
    ds = load_data(args)
    check_loss(st, ds, args)
    loss, lr = st["loss"], st["lr"][0]
    sizes = (ds.n_features, *st["hidden"], 1 if loss == "bce" else ds.n_classes)
    try:
        net = MLP(sizes, activation=args.activation, init=args.init, dtype=dtype_of(args),
                  rng=args.seed, output=LOSSES[loss].output)
        trainer = make_trainer(args.optimizer, lr, update=rule, loss=loss,
                               batch_size=args.batch_size, threads=args.threads,
                               rng=args.seed, first_layer=args.first_layer)
    except ValueError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None
    kwargs = {}
    if ckpt is not None:
        kwargs.update(checkpoint=str(ckpt), checkpoint_every=args.checkpoint_every)
    if args.resume is not None:
        kwargs["resume"] = args.resume

    from ..progress import Progress
    name = run_label(args.optimizer, update, show_rule=update != "sgd")
    mode = progress_mode(args)
    bar = Progress(st["max_epochs"], label=name, target=st["target_loss"],
                   mode=mode if mode else "off")
    announced = []

    def watch(epoch, history):
        # The trainer calls this first just before its first epoch, inside its Ctrl-C
        # handler: from here on an interrupt is caught and the network kept.
        if not announced:
            announced.append(epoch)
            start = f"from epoch {epoch}, " if epoch else ""
            target = (f", target {st['target_loss']:g}" if st["target_loss"] is not None
                      else "")
            eprint(f"Training {name} (lr {lr:g}, {loss}) on {dataset_label(ds.name)}: "
                   f"network "
                   f"{'-'.join(map(str, sizes))}, {ds.n_train} samples, {start}up to "
                   f"{st['max_epochs']} epochs{target}. Ctrl-C stops and saves.",
                   quiet=args.quiet)
        return False

    X, y = ds.X_train, ds.y_train
    val = (ds.X_test, ds.y_test) if ds.n_test else None
    if comm is not None:                # this rank's rows (validation rows too)
        from ..distributed import rows_for_rank
        r = rows_for_rank(X.shape[0], comm.Get_rank(), comm.Get_size())
        X, y = X[r], y[r]
        if val is not None and val[0].shape[0] >= comm.Get_size():
            rv = rows_for_rank(val[0].shape[0], comm.Get_rank(), comm.Get_size())
            val = (val[0][rv], val[1][rv])
        else:
            val = None
        kwargs.update(comm=comm, reduction=args.reduction)
        if comm.Get_rank() != 0:        # one rank reports and writes
            args.quiet = True
            bar.close()
            bar = None
    try:
        hist = trainer.fit(net, X, y, epochs=st["max_epochs"],
                           target_loss=st["target_loss"], validation_data=val,
                           callbacks=[watch], progress=bar if bar is not None else False,
                           **kwargs)
    except KeyboardInterrupt:
        eprint("Interrupted before the first epoch: nothing was saved.")
        return signals.interrupted_code()
    except (ValueError, OSError, FloatingPointError) as exc:
        if debug():
            raise
        code = EXIT_DATA if isinstance(exc, (OSError, pio.ModelFileError)) else EXIT_USAGE
        if args.resume is not None and code == EXIT_USAGE:
            code = EXIT_DATA    # a checkpoint that does not fit these settings or data
        raise Fail(str(exc), code) from None
    finally:
        if bar is not None:
            bar.close()
    if comm is not None and comm.Get_rank() != 0:
        return 0                        # rank 0 writes the model and the history

    with signals.deferred():
        train_acc = float(np.mean(net.predict(ds.X_train) == ds.y_train))
        settings = {"command": command, "dataset": ds.name, "optimizer": args.optimizer,
                    "update": update, "update_params": rule.hyper(), "loss": loss,
                    "lr": lr, "hidden": list(st["hidden"]), "sizes": list(sizes),
                    "target_loss": st["target_loss"], "max_epochs": st["max_epochs"],
                    "seed": args.seed, "dtype": args.dtype, "init": args.init,
                    "activation": args.activation, "batch_size": args.batch_size,
                    "threads": args.threads, "first_layer": hist.first_layer,
                    "resumed_from": args.resume}
        final = {"epochs": hist.epochs, "stopped_reason": hist.stopped_reason,
                 "final_loss": hist.loss[-1],
                 "final_val_loss": hist.val_loss[-1] if hist.val_loss else None,
                 "final_val_accuracy": hist.val_accuracy[-1] if hist.val_accuracy else None,
                 "final_train_accuracy": train_acc}
        record = {**hist.to_dict(), "seconds_to_target": hist.seconds_to_target,
                  "final_train_accuracy": train_acc, "settings": settings,
                  "model_file": save.name}
        try:
            pio.save_model(net, save, metadata=json_clean(
                {"training": {**settings, **final}, "history_file": hist_path.name}))
            write_json(hist_path, record)
        except (OSError, ValueError) as exc:
            raise Fail(f"cannot write {str(save)!r}: {exc}", EXIT_DATA) from None

    what = {"target_reached": f"reached the target at epoch {hist.epochs_to_target}",
            "max_epochs": f"ran its {hist.epochs} epochs",
            "interrupted": f"was interrupted after epoch {hist.epochs}",
            "diverged": f"diverged after epoch {hist.epochs} (the network is the last "
                        f"finite one; try a smaller --lr)",
            "callback": f"stopped after epoch {hist.epochs}"}.get(
        hist.stopped_reason, hist.stopped_reason)
    vl = f"{hist.val_loss[-1]:.4g}" if hist.val_loss else "-"
    va = f"{hist.val_accuracy[-1]:.3f}" if hist.val_accuracy else "-"
    out(f"{name} {what} in {hist.seconds[-1]:.3g} s: training loss {hist.loss[-1]:.4g}, "
        f"accuracy {train_acc:.3f}; validation loss {vl}, accuracy {va}.")
    out(f"Wrote {save} and {hist_path}"
        f"{' (checkpoint ' + str(ckpt) + ')' if ckpt is not None else ''}.")
    if hist.stopped_reason == "interrupted" or signals.pending:
        sig = "SIGTERM" if signals.terminated else "Ctrl-C"
        eprint(f"Interrupted ({sig}): saved the network at its last completed epoch.")
        return signals.interrupted_code()
    return 0
