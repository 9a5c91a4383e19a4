"""The example of the Feast docs page runs as written: its config and its training script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.feast.conftest import EXAMPLE, ROOT


def _run(feast_repo: Path, tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(FAUCET_FEAST_REPO=str(feast_repo), XDG_CACHE_HOME=str(tmp_path), FEAST_USAGE="False")
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_training_example_runs(feast_repo: Path, tmp_path: Path) -> None:
    done = _run(feast_repo, tmp_path, sys.executable, str(EXAMPLE / "train.py"))
    assert done.returncode == 0, done.stderr
    assert "epoch 2: " in done.stdout and "eval accuracy" in done.stdout


def test_the_example_config_validates_against_the_registry(
    feast_repo: Path, tmp_path: Path
) -> None:
    faucet = str(Path(sys.executable).parent / "faucet")
    done = _run(feast_repo, tmp_path, faucet, "validate", str(EXAMPLE / "faucet.yaml"))
    assert done.returncode == 0, done.stderr
    assert "valid (feast, source 1 files)" in done.stdout
    assert "planning runs one counting query" in done.stdout
