"""Run the ``>>>`` examples in flight/compute/training's docstrings."""

import doctest
import importlib

import pytest

MODULES = ["", ".spec", ".graph", ".head", ".trainer", ".reference"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"flight.compute.training{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
