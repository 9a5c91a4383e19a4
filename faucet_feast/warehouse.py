"""The Feast warehouse: point-in-time correct training rows from a Feast feature store.

A source is a set of features (``view:feature`` references, or a feature service) of a
Feast repo, joined by Feast to entity rows (``source.files``, or ``source.table`` /
``source.query`` in the offline store), each row's features as they were at its
``event_timestamp``. This warehouse plans and reads nothing itself: it has Feast build
the retrieval, then hands it to another warehouse plugin, found through the plugin
registry, which the core drives as usual.

- **Pushed down**: where the offline store gives the retrieval as SQL
  (``RetrievalJob.to_sql()``) and a Faucet plugin runs that warehouse's SQL
  (:data:`~faucet_feast.pushdown.TARGETS`), the SQL is that plugin's query source: the
  join runs in the warehouse, which counts, copies and reads chunks as for any query.
- **Spilled**: otherwise (the DuckDB offline store) the retrieval is written once to
  local Parquet files in a scratch folder (:mod:`faucet_feast.spill`), read by the DuckDB
  warehouse.

The split key defaults to the entity join keys, so all rows of an entity land in the same
split. The data version covers the entity files, the registry and the feature views'
source files; entity rows in the offline store (a table, a query) have none.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel

from faucet_core import layout
from faucet_core.errors import UnknownDatastore
from faucet_core.plugins import get_warehouse_class
from faucet_core.warehouse import (
    BucketCounts,
    PermanentWarehouseError,
    PlanRequest,
    SourceSpec,
    SplitSpec,
    Warehouse,
    WarehouseCosts,
)
from faucet_feast.connection import FeastConnection

if TYPE_CHECKING:
    from faucet_core.plan import ChunkSpec, Plan
    from faucet_core.preprocessing.stats import StatsRequest, TrainStats
    from faucet_feast.repo import FeastRepo, Features

__all__ = ["FeastWarehouse"]

log = logging.getLogger(__name__)

SPILLED = "spilled"
PUSHED_DOWN = "pushed down"


@dataclasses.dataclass(frozen=True)
class _Target:
    """Where a source's retrieval is read: another warehouse, and the request it gets."""

    warehouse: Warehouse
    request: PlanRequest
    #: How the plan reads it, in any process (the plan's state).
    facts: dict[str, Any]


class FeastWarehouse(Warehouse):
    """Reads features of a Feast repo joined to entity rows, through another warehouse."""

    name = "feast"
    connection_model = FeastConnection
    connection: FeastConnection

    def __init__(self, connection: BaseModel) -> None:
        super().__init__(connection)
        self._lock = threading.RLock()
        self._repo: FeastRepo | None = None
        self._features: Features | None = None
        self._targets: dict[Any, _Target] = {}
        self._planned: dict[PlanRequest, _Target] = {}
        self._plans: dict[Any, tuple[Warehouse, Plan]] = {}
        self._delegates: dict[str, Warehouse] = {}
        self._owned: list[Path] = []  # spill folders this instance made

    @property
    def costs(self) -> WarehouseCosts:
        """What the warehouses reading the retrievals spent (BigQuery's bytes billed)."""
        total = WarehouseCosts()
        for warehouse in list(getattr(self, "_delegates", {}).values()):
            total = total + warehouse.costs
        return total

    @costs.setter
    def costs(self, value: WarehouseCosts) -> None:
        pass  # the delegates keep the costs

    # The Feast side

    def repo(self) -> FeastRepo:
        """The opened Feast repo (opened on first use: importing Feast takes a while)."""
        with self._lock:
            if self._repo is None:
                try:
                    from faucet_feast.repo import open_repo
                except ImportError as exc:
                    raise PermanentWarehouseError(
                        f"the feast datastore needs Feast ({exc}); install it with: "
                        "pip install 'faucetml[feast]'"
                    ) from exc
                self._repo = open_repo(self.connection)
            return self._repo

    def features(self) -> Features:
        """The features asked for, checked against the registry.

        Raises:
            PermanentWarehouseError: A view, a feature or the feature service is unknown.
        """
        with self._lock:
            if self._features is None:
                self._features = self.repo().features()
            return self._features

    def split_key(self, request: PlanRequest) -> tuple[str, ...]:
        """The split key: the configured one, else the entity join keys."""
        return tuple(request.split.key) if request.split.key else self.features().join_keys

    def _entity_rows(self, source: SourceSpec, target: Any) -> Any:
        """What ``get_historical_features`` takes as entity rows: a DataFrame of the files,
        or the SQL of the table or query."""
        from faucet_feast import entities

        repo = self.repo()
        if source.files:
            return entities.read_entity_files(
                entities.entity_files(source), self.features().join_keys
            )
        if repo.offline_store_type in ("duckdb", "file", "dask"):
            setting = "source.table" if source.table else "source.query"
            raise PermanentWarehouseError(
                f"{setting}: the {repo.offline_store_type} offline store joins entity rows "
                "from source.files (Parquet or CSV) only"
            )
        from faucet_core.sql import table_reference

        quote = target.quote_table if target is not None else table_reference
        return entities.entity_sql(source, quote)

    def _retrieve(self, source: SourceSpec, target: Any) -> Any:
        """Feast's retrieval job for ``source``'s entity rows."""
        rows = self._entity_rows(source, target)
        features = self.features()
        try:
            return self.repo().store.get_historical_features(
                entity_df=rows,
                features=features.request,
                full_feature_names=self.connection.full_feature_names,
            )
        except PermanentWarehouseError:
            raise
        except Exception as exc:
            raise PermanentWarehouseError(
                f"Feast cannot join the features to {source.describe()}: {exc}"
            ) from exc

    def data_version(self, source: SourceSpec) -> str | None:
        """The Feast and DuckDB versions, the registry's and the views' last updates, the
        size and modification time of the views' source files and of the entity files,
        and the features asked for; ``None`` for entity rows in the offline store, or
        views reading other than local files."""
        features = self.features()
        if not source.files:
            return None
        from faucet_feast import entities

        parts = self.repo().version_parts(features)
        if parts is None:
            return None
        import duckdb

        stats = entities.file_stats(entities.entity_files(source))
        retrieval = [
            features.refs,
            self.connection.feature_service,
            self.connection.full_feature_names,
        ]
        return layout.stable_digest(duckdb.__version__, parts, stats, retrieval)

    # Where the retrieval is read

    def _delegate(self, datastore: str, connection: dict[str, Any]) -> Warehouse:
        """This instance's warehouse of ``datastore``, from the installed plugins."""
        with self._lock:
            if datastore not in self._delegates:
                cls = get_warehouse_class(datastore)
                self._delegates[datastore] = cls(cls.connection_model.model_validate(connection))
            return self._delegates[datastore]

    def _delegated(self, request: PlanRequest, source: SourceSpec) -> PlanRequest:
        user = request.source
        delegated = dataclasses.replace(
            source, ds=user.ds, partition_column=user.partition_column, columns=user.columns
        )
        split = SplitSpec(self.split_key(request), request.split.test_split_percent)
        return PlanRequest(delegated, split, request.chunk_size)

    def _push_down_target(self, source: SourceSpec) -> Any:
        """The push-down target of the offline store, if the retrieval can be pushed down."""
        from faucet_feast.pushdown import TARGETS

        repo = self.repo()
        target = TARGETS.get(repo.offline_store_type)
        if not self.connection.push_down or target is None:
            return None
        why = target.unusable(repo.offline_store, not source.files)
        if why is not None:
            if source.files:
                log.warning(
                    "the Feast retrieval is not pushed down to %s: %s", target.datastore, why
                )
                return None
            raise PermanentWarehouseError(
                f"cannot push the Feast retrieval down to {target.datastore}: {why} "
                "(or set connection.push_down: false)"
            )
        try:
            get_warehouse_class(target.datastore)
        except UnknownDatastore as exc:
            log.warning(
                "the Feast retrieval is not pushed down: %s; it is read into local files",
                exc.problems[0][1],
            )
            return None
        return target

    def _pushed_down(self, request: PlanRequest, target: Any) -> _Target:
        job = self._retrieve(request.source, target)
        try:
            sql = job.to_sql()
        except NotImplementedError:
            raise PermanentWarehouseError(
                f"the Feast {self.repo().offline_store_type} store gives no SQL to push down; "
                "set connection.push_down: false"
            ) from None
        warehouse = self._delegate(target.datastore, target.connection(self.repo().offline_store))
        facts = {"retrieval": PUSHED_DOWN, "datastore": target.datastore}
        return _Target(warehouse, self._delegated(request, SourceSpec(query=sql)), facts)

    def _scratch_root(self) -> Path:
        return self.connection.scratch_dir or Path(tempfile.gettempdir())

    def _spill_folder(self, request: PlanRequest) -> Path:
        """Where the retrieval of ``request`` is written: named after its data version,
        so processes reading the same data share it; a fresh name without one."""
        version = self.data_version(request.source)
        name = (
            layout.stable_digest(version, dataclasses.asdict(request.source))
            if version is not None
            else uuid.uuid4().hex
        )
        return self._scratch_root() / f"faucet-feast-{name}"

    def _spilled(self, request: PlanRequest, folder: Path) -> _Target:
        """The DuckDB warehouse over the spill folder, writing it first if it is missing."""
        from faucet_feast.spill import DONE, ROWS_FILE, spill

        with self._lock:
            if not (folder / DONE).exists():
                job = self._retrieve(request.source, None)
                try:
                    made = spill(
                        job,
                        folder,
                        memory_limit=self.connection.memory_limit,
                        threads=self.connection.threads,
                        temp=self._scratch_root() / "faucet-feast-join-spill",
                    )
                except Exception as exc:
                    raise PermanentWarehouseError(
                        f"cannot read the Feast retrieval of {request.source.describe()} "
                        f"into {folder}: {exc}"
                    ) from exc
                if made:
                    self._owned.append(folder)
                    log.info(
                        "read the Feast retrieval of %s into %s", request.source.describe(), folder
                    )
        settings = {
            "memory_limit": self.connection.memory_limit,
            "threads": self.connection.threads,
            "scratch_dir": self.connection.scratch_dir,
        }
        warehouse = self._delegate("duckdb", settings)
        facts = {"retrieval": SPILLED, "folder": str(folder)}
        files = SourceSpec(files=(str(folder / ROWS_FILE),))
        return _Target(warehouse, self._delegated(request, files), facts)

    def _plan_target(self, request: PlanRequest) -> _Target:
        """Where to read ``request`` from when planning it."""
        target = self._push_down_target(request.source)
        if target is not None:
            return self._pushed_down(request, target)
        return self._spilled(request, self._spill_folder(request))

    def _target(self, plan: Plan) -> _Target:
        """Where ``plan``'s rows are read from, as planned (in this or another process)."""
        key = (plan.rows_id, plan.fingerprint)
        with self._lock:
            if key not in self._targets and plan.request in self._planned:
                self._targets[key] = self._planned[plan.request]
            if key not in self._targets:
                facts = plan.state
                if facts.get("retrieval") == PUSHED_DOWN:
                    target = self._push_down_target(plan.request.source)
                    if target is None or target.datastore != facts.get("datastore"):
                        raise PermanentWarehouseError(
                            f"the plan was pushed down to {facts.get('datastore')}, which "
                            "this process cannot use; plan the source again"
                        )
                    self._targets[key] = self._pushed_down(plan.request, target)
                elif facts.get("retrieval") == SPILLED:
                    self._targets[key] = self._spilled(plan.request, Path(facts["folder"]))
                else:
                    raise PermanentWarehouseError("the plan was not made by the feast datastore")
            return self._targets[key]

    def _delegated_plan(self, plan: Plan) -> tuple[Warehouse, Plan]:
        """The warehouse reading ``plan``'s rows, and ``plan`` as that warehouse reads it."""
        key = (plan.rows_id, plan.fingerprint)
        with self._lock:
            if key not in self._plans:
                target = self._target(plan)
                self._plans[key] = (
                    target.warehouse,
                    dataclasses.replace(plan, request=target.request),
                )
            return self._plans[key]

    # The warehouse contract, delegated

    def count_buckets(self, request: PlanRequest) -> BucketCounts:
        target = self._plan_target(request)
        with self._lock:
            self._planned[request] = target
        try:
            counted = target.warehouse.count_buckets(target.request)
        except PermanentWarehouseError as exc:  # say the user's source, not the delegated one
            what = f"the Feast retrieval of {request.source.describe()}"
            raise PermanentWarehouseError(
                str(exc).replace(target.request.source.describe(), what)
            ) from exc
        return dataclasses.replace(counted, state=target.facts)

    def materialize(self, plan: Plan) -> None:
        warehouse, delegated = self._delegated_plan(plan)
        warehouse.materialize(delegated)

    def read_buckets(self, plan: Plan, chunk: ChunkSpec) -> pa.Table:
        warehouse, delegated = self._delegated_plan(plan)
        return warehouse.read_buckets(delegated, chunk)

    def scan(
        self, plan: Plan, chunks: Sequence[ChunkSpec] | None = None
    ) -> Iterable[pa.RecordBatch] | None:
        warehouse, delegated = self._delegated_plan(plan)
        return warehouse.scan(delegated, chunks)

    def column_stats(self, plan: Plan, request: StatsRequest) -> TrainStats | None:
        warehouse, delegated = self._delegated_plan(plan)
        return warehouse.column_stats(delegated, request)

    def scratch_location(self, plan: Plan) -> str | None:
        return plan.state.get("folder") or plan.state.get("datastore")

    def close(self) -> None:
        for warehouse in list(getattr(self, "_delegates", {}).values()):
            warehouse.close()
        for folder in getattr(self, "_owned", []):
            shutil.rmtree(folder, ignore_errors=True)
