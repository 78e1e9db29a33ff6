"""PostgREST's error JSON and its HTTP status table.

Every error body is ``{"code", "message", "details", "hint"}`` with
``Content-Type: application/json; charset=utf-8`` and a ``Proxy-Status: PostgREST;
error=<code>`` header (postgrest-py reads the code from that header when the body is not
JSON). Sources:

- https://docs.postgrest.org/en/v12/references/errors.html ("HTTP Status Codes", "PostgREST
  Error Codes"), and the code that implements the page, ``src/PostgREST/Error.hs``
  (``mapSQLtoHTTP``, ``pgErrorStatus``, the ``ErrorBody`` instances) in PostgREST 12/13.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PgrstError(Exception):
    """An error answered the way PostgREST answers it."""

    status: int
    code: str
    message: str
    details: Any = None
    hint: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.code}: {self.message}")

    def body(self) -> bytes:
        return json.dumps(
            {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}
        ).encode()


def sqlstate_status(sqlstate: str, message: str, *, authenticated: bool) -> int:
    """The HTTP status PostgREST gives a PostgreSQL error (``Error.hs`` ``mapSQLtoHTTP``).

    ``authenticated`` is PostgREST's ``Just authRole /= configDbAnonRole``: a request
    running as ``anon`` gets 401 for 42501, any other role 403 ("if authenticated 403,
    else 401" in the docs' table).
    """
    code = sqlstate
    if code.startswith("08"):
        return 503  # pg connection err
    if code.startswith("09"):
        return 500  # triggered action exception
    if code.startswith(("0L", "0P")):
        return 403  # invalid grantor / invalid role specification
    if code in ("23503", "23505"):
        return 409  # foreign key / uniqueness violation
    if code == "25006":
        return 405  # read only sql transaction
    if code == "21000":
        # cardinality_violation: pg-safeupdate's "requires a WHERE clause" is a client error
        return 400 if message.endswith("requires a WHERE clause") else 500
    if code == "22023":
        # invalid_parameter_value; a JWT role that does not exist is an auth error
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if code.startswith("25"):
        return 500  # invalid transaction state
    if code.startswith("28"):
        return 403  # invalid auth specification
    if code.startswith(("2D", "38", "39", "3B", "40")):
        return 500  # tx termination, external routine, savepoint, transaction rollback
    if code == "53400":
        return 500  # config limit exceeded
    if code.startswith("53"):
        return 503  # insufficient resources
    if code.startswith(("54", "55")):
        return 500  # too complex, object not in prerequisite state
    if code == "57P01":
        return 503  # terminating connection due to administrator command
    if code.startswith(("57", "58", "F0", "HV")):
        return 500  # operator intervention (57014 statement timeout), system, config, fdw
    if code == "P0001":
        return 400  # default code for RAISE
    if code.startswith(("P0", "XX")):
        return 500  # PL/pgSQL error, internal error
    if code == "42883":
        return 406 if message.startswith("function xmlagg(") else 404  # undefined function
    if code == "42P01":
        return 404  # undefined table
    if code == "42P17":
        return 500  # infinite recursion
    if code == "42501":
        return 403 if authenticated else 401  # insufficient privilege
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])  # RAISE sqlstate 'PT402' answers 402 (errors page, "RAISE errors")
    return 400  # "other"


def from_postgres(exc: Exception, *, authenticated: bool) -> PgrstError:
    """A psycopg error as PostgREST forwards it: SQLSTATE, message, detail and hint as is."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None) or (diag.sqlstate if diag else None)
    if not sqlstate:
        # The connection broke mid-request: PostgREST's "Database client error" (PGRST001).
        return PgrstError(
            503, "PGRST001", "Database client error. Retrying the connection.", str(exc), None
        )
    message = (diag.message_primary if diag else None) or str(exc)
    if sqlstate == "PGRST":
        return _raised_pgrst(message, diag.message_detail if diag else None)
    status = sqlstate_status(sqlstate, message, authenticated=authenticated)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return PgrstError(
        status,
        sqlstate,
        message,
        diag.message_detail if diag else None,
        diag.message_hint if diag else None,
        headers,
    )


def _raised_pgrst(message: str, detail: str | None) -> PgrstError:
    """``RAISE sqlstate 'PGRST'`` takes over the response ("Add HTTP Headers with RAISE")."""
    try:
        body = json.loads(message)
        extra = json.loads(detail or "")
        status = int(extra["status"])
        headers = {str(k): str(v) for k, v in dict(extra.get("headers") or {}).items()}
        return PgrstError(
            status,
            str(body["code"]),
            str(body["message"]),
            body.get("details"),
            body.get("hint"),
            headers,
        )
    except (ValueError, KeyError, TypeError):
        return PgrstError(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            f"Invalid JSON value for MESSAGE: '{message}'",
            "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and "
            "optional keys: 'details', 'hint'.",
        )


# --- PostgREST's own errors (the PGRST table on the errors page) ----------------------


def query_param_error(message: str, details: str) -> PgrstError:
    """PGRST100: the query string does not parse (filters, operators, ordering)."""
    return PgrstError(400, "PGRST100", message, details)


def invalid_body(message: str) -> PgrstError:
    """PGRST102: an empty or malformed JSON body."""
    return PgrstError(400, "PGRST102", message)


def invalid_range(details: str) -> PgrstError:
    """PGRST103: a bad limit/offset or Range header (416)."""
    return PgrstError(416, "PGRST103", "Requested range not satisfiable", details)


def unacceptable_schema(schema: str, exposed: tuple[str, ...]) -> PgrstError:
    """PGRST106: Accept-Profile/Content-Profile names a schema that is not exposed."""
    return PgrstError(
        406,
        "PGRST106",
        f"Invalid schema: {schema}",
        None,
        f"Only the following schemas are exposed: {', '.join(exposed)}",
    )


def media_type_error(accepted: str) -> PgrstError:
    """PGRST107 (406, ``MediaTypeError``): no media type the request accepts can be served."""
    return PgrstError(406, "PGRST107", f"None of these media types are available: {accepted}")


def singularity_error(rows: int) -> PgrstError:
    """PGRST116: ``Accept: application/vnd.pgrst.object+json`` and not exactly one row."""
    return PgrstError(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        f"The result contains {rows} rows",
    )


def unsupported_method(method: str) -> PgrstError:
    """PGRST117: a verb PostgREST does not serve."""
    return PgrstError(405, "PGRST117", f"Unsupported HTTP method: {method}")


def invalid_rpc_method(method: str) -> PgrstError:
    """PGRST101: functions answer GET, HEAD and POST only."""
    return PgrstError(405, "PGRST101", f"Cannot use the {method} method on RPC")


def column_not_found(table: str, column: str) -> PgrstError:
    """PGRST204: a ``columns`` or payload key that the table does not have."""
    return PgrstError(
        400, "PGRST204", f"Could not find the '{column}' column of '{table}' in the schema cache"
    )


def table_not_found(schema: str, table: str, hint: str | None) -> PgrstError:
    """PGRST205: the path names no table or view of the schema cache."""
    return PgrstError(
        404,
        "PGRST205",
        f"Could not find the table '{schema}.{table}' in the schema cache",
        None,
        hint,
    )


def function_not_found(
    schema: str, name: str, keys: list[str], *, single_json: bool, hint: str | None
) -> PgrstError:
    """PGRST202, worded as ``Error.hs`` words ``NoRpc`` for a JSON (or GET) call."""
    func = f"{schema}.{name}"
    listed = ", ".join(keys)
    signature = f"({listed})" if keys else " without parameters"
    searched = (
        f" with parameter{'s' if len(keys) > 1 else ''} {listed}" if keys else " without parameters"
    ) + (" or with a single unnamed json/jsonb parameter" if single_json else "")
    return PgrstError(
        404,
        "PGRST202",
        f"Could not find the function {func}{signature} in the schema cache",
        f"Searched for the function {func}{searched}, but no matches were found in the schema "
        "cache.",
        hint,
    )


def ambiguous_function(candidates: list[str]) -> PgrstError:
    """PGRST203 (300): overloads that the argument names cannot tell apart."""
    return PgrstError(
        300,
        "PGRST203",
        "Could not choose the best candidate function between: " + ", ".join(candidates),
        None,
        "Try renaming the parameters or the function itself in the database so function "
        "overloading can be resolved",
    )


def pool_timeout() -> PgrstError:
    """PGRST003 (504): no pool connection within ``db-pool-acquisition-timeout``."""
    return PgrstError(504, "PGRST003", "Timed out acquiring connection from connection pool.")


def connection_error(details: str) -> PgrstError:
    """PGRST000 (503): the database cannot be reached."""
    return PgrstError(
        503, "PGRST000", "Database connection error. Retrying the connection.", details
    )


def jwt_decode_error(message: str, details: str | None = None) -> PgrstError:
    """PGRST301: the token does not verify (``JwtDecodeErr``), with ``WWW-Authenticate``."""
    return PgrstError(
        401,
        "PGRST301",
        message,
        details,
        None,
        {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{message}"'},
    )


def jwt_claims_error(message: str) -> PgrstError:
    """PGRST303: a verified token whose claims fail (``JwtClaimsErr``: expired, ``nbf``...).

    PostgREST 12 answered these as PGRST301; 13 split them out. Hosted Supabase answers
    PGRST303 "JWT expired" today.
    """
    return PgrstError(
        401,
        "PGRST303",
        message,
        None,
        None,
        {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{message}"'},
    )
