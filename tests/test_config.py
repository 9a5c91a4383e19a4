"""The config loader: files, environment, keywords, and errors that name their field."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from faucet_core import ConfigError, UnknownDatastore, Warehouse, hookimpl
from faucet_core.config import default_cache_dir
from faucet_core.settings import config_from_kwargs, env_settings, load_config
from faucet_core.suggestions import closest
from faucet_duckdb import DuckDBConnection, DuckDBWarehouse
from tests.conftest import ascii_locale


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    path.touch()  # the connection model checks that the file exists
    return path


def _files(tmp_path: Path, database: Path) -> list[Path]:
    yaml_file = tmp_path / "faucet.yaml"
    yaml_file.write_text(
        f"datastore: duckdb\nconnection:\n  database: {database}\nsource:\n  table: t\n"
        "  ds: 2024-01-31\n  split_key: id\nbatch_size: 64\ncache:\n  max_bytes: 2GiB\n"
    )
    toml_file = tmp_path / "faucet.toml"
    toml_file.write_text(
        f'datastore = "duckdb"\nbatch_size = 64\n[connection]\ndatabase = "{database}"\n'
        '[source]\ntable = "t"\nds = 2024-01-31\nsplit_key = "id"\n[cache]\nmax_bytes = "2GiB"\n'
    )
    json_file = tmp_path / "faucet.json"
    json_file.write_text(json.dumps({
        "datastore": "duckdb", "connection": {"database": str(database)}, "batch_size": 64,
        "source": {"table": "t", "ds": "2024-01-31", "split_key": "id"},
        "cache": {"max_bytes": "2GiB"},
    }))  # fmt: skip
    return [yaml_file, toml_file, json_file]


def test_yaml_toml_and_json_load_the_same_config(tmp_path: Path, database: Path) -> None:
    files = _files(tmp_path, database)
    files.append(files[0].rename(tmp_path / "faucet.yml"))  # the other YAML suffix
    configs = [load_config(path) for path in files[1:]]
    assert configs[0] == configs[1] == configs[2]
    config = configs[0]
    assert isinstance(config.connection, DuckDBConnection)
    assert config.source.ds == "2024-01-31"  # a YAML/TOML date becomes its text
    assert config.source.split_key == ["id"]
    assert config.cache.max_bytes == 2 * 2**30


def test_keywords_map_to_their_sections(database: Path) -> None:
    settings = config_from_kwargs({
        "table_name": "t", "ds": "2024-01-01", "cache_dir": "/c", "use_cache": False,
        "retry_attempts": 2, "chunk_timeout": 5, "batch_size": 7, "database": "d",
    })  # fmt: skip
    assert settings == {
        "source": {"table": "t", "ds": "2024-01-01"},
        "cache": {"dir": "/c", "enabled": False},
        "retry": {"attempts": 2, "chunk_timeout": 5},
        "batch_size": 7,
        "connection": {"database": "d"},
    }
    config = load_config(datastore="duckdb", database=str(database), table_name="t")
    assert config.connection.database == database
    assert config.source.table == "t"


def test_columns_a_setting_is_keyed_by_are_named_as_the_warehouse_stores_them() -> None:
    """Snowflake stores a plain name upper-cased: so are the columns ``pad`` names; a key
    that is no name (a number) is reported as such, not renamed."""
    snowflake = {"datastore": "snowflake", "account": "a", "user": "u", "table_name": "t"}
    config = load_config(**snowflake, columns=["tags", "label"], pad={"tags": 4})
    assert config.source.pad == {"TAGS": 4}
    assert config.source.columns == ["TAGS", "LABEL"]
    problems = _problems_of(lambda: load_config(**snowflake, pad={1: 4}))
    assert list(problems) == ["source.pad.1.[key]"]
    assert "valid string" in problems["source.pad.1.[key]"]


def test_columns_of_lists_and_groups_are_named_as_the_warehouse_stores_them() -> None:
    """The same for the names listed by ``columns``, ``label_columns`` and each input
    group (a quoted name is kept as written); an item that is no name is reported."""
    snowflake = {"datastore": "snowflake", "account": "a", "user": "u", "table_name": "t"}
    config = load_config(
        **snowflake, columns=["id", "x1", '"emb"', "label"], label_columns=["label"],
        inputs={"user": ["x1", '"emb"'], "item": ["id"]},
    )  # fmt: skip
    assert config.source.columns == ["ID", "X1", "emb", "LABEL"]
    assert config.source.label_columns == ["LABEL"]
    assert config.source.inputs == {"user": ["X1", "emb"], "item": ["ID"]}
    problems = _problems_of(lambda: load_config(**snowflake, columns=["id", 3]))
    assert list(problems) == ["source.columns.1"]


def test_every_problem_is_reported_with_its_path_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "datastore: duckdb\nbatch_size: 0\nsurprise: 1\nsource: {}\n"
        "connection:\n  databse: w.duckdb\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(bad)
    paths = {path for path, _ in raised.value.problems}
    assert paths == {"batch_size", "surprise", "source", "connection.databse"}
    assert str(bad) in str(raised.value)
    messages = dict(raised.value.problems)
    assert messages["connection.databse"] == "unknown setting; did you mean connection.database?"
    assert "exactly one of table, query or files" in messages["source"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("faucet.ini", "x", "unknown config file type '.ini'"),
        ("faucet.yaml", "a: [1", "cannot parse the file"),
        ("faucet.toml", "name = 'caf\xe9'", "cannot parse the file: 'utf-8' codec"),  # Latin-1
        ("faucet.json", "[1, 2]", "the file must hold a mapping of settings"),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path)
    assert raised.value.origin == str(path)
    ((where, said),) = raised.value.problems
    assert where == "" and said.startswith(message)  # the file's problem, of no field
    missing = tmp_path / "missing.yaml"
    assert _problems_of(lambda: load_config(missing)) == {
        "": "cannot read the file: No such file or directory"
    }


def test_environment_variables_fill_in_secrets(
    tmp_path: Path, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text("datastore: duckdb\nconnection: {database: '${DB}'}\nsource: {table: t}\n")
    monkeypatch.setenv("DB", str(database))
    assert load_config(path).connection.database == database
    monkeypatch.delenv("DB")
    with pytest.raises(
        ConfigError, match=r"connection\.database: environment variable DB is not set"
    ):
        load_config(path)
    path.write_text(
        "datastore: ${STORE}\nconnection: {database: '${DIR}/${FILE}'}\n"
        "source: {table: t, label_columns: [label, '${LABEL}']}\n"
    )
    monkeypatch.setenv("DIR", str(database.parent))
    assert _problems_of(lambda: load_config(path)) == {
        "datastore": "environment variable STORE is not set",
        "connection.database": "environment variable FILE is not set",
        "source.label_columns[1]": "environment variable LABEL is not set",
    }
    monkeypatch.setenv("STORE", "duckdb")
    monkeypatch.setenv("FILE", database.name)
    monkeypatch.setenv("LABEL", "y")
    config = load_config(path)
    assert config.connection.database == database
    assert config.source.label_columns == ["label", "y"]


def test_precedence_keywords_then_environment_then_file(
    tmp_path: Path, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text(
        f"datastore: duckdb\nconnection: {{database: '{database}'}}\nsource: {{table: t}}\n"
        "batch_size: 10\nepochs: 3\nseed: 1\n"
    )
    environ = {
        "FAUCET_BATCH_SIZE": "20",
        "FAUCET_EPOCHS": "4",
        "FAUCET_CACHE__MAX_BYTES": "1GiB",
        "FAUCET_CONNECTION__THREADS": "2",
        "FAUCET_SOURCE__COLUMNS": ' ["id", "label"]',  # a leading space, as a shell may leave
        "FAUCET_SOURCE__LABEL_COLUMNS": "label",
        "FAUCET_SOMETHING_ELSE": "ignored",
    }
    assert load_config(path).batch_size == 10
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config = load_config(path, batch_size=30)
    assert (config.batch_size, config.epochs, config.seed) == (30, 4, 1)
    assert config.cache.max_bytes == 2**30
    assert config.connection.threads == 2
    assert config.source.columns == ["id", "label"]
    assert config.source.label_columns == ["label"]
    assert "something_else" not in env_settings()


def test_a_config_pickles_without_validating_again(database: Path) -> None:
    config = load_config(datastore="duckdb", database=str(database), table_name="t")
    database.unlink()  # validating the connection again would now fail
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert isinstance(copy.connection, DuckDBConnection)


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"cache_max_bytes": "ten gigs"}, "cache.max_bytes", "not a size"),
        ({"test_split_percent": 100}, "test_split_percent", "less than 100"),
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"chunk_size": 0}, "chunk_size", "greater than or equal to 1"),
        ({"columns": ["id", "id"]}, "source", "lists a column twice"),
        ({"columns": ["id"], "label_columns": ["label"]}, "source", "not among columns"),
        ({"query": "SELECT 1"}, "source", "found: table, query"),
        ({"output": "excel"}, "output", "'pandas', 'polars', 'numpy' or 'arrow'"),
    ],
)
def test_bad_values_name_their_field(
    database: Path,
    settings: dict[str, object],
    path: str,
    message: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(datastore="duckdb", database=str(database), table_name="t",
                    **settings)  # fmt: skip
    problems = dict(raised.value.problems)
    assert path in problems and message in problems[path], problems
    assert raised.value.origin == "keyword arguments"


def test_sizes_take_units(database: Path) -> None:
    for text, expected in (("10GiB", 10 * 2**30), ("512 MB", 512 * 10**6), (1234, 1234)):
        config = load_config(datastore="duckdb", database=str(database), table_name="t",
                             cache_max_bytes=text)  # fmt: skip
        assert config.cache.max_bytes == expected


def test_an_unknown_datastore_lists_the_warehouses_there_are() -> None:
    with pytest.raises(UnknownDatastore) as raised:
        load_config(datastore="snowflak", table_name="t", batch_size=0)
    problems = dict(raised.value.problems)
    assert (
        "installed warehouses: bigquery, chunk-by-chunk-duckdb, chunk-ordered-duckdb, "
        "counting-duckdb, duckdb, feast, postgres, redshift, snowflake" in problems["datastore"]
    )
    assert "batch_size" in problems  # the other problems are still reported


def _problems_of(load: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        load()  # type: ignore[operator]
    return dict(raised.value.problems)


@pytest.mark.parametrize(
    ("written", "meant"),
    [("chunksize", "chunk_size"), ("epoch", "epochs"), ("bach_size", "batch_size")],
)
def test_a_misspelt_setting_names_the_one_it_probably_meant_however_it_came(
    tmp_path: Path, database: Path, monkeypatch: pytest.MonkeyPatch, written: str, meant: str
) -> None:
    settings = {"datastore": "duckdb", "database": str(database), "table_name": "t"}
    keyword = _problems_of(lambda: load_config(**settings, **{written: 10}))
    assert keyword == {written: f"unknown setting; did you mean {meant}?"}

    path = tmp_path / "faucet.yaml"
    path.write_text(
        f"datastore: duckdb\nconnection: {{database: '{database}'}}\nsource: {{table: t}}\n"
        f"{written}: 10\n"
    )
    in_file = _problems_of(lambda: load_config(path))
    assert in_file == {written: f"unknown setting; did you mean {meant}?"}

    variable = f"FAUCET_{written.upper()}"
    monkeypatch.setenv(variable, "10")
    from_environment = _problems_of(lambda: load_config(**settings))
    assert from_environment == {variable: f"names no setting; did you mean FAUCET_{meant.upper()}?"}


def test_settings_of_a_section_are_suggested_in_their_section(
    tmp_path: Path, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text(
        f"datastore: duckdb\nconnection: {{database: '{database}', thread: 2}}\n"
        "source: {table: t, splitkey: id}\ncache: {dirr: /c}\nsplit_key: id\n"
        "preprocessing: {columns: {x: {scal: standard}}}\nsurprise: 1\n"
    )
    assert _problems_of(lambda: load_config(path)) == {
        "connection.thread": "unknown setting; did you mean connection.threads?",
        "source.splitkey": "unknown setting; did you mean source.split_key?",
        "cache.dirr": "unknown setting; did you mean cache.dir?",
        "preprocessing.columns.x.scal": (
            "unknown setting; did you mean preprocessing.columns.x.scale?"
        ),
        # A setting of a section, given at the top: the section's is meant.
        "split_key": "unknown setting; did you mean source.split_key?",
        "surprise": "unknown setting",
    }
    keyword = _problems_of(
        lambda: load_config(
            datastore="duckdb", database=str(database), tabel_name="t", nope=1, thread=2
        )
    )
    assert keyword["tabel_name"] == "unknown setting; did you mean table_name?"
    assert keyword["thread"] == "unknown setting; did you mean threads?"
    in_bytes = _problems_of(
        lambda: load_config(datastore=b"duckdb", database=str(database), thread=2)
    )
    assert in_bytes["thread"] == "unknown setting; did you mean threads?"
    assert keyword["nope"] == (
        "unknown setting (the connection takes: database, threads, memory_limit, scratch_dir)"
    )
    monkeypatch.setenv("FAUCET_CACHE__MAXBYTES", "1GiB")
    monkeypatch.setenv("FAUCET_CACHES__DIR", "/c")
    monkeypatch.setenv("FAUCET_TEST_CACHE", "/elsewhere")  # another tool's: still ignored
    assert _problems_of(lambda: load_config(path)) == {
        "FAUCET_CACHE__MAXBYTES": "names no setting; did you mean FAUCET_CACHE__MAX_BYTES?",
        "FAUCET_CACHES__DIR": "names no setting; did you mean FAUCET_CACHE__DIR?",
    }


def test_every_variable_is_looked_at_and_only_close_names_are_suggested(
    database: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Variables naming settings (also the connection's) are taken whatever comes after
    them; of the others, only those at least 80% alike a setting are misspellings, in
    their own section first (``preproc`` is 70% ``preprocessing``: another tool's, maybe)."""
    variables = {
        "FAUCET_CONNECTION__THREADS": "2", "FAUCET_EPOCHS": "2",
        "FAUCET_CACHE__DIR": str(tmp_path / "cache"),
        "FAUCET_PREPROC": "1", "FAUCET_CACHE__DIREC": "x", "FAUCET_PREPROC__AUTO": "1",
        "FAUCET_CACHE__ZZZ": "1", "FAUCET_ZZZ__DIR": "1",
        "FAUCET_CONECTION__THREADS": "2", "FAUCET_CACHE__MAX_BYTE": "1",
        "FAUCET_CACHES__DIR__X": "1",
    }  # fmt: skip
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    problems = _problems_of(
        lambda: load_config(datastore="duckdb", database=str(database), table_name="t")
    )
    assert problems == {
        f"FAUCET_{written}": f"names no setting; did you mean FAUCET_{meant}?"
        for written, meant in (
            ("CONECTION__THREADS", "CONNECTION__THREADS"),
            ("CACHE__MAX_BYTE", "CACHE__MAX_BYTES"),
            ("CACHES__DIR__X", "CACHE__DIR__X"),
        )
    }


def test_a_flat_keyword_and_its_whole_section_are_merged(database: Path) -> None:
    config = load_config(datastore="duckdb", database=str(database), table_name="t",
                         source={"label_columns": ["label"]})  # fmt: skip
    assert (config.source.table, config.source.label_columns) == ("t", ["label"])


def test_errors_say_where_the_settings_came_from(
    tmp_path: Path, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text(f"datastore: duckdb\nconnection: {{database: '{database}'}}\n"
                    "source: {table: t}\n")  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        load_config(path, batch_size=0)
    assert str(raised.value).startswith(
        f"invalid Faucet config in {path} (with keyword overrides):\n  batch_size:"
    )
    monkeypatch.setenv("FAUCET_BACH_SIZE", "2")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(
        "invalid Faucet config in FAUCET_* environment variables:\n  FAUCET_BACH_SIZE:"
    )


def test_closest_prefers_the_same_name_spelt_otherwise() -> None:
    assert closest("chunksize", ["chunk_timeout", "chunk_size"]) == "chunk_size"
    # Even where another name is more alike, letter by letter.
    assert closest("abcd", ["abcdx", "a_b_c_d"]) == "a_b_c_d"
    assert closest("abcd", ["abcdx", "a-b-c-d"]) == "a-b-c-d"
    assert closest("epoch", ["epochs", "seed"]) == "epochs"
    assert closest("zzz", ["epochs", "seed"]) is None


def test_suggestions_look_in_the_same_section_first_then_everywhere_but_closer(
    tmp_path: Path, database: Path
) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text(
        f"datastore: duckdb\nconnection: {{database: '{database}', scratch: /s}}\n"
        "source: {table: t}\nmemory_limit: 1GB\ncolumns: [a]\nscratch: /s\n"
    )
    assert _problems_of(lambda: load_config(path)) == {
        # In its own section, a looser likeness is enough...
        "connection.scratch": "unknown setting; did you mean connection.scratch_dir?",
        # ...elsewhere, a closer one is needed.
        "scratch": "unknown setting",
        # A connection's setting at the top, and one whose name two sections have: the
        # first section that has it.
        "memory_limit": "unknown setting; did you mean connection.memory_limit?",
        "columns": "unknown setting; did you mean source.columns?",
    }


def test_a_missing_setting_is_required(tmp_path: Path) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text("source: {table: t}\n")
    assert _problems_of(lambda: load_config(path)) == {"datastore": "required"}


def test_the_default_cache_folder_follows_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "faucet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "faucet"


def test_a_config_error_says_each_problem_on_its_own_line() -> None:
    error = ConfigError([("source.table", "required"), ("", "cannot parse the file")], "f.yaml")
    assert str(error) == (
        "invalid Faucet config in f.yaml:\n  source.table: required\n  cannot parse the file"
    )
    assert str(ConfigError([("epochs", "bad")])) == "invalid Faucet config:\n  epochs: bad"


def test_an_unset_variable_is_reported_with_the_file_that_names_it(tmp_path: Path) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text("datastore: duckdb\nconnection: {database: '${NO_SUCH_VARIABLE}'}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.origin == str(path)
    assert str(raised.value).startswith(f"invalid Faucet config in {path}:")


class _NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Replica(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str


class _Replicated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: list[_Replica]


class _Unconfigured(DuckDBWarehouse):
    name = "unconfigured"
    connection_model = _NoSettings


class _Replicating(DuckDBWarehouse):
    name = "replicating"
    connection_model = _Replicated


class _Plugin:
    @hookimpl
    def register_warehouses(self, register: Callable[[type[Warehouse]], None]) -> None:
        register(_Unconfigured)
        register(_Replicating)


def test_a_connection_that_takes_no_settings_says_so(register: Callable[[object], None]) -> None:
    register(_Plugin())
    said = "unknown setting (the connection takes: nothing)"
    assert _problems_of(
        lambda: load_config(datastore="unconfigured", table_name="t", connection={"account": "x"})
    ) == {"connection.account": said}
    assert _problems_of(
        lambda: load_config(datastore="unconfigured", table_name="t", account="x")
    ) == {"account": said}


def test_an_unknown_setting_in_a_list_of_a_connection_is_reported(
    register: Callable[[object], None],
) -> None:
    register(_Plugin())
    connection = {"replicas": [{"host": "a"}, {"host": "b", "prot": 1}]}
    problems = _problems_of(
        lambda: load_config(datastore="replicating", table_name="t", connection=connection)
    )
    assert list(problems) == ["connection.replicas.1.prot"]
    assert problems["connection.replicas.1.prot"].startswith("unknown setting")


def test_a_misspelt_setting_of_a_section_of_the_connection_is_suggested_there() -> None:
    iam = {"workgroup": "analytics", "regoin": "eu-west-1"}
    problems = _problems_of(
        lambda: load_config(datastore="redshift", table_name="t", host="h", iam=iam)
    )
    assert problems == {
        "connection.iam.regoin": "unknown setting; did you mean connection.iam.region?"
    }


def test_a_config_file_is_read_as_utf8_whatever_the_locale(tmp_path: Path, database: Path) -> None:
    path = tmp_path / "faucet.yaml"
    path.write_text(
        f"datastore: duckdb\nconnection: {{database: '{database}'}}\n"
        "source: {table: données, label_columns: [étiquette]}\n",
        encoding="utf-8",
    )
    with ascii_locale():
        config = load_config(path)
    assert (config.source.table, config.source.label_columns) == ("données", ["étiquette"])


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(90, 90), ("45", 45), ("1.5s", 1.5), (" 30m ", 1_800), ("12h", 43_200), ("2d", 172_800)],
)
def test_a_plan_ttl_is_seconds_or_a_duration_with_its_unit(written: object, seconds: float) -> None:
    config = load_config(datastore="duckdb", table_name="t", cache={"plan_ttl": written})
    assert config.cache.plan_ttl == seconds


def test_a_plan_ttl_that_is_no_duration_is_refused_naming_it() -> None:
    problems = _problems_of(
        lambda: load_config(datastore="duckdb", table_name="t", cache={"plan_ttl": "soon"})
    )
    assert list(problems) == ["cache.plan_ttl"]
    assert "not a duration: 'soon' (use seconds or 30s, 10m, 12h, 2d)" in problems["cache.plan_ttl"]
