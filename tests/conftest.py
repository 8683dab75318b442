import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Verbosity, settings

# CI: bounded examples, no deadline (timing on a shared 2-core machine is noise),
# and the seed printed so a failure can be replayed (--hypothesis-seed=N).
settings.register_profile(
    "ci", max_examples=60, deadline=None, print_blob=True, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=30, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True,
                          verbosity=Verbosity.normal)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

MNIST_DIR = os.environ.get("PYCONV_DATA_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


@pytest.fixture
def threads():
    """Set convcore's thread count inside a test and restore it afterwards."""
    import convcore
    before = convcore.get_num_threads()
    yield convcore.set_num_threads
    convcore.set_num_threads(before)


@pytest.fixture
def kernels():
    """convcore.set_kernels(name, winograd=True) inside a test, restored afterwards."""
    import convcore
    before = convcore.get_kernels(), convcore.winograd_enabled()
    yield convcore.set_kernels
    convcore.set_kernels(*before)


def pytest_report_header(config):
    import convcore
    return (f"convcore from {os.path.dirname(convcore.__file__)}; "
            f"openmp={convcore.openmp_enabled()} threads={convcore.get_num_threads()} "
            f"simd={convcore.simd_supported()}; "
            f"numpy {np.__version__}")
