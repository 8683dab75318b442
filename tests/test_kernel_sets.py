"""The kernel sets in C against scalar loops (tests/c/test_kernel_sets.c):
natively, every set this CPU runs; for ARM64, the NEON set, cross-compiled
with Debian's gcc-aarch64-linux-gnu and run under qemu-user (no ARM machine
is at hand). The Python-level tests check the x86 sets through convcore
too; this is what checks NEON."""
import os
import subprocess

import convcore

from conftest import needs_tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "tests", "c", "test_kernel_sets.c")] + [
    os.path.join(ROOT, "src", "convcore", f"_set_{s}.c")
    for s in ("baseline", "avx2", "avx512", "neon")]
FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "src", "convcore")]


def _build_and_run(cc, out, run=()):
    build = subprocess.run([cc, *FLAGS, *SOURCES, "-lm", "-o", out], capture_output=True,
                           text=True)
    assert build.returncode == 0, build.stderr
    return subprocess.run([*run, out], capture_output=True, text=True, timeout=300)


def test_native_sets_match_scalar_loops(tmp_path):
    """Built by the compiler that builds convcore (CC, as CI's clang build sets it)."""
    result = _build_and_run(os.environ.get("CC", "cc"), str(tmp_path / "test_kernel_sets"))
    assert result.returncode == 0, result.stdout + result.stderr
    reported = [line.split(" ")[0] for line in result.stdout.splitlines()]
    assert reported == [s for s in ("baseline", "avx2", "avx512", "neon")
                        if s == "baseline" or s in convcore._isa.available()]
    assert all(line.endswith("all passed") for line in result.stdout.splitlines())


@needs_tools("aarch64-linux-gnu-gcc", "qemu-aarch64",
             install="apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user")
def test_neon_set_under_qemu(tmp_path):
    result = _build_and_run("aarch64-linux-gnu-gcc", str(tmp_path / "test_kernel_sets"),
                            run=["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["baseline", "neon"]
    assert lines[1] == "neon (4 floats a vector): 79 checks, all passed"
