"""Package boundaries: the core imports no plugin, and plugins import their SDK lazily."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _modules_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport sys; print('\\n'.join(sys.modules))"
    env = {k: v for k, v in os.environ.items() if k != "FAUCET_DISABLE_PLUGIN_AUTOLOAD"}
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env
    ).stdout
    return set(output.split())


def test_core_imports_no_plugin_package() -> None:
    modules = _modules_after(
        "import faucet_core, faucet_core.reader, faucet_core.config, faucet_core.cli"
    )
    assert not {m for m in modules if m.startswith(("faucet_duckdb", "duckdb", "faucet_bigquery"))}
    # Google's client libraries (the google namespace) are the BigQuery plugin's; the CRC-32C
    # module the cache checksums with (google_crc32c) stands alone.
    assert not {m for m in modules if m == "google" or m.startswith("google.")}


def test_listing_plugins_and_validating_config_do_not_import_duckdb() -> None:
    modules = _modules_after(
        """
        import tempfile, pathlib
        from faucet_core import installed_plugins, load_config
        assert any("duckdb" in p.warehouses for p in installed_plugins())
        database = pathlib.Path(tempfile.mkdtemp()) / "w.duckdb"
        database.touch()
        load_config(datastore="duckdb", database=str(database), table_name="t")
        """
    )
    assert "faucet_duckdb.plugin" in modules
    assert "duckdb" not in modules


def test_arrow_batches_are_served_without_importing_pandas(table_path: Path) -> None:
    # pandas is an output format: a reader serving Arrow (a worker, a Ray task) loads it
    # nowhere (it costs a fraction of a second and tens of MiB per process).
    modules = _modules_after(
        f"""
        import tempfile
        from faucet_core import get_batch_reader
        reader = get_batch_reader(
            datastore="duckdb", database={str(table_path)!r}, table_name="t", split_key="id",
            label_columns=["label"], output="arrow", test_split_percent=20, chunk_size=700,
            cache_dir=tempfile.mkdtemp(),
        )
        assert sum(b["features"].num_rows for b in reader.iter_epoch()) > 0
        assert sum(b["features"].num_rows for b in reader.iter_eval()) > 0
        reader.close()
        """
    )
    assert "faucet_duckdb.warehouse" in modules
    assert "pandas" not in modules


def test_postgres_serves_arrow_batches_without_importing_pandas(postgres_url: str) -> None:
    # A table keyed by one integer column: its hashes are counted and computed in numpy,
    # a first chunk is read by itself, and the ADBC driver reads the rows.
    modules = _modules_after(
        f"""
        import tempfile
        from faucet_core import get_batch_reader
        reader = get_batch_reader(
            datastore="postgres", dsn={postgres_url!r}, table_name="t", split_key="id",
            label_columns=["label"], output="arrow", chunk_size=500, cache_dir=tempfile.mkdtemp(),
        )
        assert reader.plan.key == ("id",) and len(reader.plan.every_chunk) >= 8
        assert sum(b["features"].num_rows for b in reader.iter_epoch()) > 0
        reader.close()
        """
    )
    assert "faucet_postgres.integer_hashes" in modules
    assert "adbc_driver_postgresql" in modules
    assert not {"pandas", "polars", "pyarrow.dataset"} & modules
