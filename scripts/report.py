#!/usr/bin/env python
"""Regenerate docs/reproduction.md from the committed results in docs/results/.

    python scripts/report.py --collect OUT   # OUT: the folder of scripts/reproduce.sh
    python scripts/report.py                 # write docs/reproduction.md
    python scripts/report.py --check         # exit 1 if the page is not up to date

``--collect`` keeps, per step of scripts/reproduce.sh, a small JSON file (settings,
summary, one line per run without its curves) in docs/results/<step>.json, the measured
step times in docs/results/times.json, and copies the step's figures into docs/figures/.
The page is written from those files alone, so anyone can regenerate it, and check every
number of it against the per-run lines.
"""
import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
FIGURES = ROOT / "docs" / "figures"
PAGE = ROOT / "docs" / "reproduction.md"

#: The steps of scripts/reproduce.sh, in the page's order, with what each one is for.
STEPS = {
    "cat_sgd": "Cat, plain SGD (the paper's rule)",
    "cat_momentum": "Cat, SGD with momentum 0.9",
    "cat_adam": "Cat, Adam",
    "cat_batch128": "Cat, mini-batches of 128",
    "cat_batch32": "Cat, mini-batches of 32",
    "mnist_ce": "MNIST, cross-entropy",
    "mnist_deep": "MNIST subset, an equal-width deeper network",
    "mnist_am": "MNIST, additive-margin softmax",
    "mnist_paper": "MNIST in the paper's regime (0-255 pixels, AM-softmax)",
}
FIGS = ("comparison.png", "reach.png", "lr_sweep.png", "comparison_paper_loss.png")
RUN_KEYS = ("optimizer", "update", "seed", "lr", "role", "epochs", "epochs_to_target",
            "seconds_to_target", "setup_seconds", "final_seconds", "final_loss",
            "final_val_accuracy", "final_train_accuracy", "stopped_reason")
#: The reproduction tolerance the page states (issue 15).
TOLERANCE = ("an independent run of the same commands should give medians of epochs to "
             "the target within +-5 % at learning rates <= 0.01, and counts of seeds "
             "reaching the target within +-2 per 10 seeds at the edge of stability (the "
             "largest rates of a grid); times are not expected to reproduce on another "
             "machine, multiply-adds and passes over X are exact counts")
NAMES = {"gd": "GD", "pwo": "PWO", "layerwise": "layer-wise GD"}
RULES = {"sgd": "SGD", "momentum": "momentum", "adam": "Adam", "nesterov": "Nesterov",
         "adamw": "AdamW", "rmsprop": "RMSprop"}


# --------------------------------------------------------------------------- collect

def collect(out):
    """Copy the small parts of ``out``'s results into docs/results and docs/figures."""
    out = Path(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    FIGURES.mkdir(parents=True, exist_ok=True)
    done = []
    for step in STEPS:
        src = out / step / "results.json"
        if not src.is_file():
            continue
        res = json.loads(src.read_text())
        s = dict(res["settings"])
        s.pop("threadpools", None)
        if s.get("command"):
            s["command"] = portable(s["command"])
        small = {"settings": s, "summary": res["summary"],
                 "interrupted": res.get("interrupted", False),
                 "runs": [{k: r.get(k) for k in RUN_KEYS} for r in res["runs"]]}
        (RESULTS / f"{step}.json").write_text(_dump(small))
        for f in FIGS:
            if (out / step / f).is_file():
                shutil.copyfile(out / step / f, FIGURES / f"{step}_{f}")
        done.append(step)
    if (out / "times.txt").is_file():
        tf = RESULTS / "times.json"
        times = json.loads(tf.read_text()) if tf.is_file() else {}
        for line in (out / "times.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                if parts[0] in done:        # the last run of a collected step counts
                    times[parts[0]] = int(parts[1])
        (RESULTS / "times.json").write_text(json.dumps(times, indent=1) + "\n")
    return done


def portable(command):
    """A step's command without this machine's paths: the data home becomes
    $POSWISE_DATA, the output folder OUT (as in scripts/reproduce.sh)."""
    command = re.sub(r"--data-dir \S+", "--data-dir $POSWISE_DATA", command)
    return re.sub(r"(--out|--data) \S*/([^/\s]+)", r"\1 OUT/\2", command)


def _dump(small):
    """Compact JSON with one run per line (readable diffs, small files)."""
    runs = small["runs"]
    head = json.dumps({k: v for k, v in small.items() if k != "runs"},
                      separators=(",", ":"))
    body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in runs)
    return head[:-1] + ',"runs":[\n' + body + "\n]}\n"


def draw_lr_curves(steps):
    """The lr-curve figure of every step with an lr grid, from the collected JSON."""
    from poswise.plots import plot_reach, save_figure
    for step, res in steps.items():
        s = res["settings"]
        if len(s["lr"]) > 1 and s.get("target_loss") is not None:
            save_figure(plot_reach(res), FIGURES / f"{step}_reach.png")


# --------------------------------------------------------------------------- helpers

def fmt(v, spec=".3g", none="-"):
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def lr_text(lr):
    return format(lr, ".3g")


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ci_bounds(r):
    """(low, high) of a ratio's interval; JSON keeps an unbounded upper end as null."""
    ci = r.get("epochs_ci") or {}
    if ci.get("low") is None:
        return None, None
    return ci["low"], math.inf if ci.get("high") is None else ci["high"]


def ci_text(r):
    lo, hi = ci_bounds(r)
    if lo is None:
        return "CI n/a"
    return f"{fmt(lo, '.2f')}-{fmt(hi, '.2f')}"


def p_text(r):
    st = r.get("sign_test") or {}
    return fmt(st.get("p_value"), ".2g")


def data_label(s):
    net = "-".join(map(str, s["sizes"]))
    batch = f", mini-batch {s['batch_size']}" if s.get("batch_size") else ", full batch"
    return (f"{s.get('dataset_label') or s['dataset']} ({s['n_train']} training rows), "
            f"network {net}, {s['loss']}{batch}")


def target_text(s):
    return (f"training loss < {s['target_loss']:g}" if s.get("target_loss") is not None
            else f"{s['max_epochs']} epochs (no target)")


def seeds_text(s):
    sel = s.get("select_seeds") or []
    text = f"{len(s['seeds'])} report seeds"
    if sel:
        text += f" (best lr chosen on {len(sel)} other seeds)"
    elif len(s["lr"]) > 1:
        text += " (best lr chosen on these same seeds: no selection seeds)"
    return text


def entry(summ, opt, upd, lr):
    return next((e for e in summ["by_lr"] if e["optimizer"] == opt
                 and e["update"] == upd and e["lr"] == lr), None)


# --------------------------------------------------------------------------- sections

def _median_missed(summ, schedule, update, lr):
    """Whether the median report run of schedule + update at lr missed the target."""
    return any(e["optimizer"] == schedule and e["update"] == update and e["lr"] == lr
               and e["epochs_to_target"] is None for e in summ["by_lr"])


def summary_rows(steps):
    """One row per ratio at each schedule's best lr, every step."""
    rows = []
    for step, res in steps.items():
        s, summ = res["settings"], res["summary"]
        if s.get("target_loss") is None:
            continue
        kind = "best_lr" if len(s["lr"]) > 1 else "equal_lr"
        for r in summ["ratios"][kind]:
            a, b = NAMES[r["optimizer"]], NAMES[r["versus"]]
            lr = (f"{lr_text(r['lr'])} / {lr_text(r['versus_lr'])}" if kind == "best_lr"
                  else f"{lr_text(r['lr'])} (both)")
            w = r.get("paired") or {}
            n = w.get("n_seeds", 0)
            fe = (w.get("fewer_epochs") or {}).get(r["versus"], 0)
            epochs = fmt(r["epochs"], ".2f")
            arms = ((a, r["optimizer"], r["lr"]),
                    (b, r["versus"], r.get("versus_lr", r["lr"])))
            missed = [f"{name}'s" for name, o, v in arms
                      if _median_missed(summ, o, r["update"], v)]
            if r["epochs"] is None and missed:
                epochs = f"none: {' and '.join(missed)} median run missed"
            rows.append([step, RULES.get(r["update"], r["update"]), f"{a} / {b}", lr,
                         epochs, ci_text(r), p_text(r), f"{fe}/{n}",
                         fmt(r.get("macs"), ".2f"), fmt(r.get("macs_per_epoch"), ".2f"),
                         fmt(r["seconds"], ".2f")])
    return rows


def step_section(step, res, times):
    s, summ = res["settings"], res["summary"]
    has_target = s.get("target_loss") is not None
    lines = [f"### {STEPS[step]} (`{step}`)", "",
             f"{data_label(s)}; {target_text(s)}; {seeds_text(s)}; update rule "
             f"{', '.join(RULES.get(u, u) for u in s['updates'])}; learning rates "
             f"{', '.join(lr_text(v) for v in s['lr'])}; at most {s['max_epochs']} epochs."
             + (f" Wall time of the step: {times[step]} s." if step in times else ""), ""]
    if res.get("interrupted"):
        lines += ["**Interrupted**: only the runs finished before the interruption are "
                  "included.", ""]
    if summ.get("chosen") and len(s["lr"]) > 1 and has_target:
        ch = "; ".join(f"{NAMES[k.split('+')[0]]} {lr_text(v['lr'])}"
                       + ("" if v["qualified"] else " (no rate met the reach rule)")
                       for k, v in summ["chosen"].items())
        edge = sorted({NAMES[k.split("+")[0]] for k, v in summ["chosen"].items()
                       if v["lr"] in (min(s["lr"]), max(s["lr"]))})
        if edge:
            ch += (f". **At the edge of the grid** for {', '.join(edge)}: a better rate "
                   f"may lie beyond it, so the best-against-best ratio is provisional")
        lines += [f"Best learning rates by the rule: {ch}.", ""]
    sel = summ.get("selection") or []
    if sel and has_target:
        scheds = list(dict.fromkeys(e["optimizer"] for e in sel))
        lrs = sorted({e["lr"] for e in sel})
        cell = {(e["optimizer"], e["lr"]): e for e in sel}
        lines += [f"The learning-rate curve on the {len(s['select_seeds'])} selection seeds "
                  f"(seeds reaching the target, median epochs; a figure below):", ""]
        lines += [md_table(["lr"] + [NAMES[o] for o in scheds],
                           [[lr_text(lr)] + [
                               f"{cell[o, lr]['n_reached']}/{cell[o, lr]['n_runs']}, "
                               f"{fmt(cell[o, lr]['epochs_to_target'], '.0f', 'not reached')}"
                               if (o, lr) in cell else "-" for o in scheds] for lr in lrs]),
                  "", "On the report seeds:", ""]
    header = ["lr", "schedule", "reached", "collapsed", "epochs", "MACs to target",
              "X passes", "s to target", "ms/epoch", "set-up s", "final loss", "val acc"]
    rows = []
    for e in summ["by_lr"]:
        rows.append([lr_text(e["lr"]), NAMES[e["optimizer"]],
                     f"{e['n_reached']}/{e['n_runs']}" if has_target else "-",
                     str(e.get("n_collapsed", e["n_diverged"])),
                     fmt(e["epochs_to_target"], ".0f", "not reached" if has_target else "-"),
                     fmt(e.get("macs_to_target"), ".3g"),
                     fmt(e.get("x_passes_to_target"), ".0f"),
                     fmt(e["seconds_to_target"], ".3g"),
                     fmt(None if e.get("epoch_seconds") is None
                         else 1e3 * e["epoch_seconds"], ".3g"),
                     fmt(e.get("setup_seconds"), ".2g"), fmt(e["final_loss"], ".4g"),
                     fmt(e["final_val_accuracy"], ".3f")])
    lines += [md_table(header, rows), ""]
    eq = [r for r in summ["ratios"]["equal_lr"] if has_target]
    if eq:
        lines += ["At equal learning rates (ratios of medians over the report seeds; 95 % "
                  "CI by paired bootstrap; sign test on epochs):", ""]
        lines += [md_table(
            ["lr", "ratio", "epochs", "95 % CI", "sign p", "ref. fewer", "MACs",
             "MACs/epoch", "seconds"],
            [[lr_text(r["lr"]), f"{NAMES[r['optimizer']]} / {NAMES[r['versus']]}",
              fmt(r["epochs"], ".2f"), ci_text(r), p_text(r),
              f"{r['paired']['fewer_epochs'][r['versus']]}/{r['paired']['n_seeds']}",
              fmt(r.get("macs"), ".2f"), fmt(r.get("macs_per_epoch"), ".2f"),
              fmt(r["seconds"], ".2f")] for r in eq]), ""]
    with_b = [e for e in summ["by_lr"] if e.get("budgets")]
    if with_b:
        heads = [f"{b['budget']:g} " + ("epochs" if b["kind"] == "epochs" else "GD epochs "
                                        "of work") for b in with_b[0]["budgets"]]
        lines += ["Validation accuracy (median over seeds) after a fixed number of epochs "
                  "and after a fixed amount of work (multiply-adds of that many GD "
                  "epochs); in brackets, how many runs trained that far (a run that "
                  "stopped at the target earlier counts with its value there):", ""]
        lines += [md_table(["lr", "schedule"] + heads,
                           [[lr_text(e["lr"]), NAMES[e["optimizer"]]]
                            + [f"{fmt(b['val_accuracy'], '.3f')} ({b['n_trained']}/"
                               f"{e['n_runs']})" for b in e["budgets"]]
                            for e in with_b]), ""]
    pc = [e for e in summ["by_lr"] if e.get("paper_crossings")]
    if pc:
        lines += ["Epochs until the paper's own loss (reference code: per-class binary "
                  "cross-entropy summed over classes) first fell below its threshold "
                  "(median):", ""]
        lines += [md_table(["lr", "schedule", "threshold", "reached", "epochs"],
                           [[lr_text(e["lr"]), NAMES[e["optimizer"]], f"{c['threshold']:g}",
                             f"{c['n_reached']}/{e['n_runs']}", fmt(c["epochs"], ".0f")]
                            for e in pc for c in e["paper_crossings"]]), ""]
    for f in FIGS:
        if (FIGURES / f"{step}_{f}").is_file():
            lines += [f"![{step}: {f[:-4].replace('_', ' ')}](figures/{step}_{f})", ""]
    return lines


def _claim(step, s, r, kind):
    a, b = NAMES[r["optimizer"]], NAMES[r["versus"]]
    lo, hi = ci_bounds(r)
    if r["epochs"] is None:
        verdict = f"no ratio ({a} or {b} missed the target on half the seeds or more)"
    elif lo is None:
        verdict = "no interval (a result file written before intervals were always given)"
    elif lo > 1:
        verdict = f"{b} needs fewer epochs than {a}"
    elif hi < 1:
        verdict = f"{b} needs more epochs than {a}"
    else:
        verdict = f"no clear difference in epochs between {a} and {b}"
        p = (r.get("sign_test") or {}).get("p_value")
        fewer = (r.get("paired") or {}).get("fewer_epochs") or {}
        na, nb = fewer.get(r["optimizer"], 0), fewer.get(r["versus"], 0)
        if p is not None and p < 0.05 and na != nb:
            verdict += (f" by the interval, though the sign test (p = {p:.2g}) finds "
                        f"{b if nb > na else a} faster on most seeds")
    at = (f"each at its own best lr ({a} {lr_text(r['lr'])}, {b} "
          f"{lr_text(r['versus_lr'])})" if kind == "best_lr"
          else f"both at lr {lr_text(r['lr'])}")
    w = r["paired"]
    return (f"* **{step}, {RULES.get(r['update'], r['update'])}, {at}: {verdict}.** "
            f"Data: {data_label(s)}, {len(s['seeds'])} report seeds. Measure: median "
            f"epochs to {target_text(s)}, {a}/{b} = {fmt(r['epochs'], '.2f')} ("
            f"{'95 % CI ' if lo is not None else ''}{ci_text(r)}, sign test p = {p_text(r)}, {b} fewer on "
            f"{w['fewer_epochs'][r['versus']]}/{w['n_seeds']} seeds); multiply-adds to "
            f"the target {a}/{b} = {fmt(r.get('macs'), '.2f')}; wall-time ratio "
            f"{fmt(r['seconds'], '.2f')} (this machine).")


def in_short(steps):
    """Counts of the verdicts, per comparison: a line a reader can quote."""
    tally = {}
    for step, res in steps.items():
        s, summ = res["settings"], res["summary"]
        if s.get("target_loss") is None:
            continue
        kinds = (["best_lr"] if len(s["lr"]) > 1 else []) + ["equal_lr"]
        for kind in kinds:
            for r in summ["ratios"][kind]:
                lo, hi = ci_bounds(r)
                key = (kind, r["optimizer"], r["versus"])
                v = ("fewer" if lo is not None and lo > 1 and r["epochs"] is not None else
                     "more" if hi is not None and hi < 1 else "unclear")
                where = f"{step} at {lr_text(r['lr'])}" if kind == "equal_lr" else step
                tally.setdefault(key, {"fewer": [], "more": [], "unclear": []})[v].append(
                    where)
    out = []
    for (kind, a, b), t in tally.items():
        n = sum(len(v) for v in t.values())
        what = ("each at its own best lr" if kind == "best_lr" else "at equal lr")
        parts = [f"clearly fewer epochs in {len(t['fewer'])}"
                 + (f" ({', '.join(t['fewer'])})" if t["fewer"] else ""),
                 f"clearly more in {len(t['more'])}"
                 + (f" ({', '.join(t['more'])})" if t["more"] else ""),
                 f"no clear difference or no ratio in {len(t['unclear'])}"]
        out.append(f"* {NAMES[b]} against {NAMES[a]}, {what}, over {n} comparisons: "
                   f"{NAMES[b]} needed " + "; ".join(parts) + ".")
    return out


def claims(steps):
    """The conclusions: claim, data, measure, numbers; at the best lrs first, then at
    equal lrs."""
    best, equal = [], []
    for step, res in steps.items():
        s, summ = res["settings"], res["summary"]
        if s.get("target_loss") is None:
            continue
        if len(s["lr"]) > 1:
            best += [_claim(step, s, r, "best_lr") for r in summ["ratios"]["best_lr"]]
        equal += [_claim(step, s, r, "equal_lr") for r in summ["ratios"]["equal_lr"]]
    out = []
    if best:
        out += ["Each schedule at its own best learning rate:", ""] + best + [""]
    if equal:
        out += ["At equal learning rates:", ""] + equal
    return out


def page(steps, times):
    total = sum(times.get(k, 0) for k in steps)
    L = ["# Does PWO beat GD? Reproduction and report, second edition", "",
         "<!-- Generated by scripts/report.py from docs/results/*.json: do not edit by "
         "hand. -->", "",
         "Valizadeh (arXiv 2204.05312) reports that the position-wise optimizer (PWO) "
         "reaches a loss threshold in fewer epochs and less time than full-batch gradient "
         "descent (GD): on cat vs non-cat 2243 against 881 epochs (BCE < 0.1), on MNIST "
         "195 against 139 and on CIFAR-10 121 against 97 (its own loss), single runs, "
         "learning rate not stated. This page asks whether that holds under a stated "
         "protocol: many seeds with identical initial weights per seed, learning rates "
         "chosen on other seeds than those reported, confidence intervals, the work of an "
         "epoch counted, modern update rules, and a control for PWO's mechanism.", "",
         "Every number below is read from `docs/results/<step>.json`, written by "
         "`python scripts/report.py --collect OUT` from the output of "
         "[`scripts/reproduce.sh`](../scripts/reproduce.sh) (one step per section; the "
         "command of each step is in its JSON file, `settings.command`). "
         f"Steps run for this edition: {', '.join(f'`{k}`' for k in steps)}"
         + (f"; their wall times, step by step on the 2-core machine this page was made "
            f"on, add up to {total} s ({total / 60:.0f} min; each step's in its section)."
            if total else "."), ""]
    missing = [k for k in STEPS if k not in steps]
    if missing:
        L += ["**Not in this edition** (the step did not finish in the time available; "
              "its command is in scripts/reproduce.sh): "
              + ", ".join(f"`{k}` ({STEPS[k]})" for k in missing) + ".", ""]
    L += ["## Method", "",
          "* **Schedules.** GD (one update of every layer per epoch), PWO (spans from the "
          "last layer down to the first, re-forwarding after each, so layer l, 0 = input, "
          "is updated l + 1 times an epoch) and **layer-wise GD**: GD whose layer l uses "
          "the learning rate lr * (l + 1), the same step sizes per epoch as PWO without "
          "its re-forwards. If layer-wise GD matches PWO, PWO's gain is a per-layer "
          "learning-rate effect.",
          "* **Seeds.** For a seed the network is drawn once and every schedule trains a "
          "copy. Learning rates are chosen on *selection* seeds, and all reported numbers "
          "come from disjoint *report* seeds run at the chosen rates (every schedule at "
          "every chosen rate, so \"each at its best lr\" and \"at equal lr\" come from the "
          "same runs). Steps with one learning rate, or without selection seeds, say so "
          "in their section.",
          "* **The rule for \"best\".** Among the rates of a grid in sqrt(2) steps where at "
          "least 90 % of the selection seeds reach the target, the one with the fewest "
          "median epochs to the target (ties: fewer median seconds). A miss counts as "
          "infinitely slow in every median.",
          "* **Statistics.** Ratios are of medians over the report seeds. The 95 % "
          "interval is a percentile bootstrap of that ratio, resampling seeds with their "
          "pairs (10000 resamples); a missed target counts as infinitely slow, and a "
          "resample in which both medians are misses (no ratio) counts as 0 for the lower "
          "end and as infinite for the upper end, so the interval is conservative; the "
          "sign test (scipy `binomtest`, p = 1/2, ties dropped) counts on how many seeds "
          "each schedule needed fewer epochs. A ratio "
          "above 1 means the second schedule (PWO) needed less. With 5 seeds or fewer "
          "(MNIST) the bootstrap interval can take only a few values and is too narrow "
          "or too wide by chance: read it with the sign test, which cannot reach p < "
          "0.05 with fewer than 6 seeds.",
          "* **Work.** Multiply-adds (MACs) of the layers' products, counted from the "
          "layer sizes n_0..n_L (F_l = n_l n_(l+1) per sample): a span from layer f costs "
          "the weight gradients of layers f..L-1, the errors into layers f+1..L-1 and "
          "the forward pass of layers f..L-1. GD is one span from 0, PWO one from each "
          "layer. Passes over X: GD reads X once an epoch (forward and backward of a row "
          "block need nothing from other rows), PWO twice (the gradient of the first "
          "layer, then the re-forward with its new weights). To the target: one forward "
          "pass plus the epochs. poswise's Gram-matrix first layer on cat "
          "(`first_layer=dual`) does the same arithmetic far more cheaply, so wall times "
          "and MACs tell different stories there.",
          "* **Time.** Wall time of each fit with its set-up (the Gram matrix, buffers) "
          "reported apart (`set-up s`); `ms/epoch` excludes it. Times are of one 2-core "
          "machine and indicative only; multiply-adds and passes over X are exact counts.",
          "* **Stopping.** A run stops at the first epoch whose *training* loss is below "
          "the target, or at its epoch budget, or " + stopping_rule(steps) + " "
          "*Collapsed* counts the runs that diverged (non-finite loss) and the runs "
          "stopped this way (*stalled*).",
          f"* **Reproduction tolerance.** {TOLERANCE[0].upper() + TOLERANCE[1:]}.", ""]
    rows = summary_rows(steps)
    if rows:
        L += ["## Summary", "",
              "Each schedule against PWO, each at its own best learning rate (a step with "
              "one rate: at that rate). `epochs` is the ratio of median epochs to the "
              "target (above 1: PWO needed fewer), with its 95 % CI and the sign test; "
              "`PWO fewer` counts the seeds; `MACs` is the ratio of median multiply-adds "
              "to the target and `MACs/epoch` that of one epoch; `seconds` is wall time "
              "on this machine.", "",
              md_table(["step", "rule", "ratio", "lr", "epochs", "95 % CI", "sign p",
                        "PWO fewer", "MACs", "MACs/epoch", "seconds"], rows), ""]
    cl = claims(steps)
    if cl:
        L += ["## What we conclude", "",
              "Each claim names its data, its measure and its numbers, so that runs of "
              "the same commands on other seeds or held-out data can check it; \"clear\" "
              "means the 95 % interval of the ratio excludes 1.", "", "In short:", ""]
        L += in_short(steps) + ["", "In detail:", ""] + cl + [""]
    L += ["## Results by step", ""]
    for step, res in steps.items():
        L += step_section(step, res, times)
    L += ["## The paper's MNIST threshold", "",
          "The paper's MNIST threshold 3.248 is a value of its reference code's own loss "
          "(a per-class binary cross-entropy of softmax outputs, summed over the 10 "
          "classes), whose value for a uniform prediction is 3.2506. Freshly initialised "
          "networks start just above the threshold; in the first edition of this page (2 "
          "seeds, cross-entropy training) both schedules crossed it within 1-2 epochs. "
          "Trained with AM-softmax, the loss the paper names, the crossing takes longer: "
          "see the tables of `mnist_am` and `mnist_paper` (0-255 pixels) above, when "
          "they are in this edition.",
          "", "## Not run", "",
          "* CIFAR-10: its files are not available on this machine "
          "(`poswise reproduce cifar10` fails cleanly without them).",
          "* The paper's learning rates are not stated, and its timing (CPU time summed "
          "over BLAS threads) is not reproduced: times here are wall time.",
          "* The first edition of this page (5-10 seeds, learning rates chosen on the "
          "reported seeds, a grid with a factor-2.5 gap, the first layer computed as the "
          "paper's code does, LeCun-normal initialisation) is in the repository's "
          "history; its numbers are superseded here.", ""]
    return "\n".join(L)


def stopping_rule(steps):
    """The patience rules the steps ran with, in words (read from their settings)."""
    words = {"flat": "whose last {k} + 1 training losses lie within a relative 1e-4 of "
                     "each other (a collapsed run; a run still improving, however "
                     "slowly, or climbing back after a spike is never cut)",
             "no_improvement": "whose training loss has not improved on its best for {k} "
                               "epochs"}
    used, without = {}, []
    for step, res in steps.items():
        st = res["settings"]
        if st.get("patience") is not None:
            rule = st.get("stall") or "no_improvement"   # before --stall existed
            used.setdefault((rule, st["patience"]), []).append(step)
        else:
            without.append(step)
    if not used:
        return "(no patience rule) never early."
    parts = [words[rule].format(k=k) + f" (`{'`, `'.join(ss)}`)"
             for (rule, k), ss in sorted(used.items())]
    rest = f" Without this rule: `{'`, `'.join(without)}`." if without else ""
    return "when stalled: a run " + "; or a run ".join(parts) + "." + rest


def load_steps():
    steps = {}
    for step in STEPS:
        f = RESULTS / f"{step}.json"
        if f.is_file():
            steps[step] = json.loads(f.read_text())
    times_f = RESULTS / "times.json"
    times = json.loads(times_f.read_text()) if times_f.is_file() else {}
    return steps, times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", metavar="OUT",
                    help="first copy the results of scripts/reproduce.sh in OUT")
    ap.add_argument("--check", action="store_true",
                    help="do not write: exit 1 if docs/reproduction.md is out of date")
    args = ap.parse_args(argv)
    if args.collect:
        done = collect(args.collect)
        print(f"collected: {', '.join(done) or 'nothing'}", file=sys.stderr)
    steps, times = load_steps()
    if not steps:
        print("no results in docs/results: run scripts/reproduce.sh, then --collect",
              file=sys.stderr)
        return 1
    if not args.check:
        draw_lr_curves(steps)
    text = page(steps, times)
    if args.check:
        return 0 if PAGE.is_file() and PAGE.read_text() == text else 1
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
