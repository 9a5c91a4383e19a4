"""Data versions of PostgreSQL and Redshift tables, from metadata alone (no scan).

A version is a digest of what changes whenever the table's rows do; ``None`` where the
server cannot tell cheaply and reliably, and the table is then planned again by every
reader. What each server can tell, and its limits, is in the warehouse docs.

PostgreSQL: the table's cumulative statistics counters (rows inserted, updated, deleted;
aborted changes count too, which only costs a new plan), its file node (changed by
``TRUNCATE``, ``VACUUM FULL``, ``CLUSTER``, rewrites), its columns and the time the
statistics were last reset; for a partitioned table, those of every leaf partition.
``None`` for views, foreign tables, on a standby (replayed changes are not counted) and
with ``track_counts`` off.

Redshift: the table's block list per column (blocks, values, smallest and largest values,
which include the hidden insert and delete transaction ids), and ``None`` while another
transaction holds a write lock on it, or when the block list is not visible to the user
(it is to superusers) or empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from faucet_core import layout
from faucet_core.warehouse import WarehouseError

__all__ = ["Fetch", "VersionLookup", "postgres_version", "redshift_version"]

log = logging.getLogger(__name__)

#: Runs a statement with bind parameters and returns its rows.
Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
#: A data version lookup: ``(fetch, quoted table name) -> version or None``.
VersionLookup = Callable[[Fetch, str], "str | None"]

_TABLE_KINDS = ("r", "m")  # tables and materialized views
_PARTITIONED = "p"
#: Locks that DML and DDL take in Redshift (and PostgreSQL, for the test stand-in).
_WRITE_LOCKS = ("RowExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


def postgres_version(fetch: Fetch, table: str) -> str | None:
    """The version of PostgreSQL table ``table`` (quoted), or ``None``."""
    try:
        found = fetch(
            "SELECT c.oid, c.relkind, pg_is_in_recovery(), current_setting('track_counts'), "
            "(SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            [table],
        )
    except WarehouseError:  # a name to_regclass refuses: the counting query will say why
        return None
    if not found:
        return None  # no such table: the counting query says so
    oid, kind, standby, track_counts, stats_reset = found[0]
    if standby or track_counts != "on":
        return None
    if kind in _TABLE_KINDS:
        leaves = [oid]
    elif kind == _PARTITIONED:
        parts = fetch(
            "SELECT p.relid::oid, c.relkind FROM pg_partition_tree(%s) p "
            "JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf ORDER BY p.relid",
            [oid],
        )
        if any(part_kind not in _TABLE_KINDS for _, part_kind in parts):
            return None  # a foreign partition
        leaves = [relid for relid, _ in parts]
    else:
        return None  # a view or a foreign table: its data lives elsewhere
    counters = fetch(
        "SELECT s.relid, pg_relation_filenode(s.relid), s.n_tup_ins, s.n_tup_upd, s.n_tup_del "
        "FROM pg_stat_all_tables s WHERE s.relid = ANY(%s) ORDER BY s.relid",
        [leaves],
    )
    if len(counters) != len(leaves):
        return None
    columns = fetch(
        "SELECT a.attname, a.atttypid, a.atttypmod, a.attgenerated, pg_get_expr(d.adbin, "
        "d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
        "AND d.adnum = a.attnum AND a.attgenerated <> '' "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [oid],
    )
    return layout.stable_digest("postgres", oid, stats_reset, counters, columns)


def redshift_version(fetch: Fetch, table: str) -> str | None:
    """The version of Redshift table ``table`` (quoted), or ``None``."""
    try:
        ((oid,),) = fetch("SELECT %s::regclass::oid", [table])
    except (WarehouseError, ValueError):
        return None  # no such table: the counting query says so
    blocks = fetch(
        "SELECT col, COUNT(*), SUM(num_values), MIN(minvalue), MAX(maxvalue) "
        "FROM stv_blocklist WHERE tbl = %s GROUP BY col ORDER BY col",
        [oid],
    )
    if not blocks:
        log.warning(
            "no data version for %s: STV_BLOCKLIST shows none of its blocks (it shows "
            "them to superusers only, or the table is empty); every reader plans it again "
            "(one counting scan) unless cache.plan_ttl is set", table,
        )  # fmt: skip
        return None
    writers = fetch(
        "SELECT COUNT(*) FROM svv_transactions WHERE relation = %s AND granted "
        f"AND lock_mode IN ({', '.join(repr(mode) for mode in _WRITE_LOCKS)}) "
        "AND pid <> pg_backend_pid()",
        [oid],
    )
    if writers and writers[0][0]:
        return None  # a transaction may be changing it: its blocks may show, or not yet
    columns = fetch(
        "SELECT a.attname, a.atttypid, a.atttypmod FROM pg_attribute a "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [oid],
    )
    return layout.stable_digest("redshift", oid, blocks, columns)
