"""Peak memory of a fit beyond X (see ``benchmarks/memory.py``), recorded in the same run.

Each case runs ``memory.py`` in a fresh subprocess; the result is in ``extra_info`` (group
``memory``). The timed quantity (the subprocess's wall time) means nothing.
"""
import pytest

import _bench_common as common
import memory

CASES = memory.default_cases()


@pytest.mark.parametrize("shape_name,dtype_name,impl", CASES,
                         ids=[f"{s}-{d}-{i}" for s, d, i in CASES])
def test_memory(benchmark, shape_name, dtype_name, impl):
    benchmark.group = "memory"
    result = {}

    def run():
        result.update(memory.run_case_subprocess(shape_name, dtype_name, impl))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="memory", threads=common.THREADS, **result)
