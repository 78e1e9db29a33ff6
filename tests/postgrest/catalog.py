"""The stand-in's schema cache: tables, columns and functions read from ``pg_catalog``.

PostgREST builds a schema cache at start-up and on ``NOTIFY pgrst, 'reload schema'``
(https://docs.postgrest.org/en/v12/references/schema_cache.html); Supabase reloads it after
every DDL through an event trigger. The stand-in reads the catalog on every request, which
is that cache, always fresh. Like PostgREST's cache it lists every table, view and function
of the exposed schema whatever the caller's privileges: a role without a grant reaches the
object and gets PostgreSQL's 42501.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

ReturnShape = Literal["void", "scalar", "setof_scalar", "composite", "setof_composite"]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    has_default: bool


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)


@dataclass(frozen=True)
class Parameter:
    name: str  #: "" for an unnamed parameter
    type: str  #: ``format_type`` of the parameter (``integer``, ``timestamp with time zone``)
    required: bool
    variadic: bool


@dataclass(frozen=True)
class Routine:
    schema: str
    name: str
    params: tuple[Parameter, ...]
    returns: ReturnShape
    volatility: Literal["v", "s", "i"]
    settings: dict[str, str]  #: ``proconfig`` (``SET statement_timeout = …`` on the function)

    def signature(self) -> str:
        listed = ", ".join(f"{p.name} => {p.type}" for p in self.params)
        return f"{self.schema}.{self.name}({listed})"


def find_relation(conn: Any, schema: str, name: str) -> Relation | None:
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p')",
        (schema, name),
    ).fetchone()
    if row is None:
        return None
    oid = row[0]
    columns = {
        attname: Column(attname, typname, not attnotnull, has_default)
        for attname, typname, attnotnull, has_default in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "(a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') "
            "FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        ).fetchall()
    }
    key = conn.execute(
        "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary",
        (oid,),
    ).fetchone()[0]
    return Relation(schema, name, columns, tuple(key or ()))


def relation_names(conn: Any, schema: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p')",
            (schema,),
        ).fetchall()
    ]


def functions_named(conn: Any, schema: str, name: str) -> list[Routine]:
    rows = conn.execute(
        """
        SELECT p.proargnames, p.proargmodes, p.pronargdefaults, p.provolatile,
               p.proretset, t.typtype, t.typname, p.proconfig,
               ARRAY(SELECT format_type(x, NULL) FROM unnest(p.proargtypes::oid[]) x),
               ARRAY(SELECT format_type(x, NULL) FROM unnest(p.proallargtypes) x)
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_type t ON t.oid = p.prorettype
        WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'
        ORDER BY p.oid
        """,
        (schema, name),
    ).fetchall()
    routines = []
    for (
        names,
        modes,
        n_defaults,
        volatility,
        retset,
        typtype,
        typname,
        config,
        in_types,
        all_types,
    ) in rows:
        params = []
        if modes is None:
            # Every argument is IN: names and types line up with proargtypes.
            entries = [(names[i] if names else "", t, "i") for i, t in enumerate(in_types)]
        else:
            entries = [
                (names[i] if names else "", all_types[i], mode)
                for i, mode in enumerate(modes)
                if mode in ("i", "b", "v")
            ]
        required = len(entries) - (n_defaults or 0)
        for position, (param_name, param_type, mode) in enumerate(entries):
            params.append(Parameter(param_name, param_type, position < required, mode == "v"))
        has_out = modes is not None and any(m in ("o", "b", "t") for m in modes)
        if typname == "void":
            shape: ReturnShape = "void"
        elif typtype == "c" or typname == "record" or has_out:
            shape = "setof_composite" if retset else "composite"
        else:
            shape = "setof_scalar" if retset else "scalar"
        settings = dict(item.split("=", 1) for item in (config or []))
        routines.append(Routine(schema, name, tuple(params), shape, volatility, settings))
    return routines


def function_names(conn: Any, schema: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.prokind = 'f'",
            (schema,),
        ).fetchall()
    ]


def fuzzy_hint(candidates: list[str], wanted: str, *, min_score: float = 0.75) -> str | None:
    """The closest name, as PostgREST's fuzzy "Perhaps you meant …" hints pick one
    (``getFuzzyHint``: 0.75 for table and function names, 0.33 for parameter lists).
    PostgREST scores with a fuzzy set; ``difflib``'s ratio stands in for it."""
    best = difflib.get_close_matches(wanted, candidates, n=1, cutoff=min_score)
    return best[0] if best else None
