import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, Verbosity, settings

# CI: bounded examples, no deadline (timing on a shared 2-core machine is noise),
# derandomized: every CI run tries the same examples (seeded by each test's code),
# so a gate passes or fails on the code, not on the draw. New examples are
# explored where people run the suite (dev, the default: random, with the blob
# that replays a failure printed) and by the thorough profile.
settings.register_profile(
    "ci", max_examples=60, deadline=None, print_blob=True, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=30, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True,
                          verbosity=Verbosity.normal)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Real MNIST for the end-to-end tests: PYCONV_DATA_DIR (CI sets it to the full
# files), else ../shared/data/mnist beside the repository, else the sample of
# 4,000 + 1,000 real images committed in tests/data (tests/data/make_mnist_sample.py).
HERE = os.path.dirname(os.path.abspath(__file__))
MNIST_SAMPLE_DIR = os.path.join(HERE, "data", "mnist-sample")
_SHARED = os.path.join(HERE, "..", "..", "shared", "data", "mnist")
MNIST_DIR = (os.environ.get("PYCONV_DATA_DIR")
             or (_SHARED if os.path.isdir(_SHARED) else MNIST_SAMPLE_DIR))
FULL_MNIST = os.path.normpath(MNIST_DIR) != os.path.normpath(MNIST_SAMPLE_DIR)
needs_full_mnist = pytest.mark.skipif(
    not FULL_MNIST, reason="needs the full MNIST files (70,000 images; set PYCONV_DATA_DIR): "
    "this clone has only the committed sample of 5,000")


def tools_missing(*tools):
    """The system tools (commands) of `tools` not on PATH."""
    return [t for t in tools if not shutil.which(t)]


def needs_tools(*tools, install):
    """Skip a test where a system tool is missing, naming it and the command
    that installs it. .ci/run installs every such tool and fails on the skip."""
    missing = tools_missing(*tools)
    return pytest.mark.skipif(bool(missing), reason=f"needs the system tool(s) "
                              f"{', '.join(missing)}: {install}")


def cpu_lacks(condition, feature, what):
    """Skip where this CPU lacks `feature`: the one kind of skip CI lets through
    (.ci/run fails on any skip whose reason does not start 'CPU lacks')."""
    return pytest.mark.skipif(condition, reason=f"CPU lacks {feature}: {what}")


@pytest.fixture
def threads():
    """Set convcore's thread count inside a test and restore it afterwards."""
    import convcore
    before = convcore.get_num_threads()
    yield convcore.set_num_threads
    convcore.set_num_threads(before)


@pytest.fixture
def kernels():
    """convcore.set_kernels(name, winograd=True, strict=False) inside a test,
    restored afterwards."""
    import convcore
    from convcore import _kernels
    before = _kernels.settings()
    yield convcore.set_kernels
    convcore.set_kernels(*before)


def pytest_report_header(config):
    import convcore
    return (f"MNIST for the end-to-end tests: {os.path.normpath(MNIST_DIR)}"
            f"{'' if FULL_MNIST else ' (the sample)'}\n"
            f"convcore from {os.path.dirname(convcore.__file__)}; "
            f"openmp={convcore.openmp_enabled()} threads={convcore.get_num_threads()} "
            f"simd={convcore.simd_supported()}; "
            f"numpy {np.__version__}")
