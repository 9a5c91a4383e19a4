"""The feast datastore without Feast: its settings are checked, and reading says what to
install (Feast itself is tested in tests/feast, in a virtualenv of its own)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from faucet_core import ConfigError, PermanentWarehouseError, load_config, warehouses
from faucet_feast import FeastConnection, FeastWarehouse


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "feature_store.yaml").write_text("project: p\n")
    return tmp_path


def test_the_plugin_provides_the_feast_datastore() -> None:
    assert warehouses()["feast"] is FeastWarehouse


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "give exactly one of features"),
        ({"features": ["a:b"], "feature_service": "s"}, "give exactly one of features"),
        ({"features": ["a:b", "a:b"]}, "features lists a feature twice"),
        ({"features": ["a"]}, r"features: \['a'\] are not view:feature references"),
        ({"features": "a:b", "memory_limit": "lots"}, "memory_limit: not a size: 'lots'"),
    ],
)
def test_settings_are_checked_without_feast(
    repo: Path, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(datastore="feast", repo_path=str(repo), files=["e.parquet"], **settings)


def test_a_lone_feature_is_a_list_and_the_yaml_defaults_to_the_repos(repo: Path) -> None:
    config = load_config(
        datastore="feast", repo_path=str(repo), features="v:f", files=["e.parquet"]
    )
    connection = config.connection
    assert isinstance(connection, FeastConnection)
    assert connection.features == ["v:f"] and connection.yaml_path == repo / "feature_store.yaml"
    elsewhere = FeastConnection(feature_store_yaml=repo / "feature_store.yaml", features=["v:f"])
    assert elsewhere.repo == repo


def test_reading_without_feast_says_what_to_install(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "feast", None)  # importing it fails, as when missing
    monkeypatch.delitem(sys.modules, "faucet_feast.repo", raising=False)
    warehouse = FeastWarehouse(FeastConnection(repo_path=repo, features=["v:f"]))
    with pytest.raises(PermanentWarehouseError, match=r"pip install 'faucetml\[feast\]'"):
        warehouse.features()
    warehouse.close()


def test_a_snowflake_offline_store_hands_its_settings_to_the_snowflake_warehouse() -> None:
    from types import SimpleNamespace

    from faucet_feast.pushdown import TARGETS

    target = TARGETS["snowflake.offline"]
    store = SimpleNamespace(
        account="acme-xy12345", user="TRAINER", password="s3cret", role="ML",
        warehouse="WH", database="FEATURES", schema_="PUBLIC", authenticator=None,
        connection_name=None, private_key="/keys/rsa.p8", private_key_passphrase=None,
        private_key_content=None,
    )  # fmt: skip
    settings = target.connection(store)
    assert settings == {
        "account": "acme-xy12345", "user": "TRAINER", "password": "s3cret", "role": "ML",
        "warehouse": "WH", "database": "FEATURES", "schema": "PUBLIC",
        "private_key_path": "/keys/rsa.p8",
    }  # fmt: skip
    assert target.datastore == "snowflake"
    assert target.quote_table('features."Orders"') == 'features."Orders"'
    with pytest.raises(PermanentWarehouseError, match="table name"):
        target.quote_table("orders; DROP TABLE t")
    assert target.unusable(store, True) is None
    assert "temporary table" in (target.unusable(store, False) or "")
