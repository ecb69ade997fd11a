"""Build the Cython kernels against numpy's headers (metadata lives in pyproject.toml)."""
import os
import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# The Winograd tile transforms are plain loops that the compiler vectorises: built for this
# machine's vector units they run 10-15 % faster overall (AVX2/AVX-512 instead of SSE2), as
# Numba's kernels do.  A from-source install (the README's) runs where it is built; set
# FASTCONV_PORTABLE=1 to build a wheel for other x86-64 machines.
NATIVE = (["-march=native"] if sys.platform.startswith("linux") and platform.machine() == "x86_64"
          and os.environ.get("FASTCONV_PORTABLE", "0") in ("", "0") else [])

extensions = [
    Extension(
        "fastconv._im2col",
        ["fastconv/_im2col.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "fastconv._winograd",
        ["fastconv/_winograd.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] + NATIVE,
    ),
    Extension(
        "fastconv._stream",
        ["fastconv/_stream.pyx"],
        extra_compile_args=["-O2"],
    ),
    Extension(
        "fastconv._bufferpool",
        ["fastconv/_bufferpool.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False,
                                                 "cdivision": True, "initializedcheck": False}))
