"""Build only: the extension list, the Cython directives, the OpenMP probe.

Switches (environment variables read at build time):
  CONVCORE_DEBUG=1     Cython bounds/wraparound/initialised checks on, -O1 -g
  CONVCORE_SANITIZE=address   compile and link with AddressSanitizer
  CONVCORE_NO_OPENMP=1 build the serial core even if the compiler has OpenMP
"""
import os
import shutil
import sys
import tempfile
import textwrap
import warnings

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("CONVCORE_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("CONVCORE_SANITIZE", "")
NO_OPENMP = os.environ.get("CONVCORE_NO_OPENMP", "") not in ("", "0")
# Each configuration gets its own generated C and object files, so that an
# in-tree build never reuses artefacts compiled with other flags.
CONFIG = "-".join(["debug" if DEBUG else "release"] + ([SANITIZE] if SANITIZE else [])
                  + (["serial"] if NO_OPENMP else []))

MODULES = ["_blas", "_im2col", "_isa", "_conv", "_pool", "_linear", "_optim", "_dropout",
           "_norm", "_gather", "_add", "_bf16", "_openmp_info"]
# The kernel sets (src/convcore/_kernel_set.h), linked into convcore._isa: each
# file compiles the same width-generic kernels for its own target.
KERNEL_SETS = ["_set_baseline.c", "_set_avx2.c", "_set_avx512.c", "_set_neon.c"]
HEADERS = ["_simd.h", "_kernel_set.h", "_kernel_set_body.h", "_conv_direct.h",
           "_conv_winograd.h", "_linear_tiles.h", "_adam.h", "_pool_kernels.h",
           "_dropout_kernels.h", "_gather_kernels.h", "_norm_kernels.h", "_bf16_kernels.h",
           "_bf16_gemm.h"]


def openmp_flags():
    """Return the compile/link flags for OpenMP, or [] if the compiler has none."""
    if NO_OPENMP:
        return []
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    flag = "/openmp" if sys.platform == "win32" else "-fopenmp"
    cc = new_compiler()
    customize_compiler(cc)
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "probe.c")
    with open(src, "w") as f:
        f.write(textwrap.dedent("""
            #include <omp.h>
            int main(void) { int n = 0;
            #pragma omp parallel reduction(+:n)
              n += 1;
              return n > 0 && omp_get_max_threads() > 0 ? 0 : 1; }
        """))
    try:
        objs = cc.compile([src], output_dir=tmp, extra_postargs=[flag])
        cc.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=[flag])
        return [flag]
    except Exception:  # noqa: BLE001 - any compiler failure means "no OpenMP"
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(self.build_temp, CONFIG)
        if CONFIG != "release":
            self.force = True

    def build_extensions(self):
        omp = openmp_flags()
        if not omp:
            warnings.warn(
                "convcore: the C compiler has no OpenMP support (or CONVCORE_NO_OPENMP "
                "is set); building a correct but serial core. "
                "convcore.openmp_enabled() will return False.",
                stacklevel=1,
            )
        for ext in self.extensions:
            ext.extra_compile_args += omp
            ext.extra_link_args += omp
        super().build_extensions()


def extensions():
    import numpy as np

    compile_args = ["-O1", "-g"] if DEBUG else ["-O3"]   # -O1: what ASan recommends
    # sqrtf without errno: the Adam loop vectorises (IEEE sqrt either way: same bits)
    compile_args += ["-fno-math-errno"]
    link_args = []
    if SANITIZE:
        compile_args += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
        link_args += [f"-fsanitize={SANITIZE}"]
    exts = [
        Extension(
            f"convcore.{name}",
            [f"src/convcore/{name}.pyx"]
            + ([f"src/convcore/{c}" for c in KERNEL_SETS] if name == "_isa" else []),
            include_dirs=[np.get_include(), "src/convcore"],
            depends=[f"src/convcore/{h}" for h in HEADERS],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=list(compile_args),
            extra_link_args=list(link_args),
        )
        for name in MODULES
    ]
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": not DEBUG,
        "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives,
                     build_dir=os.path.join("build", f"cython-{CONFIG}"))


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
