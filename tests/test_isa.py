"""Every CPU class of the direct kernels on one machine (POSWISE_ISA caps the class).

POSWISE_ISA is read once per process, so each class runs in a subprocess, which trains
through the public API with the direct first layer and with the numpy twin and reports
the largest relative difference. First-layer widths are chosen to hit every vector count
of the forward kernel's specialisations: 1 to 8 vectors on AVX2 in float64 (4 lanes),
1 to 4 in float32 and on AVX-512 in float64, 1 to 2 on AVX-512 in float32, with and without
a half vector (e.g. 3, 11, 20 outputs), and the gradient kernel's outputs in one group
(up to 24 on AVX-512, 12 on AVX2), two and three groups (27, 32 outputs); 203
rows give a ragged last chunk of the gradient's 64-row chunks.
"""
import subprocess
import sys

import pytest

from conftest import ISAS, best_isa, isa_env, run_isa_child, skip_unless_isa

CHILD = r"""
import ctypes, json, sys
import numpy as np
import poswise
from poswise._kernels import _core

isa = ctypes.CDLL(_core.__file__).pw_active_isa()
out = {"isa": isa, "supported": _core.direct_supported(), "err": {}}
if isa == 0:
    try:
        poswise.GradientDescent(0.1, first_layer="direct").fit(
            poswise.MLP((40, 5, 2), rng=0), np.zeros((50, 40)), np.zeros(50), epochs=1)
        out["direct_refused"] = False
    except ValueError:
        out["direct_refused"] = True
else:
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        # 203 rows: register blocks of rows with a ragged tail; 37 columns: a column tail
        X = rng.standard_normal((203, 37)).astype(dtype)
        y = rng.integers(0, 3, 203)
        for n1 in (1, 3, 5, 8, 11, 13, 17, 20, 23, 27, 32):
            for cls in (poswise.GradientDescent, poswise.PositionWise):
                a = poswise.MLP((37, n1, 6, 3), rng=1, dtype=dtype, activation="tanh")
                b = a.copy()
                h = cls(0.1, loss="cross_entropy", first_layer="direct", threads=2).fit(
                    a, X, y, epochs=3)
                assert h.first_layer == "direct"
                cls(0.1, loss="cross_entropy", backend="numpy").fit(b, X, y, epochs=3)
                err = max(float(np.max(np.abs(p.astype(float) - q)) / np.max(np.abs(q)))
                          for p, q in zip(a.weights + a.biases, b.weights + b.biases))
                key = f"{np.dtype(dtype).name}-{n1}-{cls.__name__}"
                out["err"][key] = err
print(json.dumps(out))
"""


@pytest.mark.parametrize("isa", sorted(ISAS))
def test_each_cpu_class_matches_numpy(isa):
    skip_unless_isa(isa)
    out = run_isa_child(CHILD, isa)
    assert out["isa"] == ISAS[isa]
    assert out["supported"] == (ISAS[isa] > 0)
    if ISAS[isa] == 0:
        assert out["direct_refused"]        # first_layer="direct" needs a class: clear error
        return
    for key, err in out["err"].items():
        tol = 1e-12 if key.startswith("float64") else 2e-5
        assert err <= tol, (key, err)


def test_unknown_isa_falls_back_to_auto_with_a_message():
    env = isa_env("sse9")
    code = ("import ctypes; from poswise._kernels import _core; "
            "print(ctypes.CDLL(_core.__file__).pw_active_isa())")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0
    assert int(res.stdout) == best_isa()
    assert "POSWISE_ISA" in res.stderr and "sse9" in res.stderr


PRODUCTS_CHILD = r"""
import ctypes, hashlib, json
import numpy as np
from poswise._kernels import _core

lib = ctypes.CDLL(_core.__file__)
lib.pw_cache_size.restype = ctypes.c_long
l2 = lib.pw_cache_size(2)
fn = lib.pw_first_x
P = ctypes.c_void_p
fn.argtypes = [ctypes.c_int, ctypes.c_int, P, ctypes.c_int, ctypes.c_int, P, ctypes.c_int,
               ctypes.c_int, P, ctypes.c_int]
out = {"isa": lib.pw_active_isa(), "hash": {}, "err": {}}
rng = np.random.default_rng(7)
for dtype in (np.float64, np.float32):
    size = np.dtype(dtype).itemsize
    # (rows, columns): ragged row blocks and column tails; the last shape's X outgrows two
    # level-2 caches (the gradient's other loop order)
    big = 3 * l2 // (401 * size) + 1
    for N, D in ((203, 37), (25, 300), (1000, 300), (big, 401)):
        X = rng.standard_normal((N, D)).astype(dtype)
        for n1 in (1, 4, 5, 9, 13, 20, 24, 29, 32):
            if N == big and n1 not in (5, 20):
                continue
            NP = -(-n1 * size // 64) * 64 // size
            WT = np.full((D, NP), np.nan, dtype=dtype)       # padding lanes: never output
            WT[:, :n1] = rng.standard_normal((D, n1))
            Dl = rng.standard_normal((N, n1)).astype(dtype)
            ref = {0: X.astype(float) @ WT[:, :n1].astype(float),
                   1: Dl.T.astype(float) @ X.astype(float)}
            for grad in (0, 1):
                for threads in (1, 3):
                    res = np.full((n1, D) if grad else (N, n1), np.nan, dtype=dtype)
                    fn(int(size == 8), grad, X.ctypes.data, N, D,
                       (Dl if grad else WT).ctypes.data, NP, n1, res.ctypes.data, threads)
                    key = f"{np.dtype(dtype).name}-{N}x{D}-{n1}-{grad}-{threads}"
                    out["hash"][key] = hashlib.sha256(res.tobytes()).hexdigest()
                    out["err"][key] = float(np.max(np.abs(res - ref[grad]))
                                            / np.max(np.abs(ref[grad])))
print(json.dumps(out))
"""


def test_first_layer_products_same_bits_on_every_class():
    """The first layer's forward and gradient products on every class this CPU has: close
    to numpy, and bit for bit the same across classes and thread counts (every element is
    one natural-order FMA sum, whatever the kernel's register blocks, chunks or loop order:
    AVX-512's blocks and AVX2's chunks differ). The padding lanes of WT hold NaN and never
    reach an output."""
    classes = [isa for isa in ("avx512", "avx2") if ISAS[isa] <= best_isa()]
    if not classes:
        pytest.skip("this CPU has no class of the direct kernels")
    outs = {isa: run_isa_child(PRODUCTS_CHILD, isa) for isa in classes}
    first = outs[classes[0]]
    for isa, out in outs.items():
        assert out["isa"] == ISAS[isa]
        for key, err in out["err"].items():
            tol = 1e-12 if key.startswith("float64") else 2e-6
            assert err <= tol, (isa, key, err)
        assert out["hash"] == first["hash"], isa
        for key, h in out["hash"].items():          # threads 1 and 3: same bits
            if key.endswith("-3"):
                assert h == out["hash"][key[:-1] + "1"], (isa, key)
