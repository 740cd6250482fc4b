"""The update rules depend on jax, optax, chex (and NumPy) only; the table alone knows names.

Read from the sources (the modules' import statements), so the check holds whatever is imported
first: a rule module never imports ``dynamics.registry``, ``dynamics.train``, flax or
ml_collections, and never registers itself; only ``dynamics/optim/registry.py`` (the table) does
both name resolution and registration.
"""

import ast
import pathlib

import pytest

import dynamics.optim

OPTIM = pathlib.Path(dynamics.optim.__file__).parent
RULE_MODULES = sorted(p for p in OPTIM.glob("*.py") if p.name not in ("__init__.py", "registry.py"))
ALLOWED = {"__future__", "chex", "collections", "dataclasses", "functools", "jax", "math"}
ALLOWED |= {"numpy", "optax", "typing"}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module


@pytest.mark.parametrize("path", RULE_MODULES, ids=lambda p: p.name)
def test_rule_modules_import_only_jax_optax_chex_and_sibling_rules(path):
    for module in _imports(path):
        top = module.split(".")[0]
        if top == "dynamics":
            assert module.startswith("dynamics.optim") and module != "dynamics.optim.registry", (
                f"{path.name} imports {module}"
            )
        else:
            assert top in ALLOWED, f"{path.name} imports {module}"
    assert ".register(" not in path.read_text(), f"{path.name} registers itself"


def test_no_private_helper_is_imported_across_modules():
    for path in [*RULE_MODULES, OPTIM / "registry.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dynamics"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
