"""PostgREST's URL grammar and ``Prefer`` header, parsed and rendered to SQL.

Sources: https://docs.postgrest.org/en/v12/references/api/tables_views.html (operators,
logical operators, vertical filtering, JSON columns, ordering, limits),
https://docs.postgrest.org/en/v12/references/api/url_grammar.html (quoting, reserved
characters) and https://docs.postgrest.org/en/v12/references/api/preferences.html.

Values travel as PostgreSQL literals of type ``unknown`` (psycopg sends a Python ``str``
untyped), as PostgREST's prepared statements do, so the column's type decides how a value
is read: ``amount=gt.100`` compares integers, ``due_at=lt.2026-11-24T12:00:00Z`` timestamps.
Resource embedding, aggregates, spreads and full-text-search configurations are not
modelled; asking for them is a loud ``STANDIN`` 501, never a silent wrong answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from tests.postgrest.errors import PgrstError, invalid_range, query_param_error

#: Query parameters that are never filters (``QueryParams.hs``).
RESERVED = {"select", "columns", "order", "limit", "offset", "on_conflict", "and", "or"}

# Operator -> SQL operator ("Operators" table of the tables/views page).
COMPARISONS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "match": "~",
    "imatch": "~*",
    "isdistinct": "IS DISTINCT FROM",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    "sl": "<<",
    "sr": ">>",
    "nxr": "&<",
    "nxl": "&>",
    "adj": "-|-",
}
FTS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
QUANTIFIABLE = {"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"}
IS_VALUES = {
    "null": "NULL",
    "not_null": "NOT NULL",
    "true": "TRUE",
    "false": "FALSE",
    "unknown": "UNKNOWN",
}
TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*(\[\])?")


def not_modelled(what: str) -> PgrstError:
    """A PostgREST feature the stand-in does not reproduce: fail loudly, never guess."""
    return PgrstError(501, "STANDIN", f"the PostgREST stand-in does not model {what}")


# --- fields: columns and JSON paths --------------------------------------------------


@dataclass(frozen=True)
class Field:
    """``col`` or ``col->key->>key``; the output name is the last key (JSON columns doc)."""

    column: str
    path: tuple[tuple[str, str], ...] = ()

    @property
    def output_name(self) -> str:
        return self.path[-1][1] if self.path else self.column

    def render(self, relation: sql.Composable) -> sql.Composable:
        column: sql.Composable = sql.SQL("{}.{}").format(relation, sql.Identifier(self.column))
        if not self.path:
            return column
        # "PostgREST uses a query like to_jsonb(<col>)->'field'" (JSON columns doc).
        rendered: sql.Composable = sql.SQL("to_jsonb({})").format(column)
        for arrow, key in self.path:
            key_sql = sql.SQL(key) if re.fullmatch(r"-?\d+", key) else sql.Literal(key)
            rendered = sql.SQL("{}{}{}").format(rendered, sql.SQL(arrow), key_sql)
        return rendered


def parse_field(text: str) -> Field:
    parts = re.split(r"(->>|->)", text)
    column = _unquote(parts[0].strip())
    if not column:
        raise query_param_error(f'"failed to parse field ({text})" (line 1, column 1)', "")
    path = tuple((parts[i], _unquote(parts[i + 1])) for i in range(1, len(parts) - 1, 2))
    return Field(column, path)


# --- select ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectItem:
    field: Field | None  #: None for ``*``
    alias: str | None = None
    cast: str | None = None


def parse_select(text: str | None) -> list[SelectItem]:
    if text is None or text.strip() == "":
        return [SelectItem(None)]
    items = []
    for raw in split_top_level(text):
        raw = raw.strip()
        if "(" in raw or raw.startswith("..."):
            raise not_modelled(f"resource embedding, spreads or aggregates (select={raw})")
        if raw == "*":
            items.append(SelectItem(None))
            continue
        alias = None
        match = re.match(r"^([^:]+):(?!:)(.*)$", raw)
        if match:
            alias, raw = match.group(1).strip(), match.group(2)
        cast = None
        if "::" in raw:
            raw, cast = raw.split("::", 1)
            if not TYPE_NAME.fullmatch(cast):
                raise query_param_error(f'"failed to parse select ({cast})" (line 1, column 1)', "")
        items.append(SelectItem(parse_field(raw), alias, cast))
    return items


def render_select(
    items: list[SelectItem], relation: sql.Composable, star_columns: list[str] | None = None
) -> sql.Composable:
    """The select list; ``*`` expands to ``star_columns`` when given (mutations hide their
    helper columns that way), else to ``relation.*``."""
    rendered: list[sql.Composable] = []
    for item in items:
        if item.field is None:
            if star_columns is None:
                rendered.append(sql.SQL("{}.*").format(relation))
            else:
                rendered.extend(
                    sql.SQL("{}.{}").format(relation, sql.Identifier(name)) for name in star_columns
                )
            continue
        expression = item.field.render(relation)
        if item.cast:
            expression = sql.SQL("CAST({} AS {})").format(expression, sql.SQL(item.cast))
        name = item.alias or item.field.output_name
        rendered.append(sql.SQL("{} AS {}").format(expression, sql.Identifier(name)))
    return sql.SQL(", ").join(rendered)


# --- filters and logic trees -------------------------------------------------------------


@dataclass
class Filter:
    field: Field
    negate: bool
    operator: str
    value: Any  #: str, list[str] for ``in``, (language, text) for fts
    quantifier: str | None = None  #: ``any`` / ``all``

    def render(self, relation: sql.Composable, params: list[Any]) -> sql.Composable:
        column = self.field.render(relation)
        op = self.operator
        if op == "in":
            if not self.value:
                condition: sql.Composable = sql.SQL("false")
            else:
                # Each item an untyped literal, so the column's type reads it.
                params.extend(self.value)
                condition = sql.SQL("{} IN ({})").format(
                    column, sql.SQL(", ").join(sql.SQL("%s") for _ in self.value)
                )
        elif op == "is":
            condition = sql.SQL("{} IS {}").format(column, sql.SQL(IS_VALUES[self.value]))
        elif op in FTS:
            language, text = self.value
            if language:
                params.extend([language, text])
                condition = sql.SQL("{} @@ {}(%s::regconfig, %s)").format(column, sql.SQL(FTS[op]))
            else:
                params.append(text)
                condition = sql.SQL("{} @@ {}(%s)").format(column, sql.SQL(FTS[op]))
        else:
            value = self.value
            if op in ("like", "ilike"):
                # "use * as an alias of the percent sign %" (Operators table)
                value = value.replace("*", "%")
            params.append(value)
            if self.quantifier:
                condition = sql.SQL("{} {} {}(%s)").format(
                    column, sql.SQL(COMPARISONS[op]), sql.SQL(self.quantifier.upper())
                )
            else:
                condition = sql.SQL("{} {} %s").format(column, sql.SQL(COMPARISONS[op]))
        return sql.SQL("NOT ({})").format(condition) if self.negate else condition


@dataclass
class Logic:
    operator: str  #: ``and`` / ``or``
    negate: bool
    children: list[Filter | Logic] = field(default_factory=list)

    def render(self, relation: sql.Composable, params: list[Any]) -> sql.Composable:
        joined = sql.SQL(f" {self.operator.upper()} ").join(
            sql.SQL("({})").format(child.render(relation, params)) for child in self.children
        )
        return sql.SQL("NOT ({})").format(joined) if self.negate else joined


def _filter_error(value: str) -> PgrstError:
    first = value[:1] or "end of input"
    return query_param_error(
        f'"failed to parse filter ({value})" (line 1, column 1)',
        f'unexpected "{first}" expecting "not" or operator (eq, gt, ...)',
    )


def looks_like_filter(value: str) -> bool:
    """PostgREST's ``hasOperator``: a value is a filter when it starts with ``not.``,
    ``is``, ``in`` or a known operator. Anything else is a plain parameter: an RPC argument
    on ``/rpc``, and silently ignored on a table (``QueryParams.hs`` partitions them so)."""
    head = value.split(".")
    if head[0] == "not" and len(head) > 2:
        return True
    first = re.sub(r"\(.*$", "", head[0])
    if head[0] in ("is", "in"):
        return True
    return first in COMPARISONS or first in FTS


def parse_filter(column: str, value: str) -> Filter:
    """``col=[not.]op[(any|all)].value`` (Operators table; ``in``, ``is``, fts forms)."""
    negate = False
    rest = value
    if rest.startswith("not."):
        negate, rest = True, rest[4:]
    match = re.match(r"^([a-z]+)(?:\(([^)]*)\))?\.(.*)$", rest, re.DOTALL)
    if not match:
        raise _filter_error(value)
    op, modifier, operand = match.group(1), match.group(2), match.group(3)
    target = parse_field(column)
    if op == "in":
        if not (operand.startswith("(") and operand.endswith(")")):
            raise _filter_error(value)
        items = [_unquote(item) for item in split_top_level(operand[1:-1])] if operand[1:-1] else []
        return Filter(target, negate, "in", items)
    if op == "is":
        if operand not in IS_VALUES:
            raise _filter_error(value)
        return Filter(target, negate, "is", operand)
    if op in FTS:
        return Filter(target, negate, op, (modifier, operand))
    if op not in COMPARISONS:
        raise _filter_error(value)
    quantifier = None
    if modifier is not None:
        if modifier not in ("any", "all") or op not in QUANTIFIABLE:
            raise _filter_error(value)
        quantifier = modifier
    return Filter(target, negate, op, operand, quantifier)


def parse_logic(key: str, value: str) -> Logic:
    """``or=(a.eq.1,and(b.gt.2,c.lt.3))`` and ``not.and=(…)`` (Logical operators)."""
    negate = key.startswith("not.")
    operator = key.removeprefix("not.")
    if not (value.startswith("(") and value.endswith(")")):
        raise query_param_error(
            f'"failed to parse logic tree ({value})" (line 1, column 1)',
            'unexpected end of input expecting "("',
        )
    return Logic(
        operator, negate, [_parse_tree_item(item) for item in split_top_level(value[1:-1])]
    )


def _parse_tree_item(item: str) -> Filter | Logic:
    item = item.strip()
    match = re.match(r"^(not\.)?(and|or)(\(.*\))$", item, re.DOTALL)
    if match:
        return parse_logic((match.group(1) or "") + match.group(2), match.group(3))
    # field.op.value: the field ends at the first dot that is not inside a JSON arrow key.
    match = re.match(r"^([^.]+?)\.(.*)$", item, re.DOTALL)
    if not match:
        raise _filter_error(item)
    column, rest = match.group(1), match.group(2)
    parsed = parse_filter(column, rest)
    if isinstance(parsed.value, str) and parsed.operator not in FTS:
        parsed.value = _unquote(parsed.value)
    return parsed


# --- order -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderTerm:
    field: Field
    descending: bool
    nulls: str | None  #: ``first`` / ``last`` / None

    def render(self, relation: sql.Composable) -> sql.Composable:
        direction = " DESC" if self.descending else " ASC"
        nulls = f" NULLS {self.nulls.upper()}" if self.nulls else ""
        return sql.SQL("{}{}").format(self.field.render(relation), sql.SQL(direction + nulls))


def parse_order(text: str) -> list[OrderTerm]:
    """``order=a.desc.nullslast,b`` (Ordering); ascending when no direction is given."""
    terms = []
    for raw in split_top_level(text):
        raw = raw.strip()
        if "(" in raw:
            raise not_modelled(f"ordering on embedded resources (order={raw})")
        pieces = raw.split(".")
        modifiers = []
        while len(pieces) > 1 and pieces[-1] in ("asc", "desc", "nullsfirst", "nullslast"):
            modifiers.insert(0, pieces.pop())
        column = ".".join(pieces)
        if (
            not column
            or len(modifiers) > 2
            or (len(modifiers) == 2 and modifiers[0] not in ("asc", "desc"))
        ):
            raise query_param_error(
                f'"failed to parse order ({raw})" (line 1, column 1)',
                'unexpected "." expecting "asc", "desc", "nullsfirst" or "nullslast"',
            )
        descending = "desc" in modifiers
        nulls = next((m.removeprefix("nulls") for m in modifiers if m.startswith("nulls")), None)
        terms.append(OrderTerm(parse_field(column), descending, nulls))
    return terms


# --- ranges ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Rows ``offset`` … ``offset + limit - 1``; ``limit`` None means unbounded."""

    offset: int = 0
    limit: int | None = None

    def intersect(self, other: Range) -> Range:
        offset = max(self.offset, other.offset)
        ends = [r.offset + r.limit for r in (self, other) if r.limit is not None]
        if not ends:
            return Range(offset, None)
        return Range(offset, max(0, min(ends) - offset))

    def restrict(self, max_rows: int | None) -> Range:
        """``db-max-rows``: "A hard limit to the number of rows PostgREST will fetch from a
        view, table, or function"
        (https://docs.postgrest.org/en/v12/references/configuration.html#db-max-rows);
        ``restrictRange`` caps the limit, silently: no error, no header says so."""
        if max_rows is None:
            return self
        limit = max_rows if self.limit is None else min(self.limit, max_rows)
        return Range(self.offset, limit)


def parse_range(
    limit: str | None, offset: str | None, header: str | None, unit: str | None
) -> Range:
    """``limit``/``offset`` intersected with a ``Range: 0-24`` header (Limits and
    Pagination); a bad one is PGRST103 (416) or PGRST100."""
    requested = Range()
    if limit is not None or offset is not None:
        try:
            lim = int(limit) if limit is not None else None
            off = int(offset) if offset is not None else 0
        except ValueError:
            bad = limit if limit is not None and not _is_int(limit) else offset
            raise query_param_error(
                f'"failed to parse limit or offset ({bad})" (line 1, column 1)',
                "unexpected input expecting digit",
            ) from None
        if lim is not None and lim < 0:
            raise invalid_range("Limit should be greater than or equal to zero.")
        requested = Range(max(off, 0), lim)
    if header and (unit is None or unit.strip().lower() == "items"):
        match = re.fullmatch(r"\s*(\d+)-(\d*)\s*", header)
        if match:
            lower = int(match.group(1))
            upper = int(match.group(2)) if match.group(2) else None
            if upper is not None and lower > upper:
                raise invalid_range(
                    "The lower boundary must be lower than or equal to the upper boundary in "
                    "the Range header."
                )
            header_range = Range(lower, None if upper is None else upper - lower + 1)
            requested = requested.intersect(header_range)
    return requested


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text) is not None


# --- Prefer ------------------------------------------------------------------------------

PREFERENCES = {
    "return": {"minimal", "representation", "headers-only"},
    "count": {"exact", "planned", "estimated"},
    "resolution": {"merge-duplicates", "ignore-duplicates"},
    "missing": {"default", "null"},
    "params": {"single-object"},
    "handling": {"strict", "lenient"},
    "tx": {"commit", "rollback"},
}


@dataclass
class Preferences:
    values: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        return self.values.get(key)


def parse_prefer(headers: list[str]) -> Preferences:
    """``Prefer: return=representation,count=exact`` (Preferences doc). Unknown or invalid
    preferences are ignored unless ``handling=strict``, which makes them PGRST122."""
    prefs = Preferences()
    for header in headers:
        for token in header.split(","):
            token = token.strip()
            if not token:
                continue
            key, _, value = token.partition("=")
            key, value = key.strip(), value.strip()
            known = key in PREFERENCES and value in PREFERENCES[key]
            if known or (key in ("max-affected", "timezone") and value):
                prefs.values.setdefault(key, value)
            else:
                prefs.invalid.append(token)
    if prefs.get("handling") == "strict" and prefs.invalid:
        raise PgrstError(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
            "Invalid preferences: " + ", ".join(prefs.invalid),
        )
    return prefs


# --- helpers -----------------------------------------------------------------------------


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes (URL grammar: reserved
    characters are quoted with ``"``, and ``\\"``/``\\\\`` escape inside quotes)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    current: list[str] = []
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_columns(text: str) -> list[str]:
    """``columns=a,b`` or postgrest-py's quoted ``"a","b"`` (Specifying Columns)."""
    return [_unquote(item) for item in split_top_level(text) if item.strip()]
