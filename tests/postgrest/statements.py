"""The SQL PostgREST runs for each request, rebuilt with the same shape.

PostgREST wraps its main query in a CTE and aggregates the rows to JSON inside PostgreSQL
(``Query/Statements.hs``, ``Query/SqlFragment.hs`` in 12/13)::

    WITH pgrst_source AS (<read, mutation or function call>)
    SELECT <count> AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total,
           coalesce(json_agg(_postgrest_t), '[]') AS body, <response.headers>, <response.status>
    FROM (SELECT … FROM pgrst_source) _postgrest_t

so the JSON is PostgreSQL's own (``to_json`` of each type: timestamps in the session time
zone, numerics as numbers, jsonb embedded), exactly as a client of PostgREST receives it.
Writes read their payload with ``json_populate_recordset(NULL::<table>, body)`` and
function arguments with ``json_to_record(body) AS pgrst_body(<param> <type>, …)``: that is
how named arguments are cast to the function's parameter types (``callPlanToQuery``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from tests.postgrest.catalog import Relation, Routine
from tests.postgrest.grammar import Filter, Logic, OrderTerm, Range, SelectItem, render_select

SOURCE = sql.Identifier("pgrst_source")
RESPONSE_GUCS = sql.SQL(
    "nullif(current_setting('response.headers', true), '') AS response_headers, "
    "nullif(current_setting('response.status', true), '') AS response_status"
)


@dataclass
class Statement:
    query: sql.Composable
    params: list[Any] = field(default_factory=list)
    #: ``EXPLAIN`` of what a ``count=planned`` (or an overflowing ``estimated``) counts
    planned: Statement | None = None


@dataclass
class ReadShape:
    """What the request reads and how PostgREST aggregates it to the body."""

    select: list[SelectItem]
    filters: list[Filter | Logic]
    order: list[OrderTerm]
    range: Range
    single: bool = False


def qualified(relation: Relation | Routine) -> sql.Composable:
    return sql.Identifier(relation.schema, relation.name)


def where_clause(
    conditions: list[Filter | Logic], relation: sql.Composable, params: list[Any]
) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    rendered = sql.SQL(" AND ").join(
        sql.SQL("({})").format(c.render(relation, params)) for c in conditions
    )
    return sql.SQL(" WHERE {}").format(rendered)


def order_clause(order: list[OrderTerm], relation: sql.Composable) -> sql.Composable:
    if not order:
        return sql.SQL("")
    return sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(t.render(relation) for t in order))


def limit_clause(window: Range) -> sql.Composable:
    limit = (
        sql.SQL(" LIMIT {}").format(sql.Literal(window.limit))
        if window.limit is not None
        else sql.SQL("")
    )
    offset = (
        sql.SQL(" OFFSET {}").format(sql.Literal(window.offset)) if window.offset else sql.SQL("")
    )
    return sql.SQL("{}{}").format(limit, offset)


def _body(aggregate: str, single: bool) -> sql.Composable:
    # asJsonF / asJsonSingleF: an array of rows, or the first row for a singular response
    if single:
        return sql.SQL("coalesce(json_agg({})->0, 'null')::text").format(sql.SQL(aggregate))
    return sql.SQL("coalesce(json_agg({}), '[]')::text").format(sql.SQL(aggregate))


def read_table(
    relation: Relation, shape: ReadShape, *, count: str | None, max_rows: int | None
) -> Statement:
    """GET on a table or view
    (https://docs.postgrest.org/en/v12/references/api/tables_views.html#read)."""
    params: list[Any] = []
    table = qualified(relation)
    select = render_select(shape.select, table)
    where = where_clause(shape.filters, table, params)
    source = sql.SQL("SELECT {} FROM {}{}{}{}").format(
        select, table, where, order_clause(shape.order, table), limit_clause(shape.range)
    )
    count_sql = _count_sql(count, sql.SQL("SELECT 1 FROM {}{}").format(table, where), max_rows)
    # The WHERE's parameters appear twice when the count repeats it.
    count_params = list(params) if count in ("exact", "estimated") else []
    query = sql.SQL(
        "WITH pgrst_source AS ({}) SELECT {} AS total_result_set, "
        "pg_catalog.count(_postgrest_t) AS page_total, {} AS body, {}, NULL::bigint AS inserted "
        "FROM (SELECT * FROM pgrst_source) _postgrest_t"
    ).format(source, count_sql, _body("_postgrest_t", shape.single), RESPONSE_GUCS)
    planned = planned_count_query(relation, shape.filters)
    return Statement(query, params + count_params, planned)


def _count_sql(count: str | None, counted: sql.Composable, max_rows: int | None) -> sql.Composable:
    if count == "exact" or (count == "estimated" and max_rows is None):
        return sql.SQL("(SELECT pg_catalog.count(*) FROM ({}) pgrst_source_count)").format(counted)
    if count == "estimated":
        # Exact up to db-max-rows + 1 rows; past the cap the server compares it with the
        # planner's estimate (``_counted`` in server.py).
        return sql.SQL("(SELECT pg_catalog.count(*) FROM ({} LIMIT {}) pgrst_source_count)").format(
            counted, sql.Literal(max_rows + 1)
        )
    return sql.SQL("NULL::bigint")


def planned_count_query(relation: Relation, filters: list[Filter | Logic]) -> Statement:
    """``count=planned``: the planner's row estimate for the filtered relation
    (Planned Count: "leverage PostgreSQL statistics")."""
    params: list[Any] = []
    table = qualified(relation)
    where = where_clause(filters, table, params)
    return Statement(
        sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}{}").format(table, where), params
    )


# --- writes --------------------------------------------------------------------------------


def _returning(relation: Relation, *, representation: bool, upsert: bool) -> sql.Composable:
    table = qualified(relation)
    if representation:
        return sql.SQL(" RETURNING {}.*, ({}.xmax = 0) AS pgrst_inserted").format(table, table)
    if upsert:
        # The 200-or-201 answer of an upsert needs to know which rows were new.
        return sql.SQL(" RETURNING ({}.xmax = 0) AS pgrst_inserted").format(table)
    return sql.SQL("")


def insert(
    relation: Relation,
    groups: list[tuple[list[str], str]],
    *,
    on_conflict: list[str] | None,
    resolution: str | None,
    representation: bool,
    shape: ReadShape,
) -> Statement:
    """POST on a table: one INSERT per group of rows sharing a column list.

    Each group is ``(columns, json array text)``: the payload's keys (or ``columns=``),
    read with ``json_populate_recordset`` so a missing key is NULL, as PostgREST does; with
    ``Prefer: missing=default`` the caller groups rows by the keys they carry, so a missing
    key takes the column default.
    """
    table = qualified(relation)
    params: list[Any] = []
    parts: list[sql.Composable] = []
    for index, (columns, payload) in enumerate(groups):
        if columns:
            idents = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            body = sql.SQL(
                "INSERT INTO {} ({}) SELECT {} "
                "FROM json_populate_recordset(NULL::{}, %s::json) pgrst_body"
            ).format(table, idents, idents, table)
            params.append(payload)
        else:
            body = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table)
        if resolution and on_conflict:
            target = sql.SQL(", ").join(sql.Identifier(c) for c in on_conflict)
            if resolution == "ignore-duplicates":
                body = sql.SQL("{} ON CONFLICT ({}) DO NOTHING").format(body, target)
            else:
                updates = [c for c in columns if c not in on_conflict] or list(on_conflict)
                assignments = sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in updates
                )
                body = sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(
                    body, target, assignments
                )
        body = sql.SQL("{}{}").format(
            body, _returning(relation, representation=representation, upsert=bool(resolution))
        )
        parts.append(sql.SQL("{} AS ({})").format(sql.Identifier(f"pgrst_group_{index}"), body))
    if not representation:
        return Statement(_minimal(parts, len(groups), upsert=bool(resolution)), params)
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT * FROM {}").format(sql.Identifier(f"pgrst_group_{i}"))
        for i in range(len(groups))
    )
    return Statement(_representation(relation, parts, union, shape), params)


def _minimal(parts: list[sql.Composable], groups: int, *, upsert: bool) -> sql.Composable:
    if upsert:
        union = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT pgrst_inserted FROM {}").format(sql.Identifier(f"pgrst_group_{i}"))
            for i in range(groups)
        )
        counted = sql.SQL(
            "(SELECT count(*) FROM ({}) u) AS total, "
            "(SELECT count(*) FILTER (WHERE pgrst_inserted) FROM ({}) u) AS inserted"
        ).format(union, union)
        return sql.SQL("WITH {} SELECT {}").format(sql.SQL(", ").join(parts), counted)
    # No RETURNING: a write-only table takes a minimal insert (Insert: "Make sure that the
    # table is not write-only" applies only to what is returned).
    return sql.SQL("WITH {} SELECT NULL::bigint AS total, NULL::bigint AS inserted").format(
        sql.SQL(", ").join(parts)
    )


def _representation(
    relation: Relation, parts: list[sql.Composable], union: sql.Composable, shape: ReadShape
) -> sql.Composable:
    select = render_select(shape.select, SOURCE, relation.column_names)
    return sql.SQL(
        "WITH {}, pgrst_source AS ({}) "
        "SELECT (SELECT count(*) FROM pgrst_source) AS total_result_set, "
        "pg_catalog.count(_postgrest_t) AS page_total, {} AS body, {}, "
        "(SELECT count(*) FILTER (WHERE pgrst_inserted) FROM pgrst_source) AS inserted "
        "FROM (SELECT {} FROM pgrst_source) _postgrest_t"
    ).format(
        sql.SQL(", ").join(parts), union, _body("_postgrest_t", shape.single), RESPONSE_GUCS, select
    )


def update(
    relation: Relation,
    columns: list[str],
    payload: str,
    shape: ReadShape,
    *,
    representation: bool,
    counted: bool = False,
) -> Statement:
    """PATCH: ``UPDATE … SET col = pgrst_body.col FROM json_populate_record(…)``."""
    table = qualified(relation)
    params: list[Any] = [payload]
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = pgrst_body.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
    )
    where = where_clause(shape.filters, table, params)
    body = sql.SQL(
        "UPDATE {} SET {} "
        "FROM (SELECT * FROM json_populate_record(NULL::{}, %s::json)) pgrst_body{}"
    ).format(table, assignments, table, where)
    return _mutation(relation, body, params, shape, representation=representation, counted=counted)


def delete(
    relation: Relation, shape: ReadShape, *, representation: bool, counted: bool = False
) -> Statement:
    table = qualified(relation)
    params: list[Any] = []
    where = where_clause(shape.filters, table, params)
    body = sql.SQL("DELETE FROM {}{}").format(table, where)
    return _mutation(relation, body, params, shape, representation=representation, counted=counted)


def _mutation(
    relation: Relation,
    body: sql.Composable,
    params: list[Any],
    shape: ReadShape,
    *,
    representation: bool,
    counted: bool = False,
) -> Statement:
    if not representation:
        if counted:
            # A count needs rows back; RETURNING a constant reads no column.
            query = sql.SQL(
                "WITH pgrst_write AS ({} RETURNING 1) "
                "SELECT count(*) AS total, NULL::bigint AS inserted FROM pgrst_write"
            ).format(body)
        else:
            query = sql.SQL(
                "WITH pgrst_write AS ({}) SELECT NULL::bigint AS total, NULL::bigint AS inserted"
            ).format(body)
        return Statement(query, params)
    table = qualified(relation)
    returning = sql.SQL("{} RETURNING {}.*, false AS pgrst_inserted").format(body, table)
    select = render_select(shape.select, SOURCE, relation.column_names)
    query = sql.SQL(
        "WITH pgrst_source AS ({}) SELECT (SELECT count(*) FROM pgrst_source) AS total_result_set, "
        "pg_catalog.count(_postgrest_t) AS page_total, {} AS body, {}, NULL::bigint AS inserted "
        "FROM (SELECT {} FROM pgrst_source) _postgrest_t"
    ).format(returning, _body("_postgrest_t", shape.single), RESPONSE_GUCS, select)
    return Statement(query, params)


# --- functions -----------------------------------------------------------------------------


def call(
    routine: Routine,
    arguments: str | None,
    passed: list[str],
    *,
    one_positional: bool,
    shape: ReadShape,
    count: str | None,
    max_rows: int | None,
) -> Statement:
    """POST/GET ``/rpc/<fn>``: the call, then PostgREST's read plan over its result
    (https://docs.postgrest.org/en/v12/references/api/functions.html: table-valued
    results take the filters, order and limits of a table; scalars are their JSON value).

    ``passed`` are the parameters given by name (``specifiedParams``); ``one_positional``
    calls a single unnamed json/jsonb (or ``params=single-object``) parameter with the
    whole body (``OnePosParam``).
    """
    fn = qualified(routine)
    params: list[Any] = []
    by_name = {p.name: p for p in routine.params}
    from_args: sql.Composable | None = None
    if one_positional:
        params.append(arguments or "{}")
        call_sql = sql.SQL("{}(%s::{})").format(fn, sql.SQL(routine.params[0].type))
    elif passed:
        definitions = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(by_name[name].type))
            for name in passed
        )
        named = sql.SQL(", ").join(
            sql.SQL("{}{} := pgrst_body.{}").format(
                sql.SQL("VARIADIC " if by_name[name].variadic else ""),
                sql.Identifier(name),
                sql.Identifier(name),
            )
            for name in passed
        )
        params.append(arguments or "{}")
        call_sql = sql.SQL("{}({})").format(fn, named)
        from_args = sql.SQL("json_to_record(%s::json) AS pgrst_body({})").format(definitions)
    else:
        call_sql = sql.SQL("{}()").format(fn)

    scalar = routine.returns in ("scalar", "setof_scalar", "void")
    if scalar:
        source = sql.SQL("SELECT {} AS pgrst_scalar").format(call_sql)
        if from_args is not None:
            source = sql.SQL("{} FROM {}").format(source, from_args)
    elif from_args is not None:
        source = sql.SQL("SELECT pgrst_call.* FROM {}, LATERAL {} pgrst_call").format(
            from_args, call_sql
        )
    else:
        source = sql.SQL("SELECT pgrst_call.* FROM {} pgrst_call").format(call_sql)

    read_params: list[Any] = []
    if scalar:
        select: sql.Composable = sql.SQL("{}.*").format(SOURCE)
        where: sql.Composable = sql.SQL("")
        order: sql.Composable = sql.SQL("")
    else:
        select = render_select(shape.select, SOURCE)
        where = where_clause(shape.filters, SOURCE, read_params)
        order = order_clause(shape.order, SOURCE)
    window = limit_clause(shape.range)
    count_params: list[Any] = []
    if count in ("exact", "estimated"):
        count_params = list(read_params)
        count_sql = _count_sql(
            count, sql.SQL("SELECT 1 FROM pgrst_source{}").format(where), max_rows
        )
    else:
        count_sql = sql.SQL("NULL::bigint")
    body = _call_body(routine, shape.single)
    query = sql.SQL(
        "WITH pgrst_source AS ({}) SELECT {} AS total_result_set, "
        "pg_catalog.count(_postgrest_t) AS page_total, {} AS body, {}, NULL::bigint AS inserted "
        "FROM (SELECT {} FROM pgrst_source{}{}{}) _postgrest_t"
    ).format(source, count_sql, body, RESPONSE_GUCS, select, where, order, window)
    planned = Statement(
        sql.SQL(
            "EXPLAIN (FORMAT JSON) WITH pgrst_source AS ({}) SELECT 1 FROM pgrst_source{}"
        ).format(source, where),
        params + read_params,
    )
    # Parameter order follows the text: arguments, count's WHERE, then the read's WHERE.
    return Statement(query, params + count_params + read_params, planned)


def _call_body(routine: Routine, single: bool) -> sql.Composable:
    """``asJsonF``/``asJsonSingleF`` by return shape: a single composite is an object, a
    scalar its JSON value, a set an array."""
    shape = routine.returns
    if shape == "void":
        return sql.SQL("'null'::text")
    if shape == "scalar" or (single and shape == "setof_scalar"):
        return sql.SQL("coalesce(json_agg(_postgrest_t.pgrst_scalar)->0, 'null')::text")
    if shape == "setof_scalar":
        return sql.SQL("coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')::text")
    if shape == "composite" or single:
        return sql.SQL("coalesce(json_agg(_postgrest_t)->0, 'null')::text")
    return sql.SQL("coalesce(json_agg(_postgrest_t), '[]')::text")
