"""Tests of scripts/report.py: the page is regenerated from the collected results alone,
and its numbers are those of the summary."""
import importlib.util
import json
from pathlib import Path

import pytest

from poswise.compare import compare
from poswise.datasets import make_synthetic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def report(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(mod, "FIGURES", tmp_path / "docs" / "figures")
    monkeypatch.setattr(mod, "PAGE", tmp_path / "docs" / "reproduction.md")
    return mod


def _out(tmp_path):
    from poswise.experiments.summary import for_json
    data = make_synthetic(n_samples=120, n_features=8, rng=0)
    res = compare(data, hidden=(6, 4), lr=[0.1, 0.2, 0.4], target_loss=0.35,
                  max_epochs=300, seeds=4, select_seeds=2, report_lrs="best",
                  optimizers=("gd", "layerwise", "pwo"))
    res["settings"]["command"] = (f"poswise compare --data-dir {tmp_path}/data --out "
                                  f"{tmp_path}/repro/cat_sgd")
    out = tmp_path / "repro"
    (out / "cat_sgd").mkdir(parents=True)
    (out / "cat_sgd" / "results.json").write_text(json.dumps(for_json(res)))
    (out / "times.txt").write_text("cat_sgd 12 s 2026-01-01T00:00:00Z\n")
    return out, res


def test_collect_then_page(tmp_path, report):
    out, res = _out(tmp_path)
    assert report.main(["--collect", str(out)]) == 0
    small = json.loads((report.RESULTS / "cat_sgd.json").read_text())
    assert len(small["runs"]) == len(res["runs"])
    assert "loss" not in small["runs"][0]                # curves are not kept
    assert small["settings"]["command"] == ("poswise compare --data-dir $POSWISE_DATA "
                                            "--out OUT/cat_sgd")
    assert str(tmp_path) not in (report.RESULTS / "cat_sgd.json").read_text()
    assert json.loads((report.RESULTS / "times.json").read_text()) == {"cat_sgd": 12}
    text = report.PAGE.read_text()
    assert "## What we conclude" in text and "## Summary" in text and "In short:" in text
    assert "Not in this edition" in text and "`mnist_ce`" in text
    assert str(tmp_path) not in text and "/work/" not in text
    # Every best-lr ratio of the summary is in the summary table with its CI and MACs.
    for r in res["summary"]["ratios"]["best_lr"]:
        ci = r["epochs_ci"]
        assert f"{r['epochs']:.2f} | {ci['low']:.2f}-{ci['high']:.2f}" in text
        assert f"| {r['macs']:.2f} | {r['macs_per_epoch']:.2f} |" in text
    # Regenerating from docs/results alone gives the same page; --check agrees.
    assert report.main([]) == 0 and report.PAGE.read_text() == text
    assert report.main(["--check"]) == 0
    report.PAGE.write_text(text + "edit")
    assert report.main(["--check"]) == 1


def test_no_results_is_an_error(tmp_path, report, capsys):
    assert report.main([]) == 1
    assert "no results" in capsys.readouterr().err
