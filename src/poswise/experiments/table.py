"""An experiment's results as text: the table of medians, the best lrs and the ratios."""
from ..registry import rule_label, schedule_label
from .summary import summarize

__all__ = ["format_table"]


def _fmt(v, spec=".4g", none="-"):
    return none if v is None else format(v, spec)


def _table(header, rows, align):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if a == ">" else str(c).ljust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _entry_row(e, target):
    reached = f"{e['n_reached']}/{e['n_runs']}" if target is not None else "-"
    if e["n_diverged"]:
        reached += f" ({e['n_diverged']} div.)"
    if e.get("n_stalled"):
        reached += f" ({e['n_stalled']} stalled)"
    return [f"{e['lr']:g}", schedule_label(e["optimizer"]), rule_label(e["update"]),
            reached, _fmt(e["epochs_to_target"], ".0f", "not reached" if target else "-"),
            _fmt(e["seconds_to_target"], ".3g"), _fmt(e["final_loss"]),
            _fmt(e["final_val_loss"]), _fmt(e["final_train_accuracy"], ".3f"),
            _fmt(e["final_val_accuracy"], ".3f"), _fmt(e["final_seconds"], ".3g"),
            _fmt(e.get("setup_seconds"), ".2g"),
            _fmt(None if e.get("epoch_seconds") is None else 1e3 * e["epoch_seconds"], ".3g"),
            _fmt(e.get("macs_per_epoch"), ".3g"), _fmt(e.get("x_passes_per_epoch"), "d")]


def _name(opt, upd, several):
    return schedule_label(opt) + (f" + {rule_label(upd)}" if several else "")


def _ci_text(r):
    """" (95 % CI a-b, sign test p = x)" of a ratio entry, or ""."""
    ci, st = r.get("epochs_ci"), r.get("sign_test")
    parts = []
    if ci and ci.get("low") is not None:
        parts.append(f"{ci['level']:.0%} CI {ci['low']:.2f}-{ci['high']:.2f}")
    if st and st.get("p_value") is not None:
        parts.append(f"sign test p = {st['p_value']:.2g}")
    return f" ({', '.join(parts)})" if parts else ""


def _ratio_text(r, g, p, has_target, several):
    """One line comparing the entry ``g`` with the reference entry ``p``."""
    a = _name(r["optimizer"], r["update"], several)
    b = _name(r["versus"], r["update"], several)
    sa, sb = schedule_label(r["optimizer"]), schedule_label(r["versus"])
    w = r.get("paired")
    if has_target and (r["epochs"] is None or r["seconds"] is None):
        missed = [f"{n} reached it in {e['n_reached']}/{e['n_runs']} runs"
                  for n, e in ((a, g), (b, p))]
        who = [n for n, e in ((a, g), (b, p)) if e["epochs_to_target"] is None]
        text = (f"no ratio: the median run{'s' if len(who) > 1 else ''} of "
                f"{' and '.join(who)} missed the target ({', '.join(missed)})")
        if w and w["n_seeds"]:
            text += (f"; seed by seed, {b} reached it first on "
                     f"{w['fewer_epochs'][r['versus']]}/{w['n_seeds']} ({a} on "
                     f"{w['fewer_epochs'][r['optimizer']]})")
        return text
    if has_target:
        text = (f"epochs {sa}/{sb} = {r['epochs']:.2f}{_ci_text(r)}, seconds {sa}/{sb} = "
                f"{r['seconds']:.2f}")
        if r.get("macs") is not None:
            text += (f", multiply-adds to target {sa}/{sb} = {r['macs']:.2f} (per epoch "
                     f"{r['macs_per_epoch']:.3f})")
    elif r["final_loss"] is None:
        return "n/a"
    else:
        text = f"final training loss {sa}/{sb} = {r['final_loss']:.3g}"
    if w and w["n_seeds"]:
        fe, lt, n = w["fewer_epochs"], w["less_time"], w["n_seeds"]
        if has_target:
            text += (f"; seed by seed, {sb} needed fewer epochs on {fe[r['versus']]}/{n} "
                     f"({sa} on {fe[r['optimizer']]}), less time on {lt[r['versus']]}/{n} "
                     f"({sa} on {lt[r['optimizer']]})")
        else:
            text += (f"; {sb} ended lower on {fe[r['versus']]}/{n} seeds ({sa} on "
                     f"{fe[r['optimizer']]})")
    return text


def format_table(results):
    """The results as text: a table of medians over seeds, the best lrs and the ratios.

    Parameters
    ----------
    results : dict
        What :func:`poswise.experiments.compare` returned (or its JSON, read back).

    Returns
    -------
    str
    """
    s = results["settings"]
    summ = summarize(results)       # recomputed: results.json may predate new fields
    target = s.get("target_loss")
    seeds = s["seeds"]
    lines = [
        f"Dataset {s.get('dataset_label') or s['dataset']} ({s['n_train']} train / "
        f"{s['n_test']} validation samples, "
        f"{s['n_features']} features), network {'-'.join(map(str, s['sizes']))} "
        f"{s['activation']}, loss {s['loss']}, {s['dtype']}, init {s['init']}"
        f"{', batch ' + str(s['batch_size']) if s.get('batch_size') else ', full batch'}.",
        (f"Target loss {target:g} (training), " if target is not None else
         "No target loss, ") +
        f"at most {s['max_epochs']} epochs; medians over {len(seeds)} seed(s) "
        f"{', '.join(map(str, seeds))}; times are wall seconds."]
    if s.get("select_seeds"):
        lines.append(f"Best learning rates chosen on the selection seeds "
                     f"{', '.join(map(str, s['select_seeds']))} (not in the table).")
    if summ.get("rule") and len(s["lr"]) > 1 and target is not None:
        lines.append("Rule: " + summ["rule"] + ".")
    if results.get("interrupted"):
        lines.append("INTERRUPTED: only the runs finished before the interruption are "
                     "included.")
    header = ["lr", "schedule", "rule", "reached", "epochs", "seconds", "train loss",
              "val loss", "train acc", "val acc", "train s", "set-up s", "ms/epoch",
              "MACs/epoch", "X passes"]
    align = [">", "<", "<"] + [">"] * 12
    rows = [_entry_row(e, target) for e in summ["by_lr"]]
    lines += ["", _table(header, rows, align)]
    if not rows:
        lines.append("(no completed runs)")
    lines += ["", "'epochs' and 'seconds' are to the target, set-up included; losses, "
                  "accuracies and 'train s' (training seconds) are at the end of each run; "
                  "'set-up s' is the time before the first epoch; 'ms/epoch' excludes it. "
                  "MACs: multiply-adds of the layers' products (all samples), counted "
                  "from the layer sizes; X passes: reads of the training inputs per "
                  "epoch."]
    has_target = target is not None
    several = len({e["update"] for e in summ["by_lr"]}) > 1

    def entry(opt, upd, lr):
        return next(e for e in summ["by_lr"] if e["optimizer"] == opt
                    and e["update"] == upd and e["lr"] == lr)
    for r in summ["ratios"]["equal_lr"]:
        g, p = entry(r["optimizer"], r["update"], r["lr"]), entry(r["versus"], r["update"],
                                                                  r["lr"])
        rule = f", {rule_label(r['update'])}" if several else ""
        lines.append(f"At lr {r['lr']:g}{rule}: "
                     f"{_ratio_text(r, g, p, has_target, several)}.")
    if len(s["lr"]) > 1:
        for r in summ["ratios"]["best_lr"]:
            g = entry(r["optimizer"], r["update"], r["lr"])
            p = entry(r["versus"], r["update"], r["versus_lr"])
            lines.append(
                f"Each at its best lr ({_name(r['optimizer'], r['update'], several)} "
                f"{r['lr']:g}, {_name(r['versus'], r['update'], several)} "
                f"{r['versus_lr']:g}): {_ratio_text(r, g, p, has_target, several)}.")
    for key, title in (("crossings", "training loss"),
                       ("paper_crossings", "the paper's loss (reference code)")):
        entries = [e for e in summ["by_lr"] if e.get(key)]
        if not entries:
            continue
        hdr = ["lr", "schedule", "rule"]
        for c in entries[0][key]:
            hdr += [f"< {c['threshold']:g} ep", "s"]
        rws = []
        for e in entries:
            row = [f"{e['lr']:g}", schedule_label(e["optimizer"]), rule_label(e["update"])]
            for c in e[key]:
                row += [_fmt(c["epochs"], ".0f", "no"), _fmt(c["seconds"], ".3g")]
            rws.append(row)
        lines += ["", f"Epochs and seconds until {title} first fell below each level "
                      f"(medians):",
                  _table(hdr, rws, [">", "<", "<"] + [">"] * (len(hdr) - 3))]
    return "\n".join(lines)
