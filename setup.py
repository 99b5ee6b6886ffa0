"""Build the Cython kernels of poswise.

Directives are set here once. ``POSWISE_CYTHON_DEBUG=1`` turns bounds, wraparound and
initialisation checks back on (and adds line tracing) for debugging.
``POSWISE_SANITIZE=1`` adds AddressSanitizer and UndefinedBehaviorSanitizer to the compile
and link flags and changes nothing else; ``scripts/sanitize.sh`` builds such a copy in a
temporary folder and runs the kernel, trainer and thread tests on it.
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("POSWISE_CYTHON_DEBUG", "0") not in ("", "0")
SANITIZE = os.environ.get("POSWISE_SANITIZE", "0") not in ("", "0")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}

# Portable wheels: no -march=native and no -ffast-math (both change results).
# -fno-math-errno changes no value (sqrt of a negative number would only skip setting
# errno, which nothing reads): it lets the update rules' loops vectorise their sqrt.
extra_compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]
extra_link_args = []
if SANITIZE:
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_compile_args += sanitize
    extra_link_args += sanitize

extensions = [
    Extension(
        f"poswise._kernels.{name}",
        [f"src/poswise/_kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "src/poswise/_kernels"],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in ("_blas", "_core")
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives,
                          include_path=["src"]),
)
