"""Module-scoped fixtures: the small problems of ``curvature_problems``."""

import pytest
from curvature_problems import make_mlp, make_transformer, make_wide_mlp


@pytest.fixture(scope="module")
def mlp():
    return make_mlp()


@pytest.fixture(scope="module")
def transformer():
    return make_transformer()


@pytest.fixture(scope="module")
def wide_mlp():
    return make_wide_mlp()
