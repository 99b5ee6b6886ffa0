"""Keep ``benchmarks/`` and ``scripts/bench_report.py`` from rotting.

The benchmark suite runs in a subprocess with ``POSWISE_BENCH_SMOKE=1`` (small shapes,
two rounds of a few epochs), once with ``--benchmark-disable`` (every benchmark body runs
once) and once, on the tiny shape only, writing a JSON that ``bench_report.py`` turns into
markdown. Nothing here looks at times.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytest_benchmark")

import poswise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
REPORT = ROOT / "scripts" / "bench_report.py"

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="no benchmarks/ folder")


def _env():
    env = dict(os.environ)
    src = str(Path(poswise.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["POSWISE_BENCH_SMOKE"] = "1"
    env.pop("POSWISE_BENCH_SCALE", None)
    return env


def _pytest(*args, timeout=120):
    cmd = [sys.executable, "-m", "pytest", str(BENCH), "-q", "-p", "no:cacheprovider",
           "-o", "addopts=", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    return out


def test_benchmarks_run_disabled():
    out = _pytest("--benchmark-disable")
    assert "passed" in out.stdout


def test_bench_report_from_smoke_run(tmp_path):
    run = tmp_path / "run.json"
    _pytest("-k", "tiny", f"--benchmark-json={run}")
    data = json.loads(run.read_text())
    kinds = {b["extra_info"].get("kind") for b in data["benchmarks"]}
    assert {"epoch", "memory"} <= kinds
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if e["kind"] == "epoch":
            assert e["epoch_s"] > 0 and e["epochs"] >= 1 and "threadpool_info" in e
            assert e["dtype"] in ("float32", "float64") and "other_cpu" in e
    info = data["machine_info"]["poswise"]
    assert info["smoke"] and "pytest" in info["command"] and info["threadpool_info"]

    md = tmp_path / "performance.md"
    out = subprocess.run([sys.executable, str(REPORT), str(run), "-o", str(md)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = md.read_text()
    for needle in ("# poswise performance", "Smoke run", "## Targets",
                   "tiny float64: GD epoch ≤ 10 µs", "BLAS floor", "poswise GD",
                   "threadpool_info", "bench_report.py"):
        assert needle in text, needle


def _class_record(peers_isa=None):
    """A minimal ``benchmarks/ab.py`` record: one case, both builds, two schedules."""
    env = {"OPENBLAS_CORETYPE": "Haswell"} if peers_isa else {}
    arch = ["Haswell"] if peers_isa else ["SkylakeX"]
    runs = [{"build": b, "case": "mnist", "dtype": "float64", "isa": 1, "blas_arch": arch,
             "epoch_s": {"gd": 0.1, "pwo": 0.2}, "ratio": {"gd": 0.5, "pwo": 0.9},
             "torch_ratio": {}} for b in ("before", "after")]
    return {"cpu_class": "some-cpu-avx2" + (f"-peers-{peers_isa}" if peers_isa else ""),
            "cpu": {"model": "Some CPU", "cores": 2, "vector": ["avx2", "fma"]},
            "date": "2026-01-01 00:00:00", "rounds": 1, "clock": "cpu", "threads": 1,
            "builds": {"before": {"commit": "aaa"}, "after": {"commit": "bbb"}},
            "command": "python benchmarks/ab.py", "load_before": [0.1] * 3,
            "load_after": [0.1] * 3, "peers_isa": peers_isa, "peers_env": env, "runs": runs}


def test_bench_classes_names_how_the_peers_ran(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_classes
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    paths = []
    for peers in (None, "avx2"):
        path = tmp_path / f"{peers}.json"
        path.write_text(json.dumps(_class_record(peers)))
        paths.append(str(path))
    text = "\n".join(bench_classes.section_classes(paths))
    intro, rest = text.split("### some-cpu-avx2\n")
    plain, capped = rest.split("### some-cpu-avx2-peers-avx2")
    assert "the floor's OpenBLAS kernels: SkylakeX" in plain and "capped" not in plain
    assert "peers capped at AVX2 too (OPENBLAS_CORETYPE=Haswell)" in capped
    assert "OpenBLAS kernels: Haswell" in capped
    # GD 0.5 x floor meets 0.6, PWO 0.9 x floor misses 0.75, in both tables
    assert text.count("| met |") == 2 and text.count("**not met**") == 2
