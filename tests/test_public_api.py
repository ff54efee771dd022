"""What one package of the project uses from another is declared public: listed in the `__all__` of the
module it comes from (a package's `__all__` for its short API, a module's `__all__` for what other
packages of this project may use). An internal name reached across packages fails here."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bittensor_core", "layers", "integrations", "benchmarks")


def _cross_package_imports() -> list[tuple[str, str, str]]:
    """(importing file, module, name) for each ``from <other package>... import name``."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    top = node.module.split(".")[0]
                    if top in PACKAGES and top != package:
                        found += [(str(path.relative_to(ROOT)), node.module, a.name) for a in node.names]
    return found


IMPORTS = _cross_package_imports()


def test_the_scan_sees_cross_package_imports() -> None:
    assert ("integrations/hf_attention.py", "layers.checkpointing", "checkpoint_mask") in IMPORTS


@pytest.mark.parametrize("where, module, name", IMPORTS, ids=[f"{w}:{m}.{n}" for w, m, n in IMPORTS])
def test_a_name_used_across_packages_is_in_its_modules_all(where: str, module: str, name: str) -> None:
    target = importlib.import_module(module)
    if hasattr(target, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None:
        return  # a submodule, imported as such
    exported = getattr(target, "__all__", None)
    assert exported is not None, f"{module} has no __all__; {where} imports {name} from it"
    assert name in exported, f"{where} imports {name} from {module}, whose __all__ does not list it"
