"""Experiments: train schedules x update rules from identical weights and compare them.

* :mod:`.running`: :func:`compare` runs every arm (schedule x rule) x lr x seed;
* :mod:`.summary`: medians over seeds, best lrs, ratios (:func:`summarize`) and the
  compact JSON form of the results (:func:`for_json`);
* :mod:`.table`: :func:`format_table`, the results as text;
* :mod:`.paper`: the loss the paper's reference code reported;
* :mod:`.settings`: the checks of the settings, before any training;
* :mod:`.stats`: learning-rate grids, the rule for "best", bootstrap intervals, the sign
  test and the work (multiply-adds, passes over X) of each schedule's epoch.

The results are a plain, JSON-serialisable dict; :mod:`poswise.plots` draws them.
"""
from .paper import paper_loss
from .running import (DEFAULT_PATIENCE, PAPER_LOSS_STRIDE, WARMUP_EPOCHS, CompareError,
                      compare, crossing)
from .summary import MAX_CURVE_POINTS, arm_key, for_json, summarize
from .table import format_table
from . import stats

__all__ = ["compare", "format_table", "summarize", "crossing", "paper_loss",
           "CompareError", "for_json", "arm_key", "MAX_CURVE_POINTS", "WARMUP_EPOCHS",
           "PAPER_LOSS_STRIDE", "DEFAULT_PATIENCE", "stats"]
