"""The tally's raw SQL: the ORM compiles the inner query, and the tally wraps it in the
aggregate the ORM cannot write (a GROUP BY over an annotated subquery, window counts)."""

import psycopg
from django.db import connection


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


def _server_bound():
    """A cursor on the default connection that binds on the server (Django's bind on the
    client, which can neither send nor ask for binary values)."""
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)
