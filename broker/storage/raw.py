"""Driver-level statements for the ingest hot path, on SQLite and PostgreSQL alike.

The ORM costs several microseconds per row; ingest writes a row per meter and day at hundreds of
thousands of readings a second, so its few statements go straight to the driver (sqlite3 or
psycopg) inside the caller's transaction. Statements are written with ``?`` placeholders and
turned into ``%s`` for psycopg. Bulk inserts use PostgreSQL's binary COPY.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlmodel import Session

_CHUNK = 900  # below SQLite's limit of bound variables per statement


class Raw:
    """The driver connection under a session, and which dialect it speaks."""

    def __init__(self, session: Session) -> None:
        conn = session.connection()
        driver = conn.connection.driver_connection
        assert driver is not None
        self.driver: Any = driver
        self.postgres = conn.dialect.name == "postgresql"

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def query(
        self, statement: str, params: Sequence[Any] = (), by_index: bool = False
    ) -> list[tuple[Any, ...]]:
        """Rows of ``statement``; ``by_index``: a lookup of a batch of keys, planned as index
        lookups on PostgreSQL whatever the table's statistics say."""
        if self.postgres:
            with self.driver.cursor(binary=True) as cur:  # binary rows parse faster
                if by_index:
                    _plan_by_index(cur, "off")
                cur.execute(self._sql(statement), params)
                rows = list(cur.fetchall())
                if by_index:
                    _plan_by_index(cur, "on")
                return rows
        return list(self.driver.execute(statement, params).fetchall())

    def query_in(
        self, statement: str, values: Sequence[Any], lead: Sequence[Any] = ()
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``statement`` whose ``{in}`` placeholder is filled with ``values``, in
        chunks on SQLite and as one ``= ANY(array)`` on PostgreSQL."""
        if self.postgres:
            sql = statement.replace("IN {in}", "= ANY(?)")
            yield from self.query(sql, [*lead, list(values)], by_index=True)
            return
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            marks = "(" + ",".join("?" * len(chunk)) + ")"
            yield from self.query(statement.replace("{in}", marks), [*lead, *chunk])

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        if self.postgres:
            with self.driver.cursor() as cur:
                cur.execute(self._sql(statement), params)
        else:
            self.driver.execute(statement, params)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.postgres:
            with self.driver.cursor() as cur:
                cur.executemany(self._sql(statement), list(rows))
        else:
            self.driver.executemany(statement, rows)

    def update_many(
        self,
        table: str,
        keys: Sequence[str],
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """``UPDATE table SET columns WHERE keys`` for each row (values: columns, then keys);
        one statement over arrays on PostgreSQL, executemany on SQLite. ``types`` are the
        PostgreSQL types of ``columns`` then ``keys``."""
        if not rows:
            return
        names = [*columns, *keys]
        if not self.postgres:
            sets = ", ".join(f"{c} = ?" for c in columns)
            where = " AND ".join(f"{k} = ?" for k in keys)
            self.driver.executemany(f"UPDATE {table} SET {sets} WHERE {where}", rows)  # noqa: S608
            return
        arrays = ", ".join(f"unnest(%s::{t}[]) AS {n}" for n, t in zip(names, types, strict=True))
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        where = " AND ".join(f"{table}.{k} = v.{k}" for k in keys)
        statement = f"UPDATE {table} SET {sets} FROM (SELECT {arrays}) v WHERE {where}"  # noqa: S608
        with self.driver.cursor(binary=True) as cur:
            _plan_by_index(cur, "off")
            cur.execute(statement, [list(col) for col in zip(*rows, strict=True)])
            _plan_by_index(cur, "on")

    def copy_in(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """Bulk insert: binary COPY on PostgreSQL, executemany on SQLite."""
        names = ", ".join(columns)
        if not self.postgres:
            marks = ",".join("?" * len(columns))
            self.driver.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)  # noqa: S608
            return
        with (
            self.driver.cursor() as cur,
            cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)


def _plan_by_index(cur: Any, switch: str) -> None:
    """Turn whole-table plans off (or back on) for this transaction. A batch touches a few
    thousand rows of tables that may hold millions; when statistics lag a fast-growing table
    the planner picks a sequential scan or a hash join that reads all of it for every batch."""
    for plan in ("seqscan", "hashjoin", "mergejoin"):
        cur.execute(f"SET LOCAL enable_{plan} = {switch}")
