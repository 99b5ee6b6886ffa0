"""What the presentation layer needs to know about poswise's concepts, defined once.

The concepts themselves have one registry each, owned by their modules:

* schedules (which layers a step updates): :data:`poswise.trainers.SCHEDULES`, name ->
  trainer class, each class with a display ``label``;
* update rules (how a gradient becomes a step): :data:`poswise.updates.UPDATE_RULES` and
  :data:`poswise.updates.UPDATE_LABELS`;
* datasets: :data:`poswise.datasets.DATASETS` (name -> label, classes, loader).

This module adds, keyed by those names and nowhere else: the colours, line styles and
markers of the figures (Okabe-Ito colours, safe for the common colour-vision
deficiencies), run labels such as "PWO + Adam", the trainer factory the command line and
the experiments share, and the losses an experiment can report accuracy for; it
re-exports the one helper that makes records strict JSON (:mod:`poswise._json`). It
imports no plotting library.
"""
from ._json import json_clean
from .losses import LOSSES
from .trainers import SCHEDULES
from .updates import UPDATE_LABELS, UPDATE_RULES, get_update

__all__ = ["SCHEDULES", "UPDATE_RULES", "UPDATE_LABELS", "CLASSIFICATION_LOSSES",
           "DEFAULT_SCHEDULES", "SCHEDULE_STYLES", "RULE_STYLES", "dataset_label",
           "schedule_label",
           "rule_label", "run_label", "curve_style", "make_trainer", "json_clean"]

#: Losses an experiment can run: those trained on class labels (it reports accuracy).
CLASSIFICATION_LOSSES = tuple(k for k, spec in LOSSES.items() if spec.labels != "real")

#: The schedules an experiment compares unless told otherwise: the paper's two.
DEFAULT_SCHEDULES = ("gd", "pwo")

# Okabe & Ito (2008), "Color Universal Design": distinguishable under protanopia,
# deuteranopia and tritanopia, and in grey scale together with the line styles.
_OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9",
              "green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
              "vermillion": "#D55E00", "purple": "#CC79A7"}

#: Colour and line style of each schedule (GD blue and PWO red, as in the paper).
SCHEDULE_STYLES = {
    "gd": {"color": _OKABE_ITO["blue"], "linestyle": "-"},
    "pwo": {"color": _OKABE_ITO["vermillion"], "linestyle": "--"},
    "layerwise": {"color": _OKABE_ITO["green"], "linestyle": "-."},
}
#: Colour and marker of each update rule; the colour is used when a figure shows several
#: rules (then the line style tells the schedule).
RULE_STYLES = {
    "sgd": {"color": _OKABE_ITO["black"], "marker": "o"},
    "momentum": {"color": _OKABE_ITO["orange"], "marker": "s"},
    "nesterov": {"color": _OKABE_ITO["sky_blue"], "marker": "^"},
    "adam": {"color": _OKABE_ITO["purple"], "marker": "D"},
    "adamw": {"color": _OKABE_ITO["green"], "marker": "v"},
    "rmsprop": {"color": _OKABE_ITO["vermillion"], "marker": "P"},
}
# Fallbacks for names registered after this table was written (styles only, no labels).
_EXTRA_COLORS = ("#999999", "#F0E442", "#882255", "#44AA99")
_EXTRA_STYLES = (":", (0, (5, 1, 1, 1)), (0, (1, 1)))


def dataset_label(name):
    """How tables and figures print a dataset: its registry label ("Fashion-MNIST"), or
    the name itself for your own data."""
    from .datasets import DATASETS
    info = DATASETS.get(name)
    return info.label if info is not None else name


def schedule_label(name):
    """Display label of a schedule ("GD", "PWO", "layer-wise GD")."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; expected one of "
                         f"{', '.join(SCHEDULES)}.") from None
    return cls.label


def rule_label(name):
    """Display label of an update rule ("SGD", "Adam", ...)."""
    return UPDATE_LABELS.get(name, name)


def run_label(schedule, update="sgd", lr=None, *, show_rule=True):
    """A run's label: "PWO + Adam", "GD + SGD, lr 0.01", or "PWO" without the rule."""
    text = schedule_label(schedule)
    if show_rule:
        text += f" + {rule_label(update)}"
    if lr is not None:
        text += f", lr {lr:g}"
    return text


def curve_style(schedule, update="sgd", *, several_rules=False):
    """Matplotlib keywords (color, linestyle, marker) of a (schedule, rule) curve.

    With one rule in the figure the schedule gives colour and line style; with several,
    the rule gives the colour and the marker and the schedule the line style, so that
    every schedule x rule pair is drawn differently.
    """
    names = list(SCHEDULES)
    i = names.index(schedule) if schedule in names else len(names)
    sched = SCHEDULE_STYLES.get(schedule) or {
        "color": _EXTRA_COLORS[i % len(_EXTRA_COLORS)],
        "linestyle": _EXTRA_STYLES[i % len(_EXTRA_STYLES)]}
    rules = list(UPDATE_RULES)
    j = rules.index(update) if update in rules else len(rules)
    rule = RULE_STYLES.get(update) or {"color": _EXTRA_COLORS[j % len(_EXTRA_COLORS)],
                                       "marker": "x"}
    if several_rules:
        return {"color": rule["color"], "linestyle": sched["linestyle"],
                "marker": rule["marker"]}
    return {"color": sched["color"], "linestyle": sched["linestyle"], "marker": None}


def make_trainer(schedule, lr, *, update="sgd", update_params=None, **kwargs):
    """The trainer of ``schedule`` (a key of :data:`SCHEDULES`) with the given rule.

    ``update`` is a rule name or object; ``update_params`` override its
    hyper-parameters (:func:`poswise.updates.get_update`). Other keywords go to the
    trainer class.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"The 'optimizer' parameter must be one of "
                         f"{', '.join(SCHEDULES)}. Got {schedule!r} instead.")
    return SCHEDULES[schedule](lr, update=get_update(update, **(update_params or {})),
                               **kwargs)
