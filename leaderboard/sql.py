"""The tally's raw SQL: the ORM compiles the inner query, and the tally wraps it in the
aggregate the ORM cannot write (a GROUP BY over an annotated subquery, window counts)."""

from django.db import connection


def compiled(queryset) -> tuple[str, tuple]:
    """(sql, params) of a queryset, to be used as a subquery."""
    return queryset.query.get_compiler(using=queryset.db).as_sql()


def fetch(sql: str, params) -> list[tuple]:
    """Every row of one statement on the default connection."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
