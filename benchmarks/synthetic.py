"""Millions of synthetic battles and votes in PostgreSQL, for the benchmarks.

One `INSERT … SELECT generate_series` per table: no Python loop, no ORM objects. The votes look
like a real arena's on every column the recompute reads: a skill gap between models, skewed
pair popularity, ~22% ties and ~8% both-bad, a spread of languages, multi-turn, long and code
prompts, repeated prompts (plus one hot prompt asked thousands of times, for the down-sampling),
a few heavy voters beside many occasional ones (for the outlier test), identity leaks, and the
style features.
"""

from __future__ import annotations

from collections.abc import Callable

SQL = Callable[..., list | None]  # sql(statement, params=None, fetch=False)

LANGUAGES = ("en", "en", "en", "en", "en", "zh", "ru", "es", "de", "fr", "ja", "pt")
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def db_recreate(name: str, *, drop_only: bool = False) -> None:
    """Drop the benchmark database `name` (closing its connections) and create it afresh."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {name}")


def filler(sql: SQL, table: str, given: dict[str, str]) -> tuple[str, str]:
    """Columns and SQL values for an INSERT … SELECT: `given` plus every other NOT NULL column
    without a default, filled by type (the schema can grow without breaking the benchmarks)."""
    rows = sql(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_name = %s",
        [table],
        fetch=True,
    )
    by_type = {
        "character varying": "''",
        "text": "''",
        "integer": "0",
        "smallint": "0",
        "bigint": "0",
        "boolean": "false",
        "jsonb": "'{}'::jsonb",
        "double precision": "0",
        "timestamp with time zone": "now()",
        "uuid": "gen_random_uuid()",
    }
    cols, vals = [], []
    for name, dtype, nullable, default, identity in rows:
        if identity == "YES":
            continue
        if name in given:
            cols.append(name)
            vals.append(given[name])
        elif nullable == "NO" and default is None:
            cols.append(name)
            vals.append(by_type[dtype])
    return ", ".join(cols), ", ".join(vals)


def models_insert(sql: SQL, *, count: int, prefix: str = "synthetic") -> list[int]:
    """`count` active catalog entries named {prefix}-1 … (pointing nowhere); their ids."""
    cols, vals = filler(
        sql,
        "llm_providers_llmmodel",
        {
            "slug": f"'{prefix}-' || g",
            "name": "'Synthetic ' || g",
            "organization": "'Org ' || (g % 17)",
            "license": "CASE WHEN g % 3 = 0 THEN 'MIT' ELSE 'Proprietary' END",
            "base_url": "'http://synthetic.invalid/v1'",
            "model": "'m' || g",
            "status": "'active'",
            "weight": "1",
        },
    )
    rows = sql(
        f"INSERT INTO llm_providers_llmmodel ({cols}) SELECT {vals} "
        f"FROM generate_series(1, {count}) AS g RETURNING id",
        fetch=True,
    )
    return sorted(r[0] for r in rows)


def conversation_insert(sql: SQL) -> int:
    """One conversation owned by a synthetic visitor, to hang battles on; its id."""
    cols, vals = filler(
        sql,
        "battles_conversation",
        {
            "owner_key": "'v:bench-synthetic'",
            "title": "'synthetic'",
            "mode": "'blind'",
            "uuid": "gen_random_uuid()",
            "created_at": "now()",
            "updated_at": "now()",
        },
    )
    return sql(f"INSERT INTO battles_conversation ({cols}) SELECT {vals} RETURNING id", fetch=True)[
        0
    ][0]


def votes_insert(sql: SQL, *, count: int, model_ids: list[int], seed: float = 0.42) -> None:
    """`count` voted battles and their votes, spread over `model_ids` (skewed popularity).

    Model i beats j with a probability growing with the gap in their list positions.
    """
    k = len(model_ids)
    arr = "ARRAY[" + ",".join(map(str, model_ids)) + "]::bigint[]"
    sql(f"SELECT setseed({seed})")
    conv = conversation_insert(sql)
    # Pair popularity: position ~ k * u^1.6 gives a few models most of the battles.
    ia = f"(1 + floor({k} * power(random(), 1.6))::int)"
    ib = f"(1 + (ia - 1 + 1 + floor({k - 1} * power(random(), 1.6))::int) % {k})"
    # Half the votes come from 25,000 regular voters (~40 votes each), half from one-off ones.
    voter = "CASE WHEN g % 2 = 0 THEN md5('r' || (g % 50000)) ELSE md5('o' || g) END"
    b_cols, b_vals = filler(
        sql,
        "battles_battle",
        {
            "uuid": "gen_random_uuid()",
            "conversation_id": str(conv),
            "owner_key": "'v:bench-synthetic'",
            "model_a_id": f"({arr})[ia]",
            "model_b_id": f"({arr})[{ib}]",
            "status": "'voted'",
            "mode": "'blind'",
            "pair_probability": "0.001",
            "sampling": "'{}'::jsonb",
            "visitor_hash": voter,
            "turn_count": "CASE WHEN g % 5 = 0 THEN 2 + g % 3 ELSE 1 END",
            "identity_leak": "g % 500 = 0",
            "created_at": "now() - make_interval(secs => g)",
            "updated_at": "now()",
            "voted_at": "now() - make_interval(secs => g)",
        },
    )
    sql(
        f"INSERT INTO battles_battle ({b_cols}) SELECT {b_vals} "
        f"FROM (SELECT g, {ia} AS ia FROM generate_series(1, {count}) AS g) AS s"
    )
    languages = "(ARRAY[" + ",".join(f"'{code}'" for code in LANGUAGES) + "])"
    v_cols, v_vals = filler(
        sql,
        "battles_vote",
        {
            "battle_id": "b.id",
            "choice": "CASE WHEN r < 0.08 THEN 'bothbad' WHEN r < 0.30 THEN 'tie' "
            f"WHEN r < 0.30 + 0.70 / (1 + exp(4.0 * (ia - ib) / {k})) THEN 'a' ELSE 'b' END",
            "model_a_id": "b.model_a_id",
            "model_b_id": "b.model_b_id",
            "visitor_hash": "b.visitor_hash",
            "ip_hash": "''",
            "turns": "b.turn_count",
            "prompt_chars": "20 + (b.id * 7919) % 1500",
            "has_code": "b.id % 7 = 0",
            "language": f"{languages}[1 + b.id % {len(LANGUAGES)}]",
            # 1 in 1,000 votes on one hot prompt; the rest on ~2 votes per prompt.
            "prompt_hash": "CASE WHEN b.id % 1000 = 0 THEN md5('hot') "
            "ELSE md5('p' || (b.id / 2)) END",
            "style": "jsonb_build_object("
            "'a', jsonb_build_object('length', 300 + b.id % 900, 'headers', b.id % 3, "
            "'lists', b.id % 5, 'bold', b.id % 2), "
            "'b', jsonb_build_object('length', 300 + (b.id / 7) % 900, "
            "'headers', (b.id / 3) % 3, 'lists', (b.id / 5) % 5, 'bold', (b.id / 2) % 2))",
            "identity_leak": "b.identity_leak",
            "created_at": "b.voted_at",
        },
    )
    sql(
        f"INSERT INTO battles_vote ({v_cols}) SELECT {v_vals} FROM ("
        f"SELECT b.*, random() AS r, array_position({arr}, b.model_a_id) AS ia, "
        f"array_position({arr}, b.model_b_id) AS ib FROM battles_battle b "
        f"WHERE b.conversation_id = {conv}) AS b"
    )
    sql("ANALYZE")
