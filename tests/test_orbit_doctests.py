"""Run the ``>>>`` examples in flight/orbit's docstrings, so they cannot drift from the code."""

import doctest
import importlib

import pytest

MODULES = ["elements", "frames", "passes", "predict", "saa", "shadow", "sun"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"flight.orbit.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
