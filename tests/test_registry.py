"""The registry of operations (convcore._ops) is the one list: convcore exports
exactly it, and convcore.reference has a twin of each with the same parameters."""
import inspect

import pytest

import convcore
import convcore.reference as ref
from convcore._ops import CONTROLS, OPERATIONS


def test_convcore_exports_the_registry():
    assert convcore.__all__ == [*OPERATIONS, *CONTROLS]
    for name in convcore.__all__:
        assert callable(getattr(convcore, name)), name


@pytest.mark.parametrize("name", OPERATIONS)
def test_reference_twin_has_the_same_parameters(name):
    ours, twin = inspect.signature(getattr(convcore, name)), inspect.signature(getattr(ref, name))
    assert list(ours.parameters) == list(twin.parameters)
    assert [p.default for p in ours.parameters.values()] == \
        [p.default for p in twin.parameters.values()]
    assert name in ref.__all__
