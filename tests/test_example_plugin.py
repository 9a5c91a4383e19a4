"""The example plugin in examples/: installed, found through its entry point, read from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "faucet-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a folder of its own (not into the venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True,
    )  # fmt: skip
    return target


def _python(site: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("FAUCET_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout


def test_the_example_plugin_is_discovered_and_read(installed: Path, tmp_path: Path) -> None:
    output = _python(
        installed,
        f"""
import json
from faucet_core import get_batch_reader, installed_plugins
info = next(p for p in installed_plugins() if "synthetic" in p.warehouses)
with get_batch_reader(datastore="synthetic", rows=3000, table_name="numbers", chunk_size=700,
                      batch_size=128, test_split_percent=10, label_columns=["label"],
                      cache_dir={str(tmp_path)!r}) as reader:
    train = [i for b in reader.iter_epoch() for i in b["features"]["id"].tolist()]
    evaluation = [i for b in reader.iter_eval() for i in b["features"]["id"].tolist()]
print(json.dumps({{"dist": info.distribution, "version": info.version,
                   "train": train, "eval": evaluation}}))
""",
    )
    result = json.loads(output)
    assert (result["dist"], result["version"]) == ("faucet-example-plugin", "0.1.0")
    assert sorted(result["train"] + result["eval"]) == list(range(3000))
    assert 150 < len(result["eval"]) < 450


def test_the_example_plugin_is_not_seen_without_installing_it() -> None:
    output = _python(
        Path("/nonexistent"), "from faucet_core import warehouses; print(sorted(warehouses()))"
    )
    assert "synthetic" not in output
