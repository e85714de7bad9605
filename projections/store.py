"""The DuckDB file of a projection: schema, stored offsets, reads by key, batch writes.

A :class:`ProjectionStore` is the only writer of its file (DuckDB allows one writing
process). :meth:`ProjectionStore.write` puts a batch's rows *and* the Kafka offsets they were
read up to in one DuckDB transaction: either both are in the file or neither is, which is
what makes the projection an exactly-once sink (a restart resumes from the stored offsets).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from projections.errors import ProjectionError, ProjectionFrozenError
from projections.fold import AttemptKey, Changes, JobKey, PartitionKey, Row
from projections.schema import (
    APPEND_TABLES,
    ATTEMPTS,
    JOB_EVENTS,
    JOBS,
    KEYED_TABLES,
    META,
    OFFSETS,
    SCHEMA_VERSION,
    SUBMISSIONS,
    WORKERS,
    Table,
    create_schema,
)

_BY_NAME = {table.name: table for table in (*KEYED_TABLES, *APPEND_TABLES)}
_KEYED = {table.name for table in KEYED_TABLES}


class ProjectionStore:
    """Opens (and creates) a projection file for writing.

    Args:
        path: the DuckDB file.
        topic_prefix: the topic prefix the projection follows; a file made for another prefix
            is refused (its offsets name other topics).
        allow_frozen: open a point-in-time (``--as-of``) file anyway (the rebuild does).

    Raises:
        ProjectionError: the file was made by another schema version or for another prefix.
        ProjectionFrozenError: the file is a point-in-time projection.
        duckdb.IOException: another process holds the file.
    """

    def __init__(
        self, path: str | Path, *, topic_prefix: str | None = None, allow_frozen: bool = False
    ) -> None:
        self.path = Path(path)
        self.connection = duckdb.connect(str(self.path))
        try:
            self._check(topic_prefix, allow_frozen)
            self._reads = self.connection.cursor()
        except BaseException:
            self.connection.close()
            raise

    def _check(self, topic_prefix: str | None, allow_frozen: bool) -> None:
        connection = self.connection
        create_schema(connection)
        meta = self.meta()
        version = meta.get("schema_version")
        if version is None:
            self.set_meta(schema_version=str(SCHEMA_VERSION), created_at=_now_iso())
        elif version != str(SCHEMA_VERSION):
            raise ProjectionError(
                f"{self.path} holds projection schema v{version}, this joblog writes "
                f"v{SCHEMA_VERSION}; rebuild it with `joblog projections rebuild --db {self.path}`"
            )
        if topic_prefix is not None:
            stored = meta.get("topic_prefix")
            if stored is None:
                self.set_meta(topic_prefix=topic_prefix)
            elif stored != topic_prefix:
                raise ProjectionError(
                    f"{self.path} projects the topics of prefix {stored!r}, not "
                    f"{topic_prefix!r}; use another --db file for that prefix"
                )
        if meta.get("as_of") and not allow_frozen:
            raise ProjectionFrozenError(
                f"{self.path} is a point-in-time projection (as of {meta['as_of']}); "
                "a projector cannot advance it: point the projector at another file"
            )

    def close(self) -> None:
        self._reads.close()
        self.connection.close()

    def __enter__(self) -> ProjectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta and offsets

    def meta(self) -> dict[str, str]:
        rows = self.connection.execute(f"SELECT key, value FROM {META.name}").fetchall()
        return {str(key): str(value) for key, value in rows}

    def set_meta(self, **values: str) -> None:
        for key, value in values.items():
            self.connection.execute(
                f"INSERT OR REPLACE INTO {META.name} VALUES (?, ?)", [key, value]
            )

    def offsets(self) -> dict[PartitionKey, int]:
        """The next offset to read of every (topic, partition) the file has seen."""
        rows = self.connection.execute(
            f"SELECT topic, partition, next_offset FROM {OFFSETS.name}"
        ).fetchall()
        return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}

    def reset(self) -> None:
        """Empties every table and forgets every offset: the next run starts from offset 0."""
        connection = self.connection
        connection.execute("BEGIN TRANSACTION")
        try:
            for table in (*KEYED_TABLES, *APPEND_TABLES, OFFSETS):
                connection.execute(f"DELETE FROM {table.name}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ reads by key
    #
    # Reads go through their own cursor, so they may run while another thread commits a
    # batch on the main connection (they see what is committed).

    def submissions(self, ids: Collection[str]) -> Iterable[Row]:
        return self._by_key(SUBMISSIONS, [(sid,) for sid in ids])

    def jobs(self, keys: Collection[JobKey]) -> Iterable[Row]:
        return self._by_key(JOBS, list(keys))

    def attempts(self, keys: Collection[AttemptKey]) -> Iterable[Row]:
        return self._by_key(ATTEMPTS, list(keys))

    def workers(self, ids: Collection[str]) -> Iterable[Row]:
        return self._by_key(WORKERS, [(worker_id,) for worker_id in ids])

    def _by_key(self, table: Table, keys: list[tuple[Any, ...]]) -> list[Row]:
        if not keys:
            return []
        key_schema = pa.schema([table.arrow_schema.field(name) for name in table.key])
        columns = list(zip(*keys, strict=True))
        wanted = pa.table(
            [pa.array(column, type=key_schema.field(i).type) for i, column in enumerate(columns)],
            schema=key_schema,
        )
        using = ", ".join(f'"{name}"' for name in table.key)
        with _registered(self._reads, "_wanted", wanted):
            rows: list[Row] = arrow_query(
                self._reads,
                f"SELECT {table.select_for_fold()} FROM {table.name} "
                f"SEMI JOIN _wanted USING ({using})",
            ).to_pylist()
        return rows

    # ------------------------------------------------------------------ the batch write

    def write(self, changes: Changes) -> None:
        """Writes one batch and its offsets in one transaction (:func:`prepare`, :meth:`commit`)."""
        self.commit(prepare(changes))

    def commit(self, batch: PreparedBatch) -> None:
        """Writes a prepared batch and its offsets in one transaction.

        Commit order: rows of every table, then the offsets, then COMMIT. A crash before the
        COMMIT leaves neither (the batch is read again from the old offsets); after it, both
        (the batch is never read again). Keyed tables replace the rows of the batch's keys
        (DELETE by key, then INSERT: faster in DuckDB than INSERT OR REPLACE on these tables;
        the offsets, a handful of rows, are one INSERT OR REPLACE);
        appended tables take new rows, minus rejections already logged (``seq == 0`` events
        have no sequence number to catch a replay with).

        Only one thread may commit at a time; reads by key may run meanwhile.
        """
        connection = self.connection
        connection.execute("BEGIN TRANSACTION")
        try:
            for table, data in batch.tables:
                if table.name in _KEYED:
                    self._replace(table, data)
                else:
                    if table.name == JOB_EVENTS.name:
                        data = self._unseen(data)
                    self._insert(table, data)
            if batch.offsets is not None:
                self._store_offsets(batch.offsets)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    # The batch's Arrow table is read by DuckDB's replacement scan: a statement naming a
    # Python variable of the calling frame scans it in place. That is what register() +
    # unregister() do too, at two more calls (~1.2 ms) per table and batch; the variable's
    # name is one no table of a projection file has, so no catalog entry can shadow it.

    def _replace(self, table: Table, joblog_batch: pa.Table) -> None:
        names = table.column_list
        match = " AND ".join(f'{table.name}."{key}" = joblog_batch."{key}"' for key in table.key)
        execute = self.connection.execute
        execute(f"DELETE FROM {table.name} USING joblog_batch WHERE {match}")
        execute(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM joblog_batch")

    def _insert(self, table: Table, joblog_batch: pa.Table) -> None:
        if joblog_batch.num_rows == 0:
            return
        names = table.column_list
        self.connection.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM joblog_batch"
        )

    def _store_offsets(self, joblog_offsets: pa.Table) -> None:
        # A handful of rows: one upsert costs less than a DELETE and an INSERT.
        names = OFFSETS.column_list
        self.connection.execute(
            f"INSERT OR REPLACE INTO {OFFSETS.name} ({names}) SELECT {names} FROM joblog_offsets"
        )

    def _unseen(self, data: pa.Table) -> pa.Table:
        outside = pc.filter(data.column("event_id"), pc.equal(data.column("seq"), 0))
        if len(outside) == 0:
            return data
        known = self.connection.execute(
            f"SELECT event_id FROM {JOB_EVENTS.name} WHERE event_id IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [outside.to_pylist()],
        ).fetchall()
        if not known:
            return data
        seen = pa.array([event_id for (event_id,) in known], type=pa.string())
        return data.filter(pc.invert(pc.is_in(data.column("event_id"), value_set=seen)))


@dataclass(frozen=True)
class PreparedBatch:
    """A batch's rows as Arrow tables, ready for :meth:`ProjectionStore.commit`.

    Preparing copies the values out of the fold's rows, so the fold may go on with the next
    batch while this one is committed.
    """

    tables: list[tuple[Table, pa.Table]]
    offsets: pa.Table | None


def prepare(changes: Changes) -> PreparedBatch:
    """Converts a batch's changes to Arrow (the offsets stamped with the current time)."""
    tables = [(_BY_NAME[name], to_arrow(_BY_NAME[name], rows)) for name, rows in changes.tables()]
    offsets = None
    if changes.offsets:
        now = int(time.time() * 1000)
        offsets = to_arrow(
            OFFSETS,
            [
                {"topic": t, "partition": p, "next_offset": o, "updated_at": now}
                for (t, p), o in changes.offsets.items()
            ],
        )
    return PreparedBatch(tables, offsets)


@contextmanager
def _registered(connection: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> Iterator[None]:
    # Only reads by key use it, on their own cursor outside any transaction: unregistering
    # cannot be refused there, whatever the query did.
    connection.register(name, data)
    try:
        yield
    finally:
        connection.unregister(name)


def to_arrow(table: Table, rows: list[Row]) -> pa.Table:
    """Rows of the fold (dicts, epoch-ms timestamps) as an Arrow table of ``table``'s schema."""
    return pa.Table.from_pylist(rows, schema=table.arrow_schema)


def arrow_query(
    connection: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] | None = None
) -> pa.Table:
    """Runs one query and returns its result as an Arrow table."""
    relation = connection.sql(sql, params=params)
    if relation is None:  # a statement without a result
        return pa.table({})
    if hasattr(relation, "to_arrow_table"):
        table: pa.Table = relation.to_arrow_table()
    else:  # duckdb < 1.4
        table = relation.arrow()
    return table


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
