"""The tally's raw SQL: the ORM compiles the inner query, and the tally wraps it in the
aggregate the ORM cannot write (a GROUP BY over an annotated subquery, window counts)."""

import psycopg
from django.db import connection
from django.db.models import Field, Lookup


class Listed:
    """Values for `field__in_array` (PostgreSQL), sent as one array literal.

    Django's `__in` prepares and places a parameter per value: 3 ms for 2,000 ids and 34 ms
    for 10,000 per query, and the refresh's left-out votes are picked by lists that grow with
    the votes (tally._listed). A plain list given to a lookup is still walked value by value
    by Django (looking for expressions) and by psycopg (dumping each), 13 ms per query at
    10,000 ids; this holder is passed through untouched and written as one text literal."""

    def __init__(self, values):
        self.values = list(values)

    def literal(self) -> str:
        def quoted(value) -> str:
            if isinstance(value, int):
                return str(value)
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            return f'"{text}"'

        return "{" + ",".join(map(quoted, self.values)) + "}"


@Field.register_lookup
class InArray(Lookup):
    """`field__in_array=Listed([...])`: `field = ANY(%s)`, the values as one array literal."""

    lookup_name = "in_array"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        db_type = self.lhs.output_field.cast_db_type(connection)
        return f"{lhs} = ANY(%s::{db_type}[])", [*lhs_params, self.rhs.literal()]


def compiled(queryset) -> tuple[str, tuple]:
    """(sql, params) of a queryset, to be used as a subquery."""
    return queryset.query.get_compiler(using=queryset.db).as_sql()


def fetch(sql: str, params) -> list[tuple]:
    """Every row of one statement on the default connection."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def fetch_binary(sql: str, params) -> list[tuple]:
    """Every row of one statement, on PostgreSQL in binary: bytea arrives as the bytes
    themselves rather than hex text to decode (three times faster for the stored tallies'
    arrays). Django's cursors bind on the client, which cannot ask for binary results, so
    this one binds on the server."""
    if connection.vendor != "postgresql":
        return fetch(sql, params)
    with _server_bound() as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def execute_binary(sql: str, params) -> None:
    """One statement whose `%b` parameters (bytes) go to PostgreSQL as they are, not as
    hex text for the server to parse (most of the time of writing a large bytea). Other
    databases get them as ordinary parameters."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql.replace("%b", "%s"), params)
        return
    with _server_bound() as cursor:
        cursor.execute(sql, params)


def rows_insert(model, fields: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert `rows` (values in `fields` order; a foreign key by its id) into `model`'s table:
    on PostgreSQL with COPY, which takes a few thousand rows in milliseconds where an INSERT
    of them spends most of its time on the client building the statement; elsewhere with
    bulk_create. Nothing is returned: the rows get no ids back."""
    if not rows:
        return
    meta = model._meta
    if connection.vendor != "postgresql":
        attnames = [meta.get_field(name).attname for name in fields]
        model.objects.bulk_create(
            [model(**dict(zip(attnames, row, strict=True))) for row in rows], batch_size=500
        )
        return
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    names = ", ".join(quote(meta.get_field(name).column) for name in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def bytes_update(model, fields: tuple[str, ...], rows: list[tuple]) -> None:
    """Set binary `fields` of existing rows, each given as (pk, bytes...): on PostgreSQL in
    one statement whose bytes travel as they are (a client-bound UPDATE sends them as hex
    text, twice their size, which the server then parses); elsewhere a query per row."""
    if not rows:
        return
    meta = model._meta
    if connection.vendor != "postgresql":
        for pk, *values in rows:
            model.objects.filter(pk=pk).update(**dict(zip(fields, values, strict=True)))
        return
    quote = connection.ops.quote_name
    columns = [quote(meta.get_field(name).column) for name in fields]
    each = "(%s::bigint, " + ", ".join(["%b::bytea"] * len(fields)) + ")"
    assignments = ", ".join(f"{column} = v.c{i}" for i, column in enumerate(columns))
    named = ", ".join(f"c{i}" for i in range(len(columns)))
    execute_binary(
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "  # noqa: S608 (names from the model)
        f"FROM (VALUES {', '.join([each] * len(rows))}) AS v(pk, {named}) "
        f"WHERE t.{quote(meta.pk.column)} = v.pk",
        [value for row in rows for value in row],
    )


def _server_bound():
    """A cursor on the default connection that binds on the server (Django's bind on the
    client, which can neither send nor ask for binary values)."""
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def commit_without_waiting() -> None:
    """In the current transaction (PostgreSQL): commit without waiting for the write-ahead
    log to reach the disk. For transactions that write only what the next recompute makes
    again (snapshots, folded tallies): a crash in the fraction of a second after the commit
    loses them whole, never in part, and the next tick writes them again. The wait was 30 ms
    of a refresh's commit on this machine's disk."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
