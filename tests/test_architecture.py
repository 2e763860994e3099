"""The package's shape: layers import only downward, nothing imports the CLI, every
shipped model is in the registry and declares units, and settings are set in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vtrial as vt

PACKAGE = Path(vt.__file__).resolve().parent

#: Layer of each top-level module or subpackage of vtrial (see ../shared/DESIGN.md and the
#: README's map). A module may import only modules of its own layer or below.
LAYERS = {
    "errors": 0, "units": 0, "settings": 0, "schema": 0, "version": 0, "limits": 0,
    "models": 1, "analysis": 1,
    "engine": 2,
    "design": 3,
    "estimation": 4, "assays": 4,
    "io": 5,
    "jobs": 6,
    "cli": 7, "__main__": 7,
}


def _part(module: str) -> str:
    """`vtrial.engine.solve` -> `engine`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("vtrial")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("vtrial"):
            if node.module == "vtrial":  # `from vtrial import x`: x is a module of the root
                found += [(node.lineno, f"vtrial.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts in (("__init__.py",), ("__main__.py",)):
            continue  # the public facade re-exports from every layer; `python -m vtrial` runs the CLI
        yield path, rel.parts[0].removesuffix(".py")


def test_every_module_has_a_layer():
    assert {part for _, part in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("path,part", list(_modules()), ids=lambda x: str(x.relative_to(PACKAGE)) if isinstance(x, Path) else None)
def test_imports_only_point_down(path, part):
    own = LAYERS[part]
    for line, module in _imports(path):
        target = _part(module)
        assert target in LAYERS, f"{path.name}:{line} imports {module}, which has no layer"
        assert target != "cli" or part == "__main__", f"{path.name}:{line} imports the CLI"
        assert LAYERS[target] <= own, f"{path.relative_to(PACKAGE)}:{line} (layer {own}) imports {module} (layer {LAYERS[target]})"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from vtrial.io.config import read_toml\nimport vtrial.cli\n")
    assert [m for _, m in _imports(bad)] == ["vtrial.io.config", "vtrial.cli"]
    assert LAYERS[_part("vtrial.io.config")] > LAYERS["engine"]


def test_x64_and_error_mode_are_set_in_one_place():
    offenders = []
    for path, _ in _modules():
        text = path.read_text()
        if ("jax_enable_x64" in text or "EQX_ON_ERROR" in text) and path.name != "settings.py":
            offenders.append(path.name)
    assert offenders == []


def test_every_shipped_model_is_registered_with_units_endpoints_and_panels():
    for name in vt.models.REGISTRY:
        model = vt.models.get_model(name)
        assert model.name == name
        for obs in model.observables:
            assert obs.unit, f"{name}.{obs.name} has no unit"
        for panel in model.report_panels():
            assert panel.observable in model.observable_names
        for endpoint in model.endpoints:
            assert endpoint.observable in model.observable_names


def test_generic_code_never_names_a_model_observable():
    """Model facts live with the models: no generic module names paw volume."""
    for path, part in _modules():
        if part in ("models", "assays"):
            continue
        assert "paw" not in path.read_text(), path


def test_import_vtrial_loads_no_heavy_library_and_every_public_name_resolves():
    """`import vtrial` stays under a second: JAX, pandas, matplotlib, pydantic and the CLI's
    libraries load only when a name that needs them is used (issue 22)."""
    import os
    import subprocess
    import sys

    code = ("import sys, vtrial; print(sorted({'jax', 'diffrax', 'pandas', 'matplotlib', 'pyarrow', 'pydantic', 'scipy', "
            "'typer', 'rich', 'optax', 'pint'} & set(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    for name in vt.__all__:
        assert getattr(vt, name) is not None, name
    assert set(vt.__all__) <= set(dir(vt))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        vt.nonexistent  # noqa: B018
