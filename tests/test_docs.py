"""The documentation cannot drift: its examples run, its hooks and settings are complete."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from faucet_core import hookspecs
from faucet_core.config import FaucetConfig

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
PAGES = sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_docs_examples_run(example: Path, example_database: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(FAUCET_EXAMPLE_DATABASE=str(example_database), XDG_CACHE_HOME=str(tmp_path))
    subprocess.run([sys.executable, str(example)], check=True, env=env, cwd=tmp_path, timeout=300)


def test_python_in_the_docs_comes_from_tested_files() -> None:
    fences = 0
    for page in PAGES:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
            fences += 1
            lines = [line for line in block.strip().splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith('--8<-- "'), (
                f"{page.relative_to(ROOT)}: python blocks must include a tested file"
            )
            included = ROOT / lines[0].split('"')[1]
            assert included.is_file(), f"{page.relative_to(ROOT)}: no file {included}"
    assert fences > 0


def _hooks() -> list[str]:
    return [
        name
        for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(value, "faucet_spec")
    ]


def test_every_hook_has_a_documentation_heading() -> None:
    page = (DOCS / "plugins.md").read_text()
    for hook in _hooks():
        assert re.search(rf"^#+ `{hook}`", page, flags=re.M), f"plugins.md lacks `{hook}`"


def test_every_hook_is_exercised_by_a_test() -> None:
    sources = "".join(
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name
    )
    assert _hooks() == ["register_commands", "register_warehouses"]
    for hook in _hooks():
        assert hook in sources, f"no test mentions the hook {hook}"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _paths(field.annotation, f"{prefix}{name}.")
        elif name != "connection":
            paths.append(prefix + name)
    return paths


def test_the_configuration_reference_lists_every_setting() -> None:
    page = _load_generator().config_reference()
    for path in _paths(FaucetConfig):
        assert f"| `{path}` |" in page
    assert "| `connection.database` |" in page  # from the DuckDB plugin
    assert "`FAUCET_CACHE__MAX_BYTES`" in page
