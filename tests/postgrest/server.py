"""The PostgREST stand-in: an HTTP server that runs each request against real PostgreSQL.

It answers under ``/rest/v1/`` as a hosted Supabase project does (gateway + PostgREST 12/13)
and is driven by the real ``supabase`` client in the tests. Each request:

1. passes the gateway's ``apikey`` check and PostgREST's JWT check (``auth.py``);
2. takes a connection from a pool of ``pool_size`` connections opened as the
   ``authenticator`` role, waiting at most ``pool_timeout`` seconds (else PGRST003, 504:
   https://docs.postgrest.org/en/v12/references/connection_pool.html);
3. runs in **one transaction** (https://docs.postgrest.org/en/v12/references/transactions.html):
   ``BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY|READ WRITE`` (GET/HEAD and stable
   functions read only), then one ``SELECT set_config(…, true), …`` that sets
   ``search_path``, the role's settings (``ALTER ROLE … SET statement_timeout``), ``role``
   (the impersonation, what ``SET LOCAL ROLE`` does), ``request.jwt.claims``,
   ``request.method``, ``request.path``, ``request.headers``, ``request.cookies`` and the
   function's hoisted settings, in PostgREST's order (``Query/PreQuery.hs``
   ``txVarQuery``), then the main statement, then COMMIT, or ROLLBACK on any error;
4. answers with PostgREST's body, status and headers (``Content-Range`` on every read,
   ``Preference-Applied``, the error JSON).

Nothing survives between two requests but committed data: the role and settings are
transaction-local and every transaction ends. Faults (503/520 answers, delays, dropped
connections, before or after the commit) are injected with ``inject(Fault(...))``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from queue import Empty, LifoQueue
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import psycopg
from psycopg import sql

from tests.postgrest import catalog, errors, grammar, statements
from tests.postgrest.auth import GatewayError, ProjectKeys, gateway_bearer, verify_jwt
from tests.postgrest.catalog import Relation, Routine
from tests.postgrest.errors import PgrstError
from tests.postgrest.grammar import Filter, Logic, Preferences
from tests.postgrest.statements import ReadShape

#: Supabase's defaults: ``db-schemas`` exposes public (and graphql_public),
#: ``db-extra-search-path`` is "public, extensions", ``db-max-rows`` 1,000
#: (https://supabase.com/docs/reference/javascript/select: "By default, Supabase projects
#: return a maximum of 1,000 rows").
EXPOSED_SCHEMAS = ("public", "graphql_public")
EXTRA_SEARCH_PATH = ("public", "extensions")
DEFAULT_MAX_ROWS = 1000
ANON_ROLE = "anon"
JSON_TYPE = "application/json; charset=utf-8"
OBJECT_TYPE = "application/vnd.pgrst.object+json; charset=utf-8"
# Hoisted function settings (db-hoisted-tx-settings' default in PostgREST 13).
HOISTED_SETTINGS = (
    "statement_timeout",
    "plan_filter.statement_cost_limit",
    "default_transaction_isolation",
)


# --- faults and the request log -----------------------------------------------------------


@dataclass
class Fault:
    """A fault for the next matching requests.

    ``method``/``path`` select requests (``path`` is a regular expression searched in the
    path after ``/rest/v1``, e.g. ``"^/billing_alerts"`` or ``"/rpc/claim_due"``); ``times``
    is how many to hit. The fault then:

    - waits ``delay`` seconds first (a slow network or a slow gateway);
    - answers ``status`` (with ``body``; 503 defaults to PostgREST's PGRST002 JSON, 520 to
      Cloudflare's HTML page) instead of running the request, or
    - ``drop``s the connection without an answer (httpx raises RemoteProtocolError);
    - with ``after_commit=True`` the request runs and commits first, and only then is the
      answer replaced or dropped: the write happened, the client cannot know it.
    """

    method: str | None = None
    path: str | None = None
    times: int = 1
    delay: float = 0.0
    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    after_commit: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in saw it (``headers`` lowercased) and the status it got
    (None when the connection was dropped)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int | None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


CLOUDFLARE_520 = (
    b"<!DOCTYPE html><html><head><title>520: Web server is returning an unknown error"
    b"</title></head><body><h1>Web server is returning an unknown error</h1>"
    b"<p>Error code 520</p></body></html>"
)


def _fault_response(fault: Fault) -> Response:
    status = fault.status or 503
    if fault.body is not None:
        body, content_type = fault.body, fault.headers.get("Content-Type", JSON_TYPE)
    elif status == 520:
        body, content_type = CLOUDFLARE_520, "text/html; charset=UTF-8"
    elif status == 503:
        body = errors.PgrstError(
            503, "PGRST002", "Could not query the database for the schema cache. Retrying."
        ).body()
        content_type = JSON_TYPE
    else:
        body, content_type = json.dumps({"message": f"injected {status}"}).encode(), JSON_TYPE
    headers = {"Content-Type": content_type, **fault.headers}
    return Response(status, headers, body)


# --- the pool ---------------------------------------------------------------------------


class Pool:
    """PostgREST's connection pool: ``size`` connections, an acquisition timeout."""

    def __init__(self, conninfo: str, size: int, timeout: float) -> None:
        self.conninfo = conninfo
        self.size = size
        self.timeout = timeout
        self._idle: LifoQueue[psycopg.Connection[Any]] = LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self.timeout):
            raise errors.pool_timeout()
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except Empty:
                conn = self._connect()
            yield conn
        finally:
            if conn is not None and not conn.closed and conn.info.transaction_status == 0:
                self._idle.put(conn)
            elif conn is not None:
                with suppress(Exception):
                    conn.close()
            self._slots.release()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, application_name="postgrest")
        except psycopg.OperationalError as exc:
            raise errors.connection_error(str(exc).strip()) from None
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with suppress(Exception):
                    conn.close()
            self._all.clear()


# --- the server -------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str  #: after /rest/v1
    query: list[tuple[str, str]]
    headers: dict[str, str]  #: lowercased names; repeated headers joined with ", "
    prefer: list[str]
    body: bytes

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)


class PostgrestStandin:
    """A running stand-in for one test database. See the package docstring for its API."""

    def __init__(
        self,
        database_url: str,
        authenticator_url: str,
        keys: ProjectKeys | None = None,
        *,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        pool_size: int = 10,
        pool_timeout: float = 10.0,
    ) -> None:
        self.database_url = database_url
        self.keys = keys or ProjectKeys.generate()
        self.max_rows = max_rows
        self.pool = Pool(authenticator_url, pool_size, pool_timeout)
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        #: tracebacks of requests the stand-in itself failed on (a bug here, not in the code
        #: under test); the fixture fails the test when any is left
        self.crashes: list[str] = []
        self._clients: list[httpx.Client] = []

    # -- lifecycle --

    @property
    def url(self) -> str:
        """The project URL (``SUPABASE_URL``); PostgREST answers under ``/rest/v1``."""
        assert self._server is not None, "the stand-in is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def rest_url(self) -> str:
        return f"{self.url}/rest/v1"

    def start(self) -> PostgrestStandin:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            with self._lock:
                for sock in list(self._sockets):
                    with suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    with suppress(OSError):
                        sock.close()
            self._server.server_close()
            self._server = None
        self.pool.close()

    def __enter__(self) -> PostgrestStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients and setup --

    def client(
        self,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: bool = True,
        http: httpx.Client | None = None,
    ) -> Any:
        """The real ``supabase`` client for this project, on its own ``httpx.Client``.

        ``key`` defaults to the ``sb_secret_…`` key; pass ``keys.service_role``,
        ``keys.anon``, ``keys.publishable`` or any string. ``retry`` is postgrest-py's own
        GET retry (``ClientOptions.postgrest_client_retry``).
        """
        from supabase import ClientOptions, create_client

        http = http or httpx.Client(timeout=timeout)
        self._clients.append(http)
        options = ClientOptions(
            httpx_client=http,
            postgrest_client_retry=retry,
            auto_refresh_token=False,
            persist_session=False,
        )
        return create_client(self.url, self.keys.secret if key is None else key, options=options)

    def close_clients(self) -> None:
        for http in self._clients:
            with suppress(Exception):
                http.close()
        self._clients.clear()

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run SQL as the database owner (setup and inspection, outside the API)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def resize_pool(self, size: int, timeout: float | None = None) -> None:
        """A new pool of ``size`` connections (and acquisition ``timeout``), e.g. 1 to put
        every request on one connection or to provoke PGRST003."""
        old = self.pool
        self.pool = Pool(old.conninfo, size, old.timeout if timeout is None else timeout)
        old.close()

    # -- test controls --

    def inject(self, fault: Fault) -> Fault:
        """Queue a fault for the next matching request(s); returns it (see ``hits``)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_to(self, path_pattern: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests whose path matches (``re.search``), optionally by method."""
        return [
            r
            for r in self.requests
            if re.search(path_pattern, r.path) and (method is None or r.method == method)
        ]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.hits >= fault.times:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- the request pipeline --

    def handle(
        self, method: str, target: str, headers: dict[str, str], prefer: list[str], body: bytes
    ) -> tuple[Response | None, Fault | None]:
        parts = urlsplit(target)
        path = unquote(parts.path)
        if not path.startswith("/rest/v1"):
            # The gateway's answer for a route it does not know.
            return Response(
                404,
                {"Content-Type": JSON_TYPE},
                b'{"message":"no Route matched with those values"}',
            ), None
        rest_path = path[len("/rest/v1") :] or "/"
        fault = self._take_fault(method, rest_path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and not fault.after_commit:
            if fault.drop:
                return None, fault
            if fault.status is not None:
                return _fault_response(fault), fault
        query = parse_qsl(parts.query, keep_blank_values=True)
        request = Request(method, rest_path, query, headers, prefer, body)
        try:
            response = self._respond(request)
        except PgrstError as exc:
            response = _error_response(exc)
        except Exception:
            self.crashes.append(traceback.format_exc())
            response = _error_response(PgrstError(500, "STANDIN", "the stand-in crashed"))
        if fault is not None and fault.after_commit:
            if fault.drop:
                return None, fault
            if fault.status is not None:
                return _fault_response(fault), fault
        return response, fault

    def _respond(self, request: Request) -> Response:
        # 1. The gateway: apikey (header or ?apikey=), then the bearer it forwards.
        apikey = request.headers.get("apikey") or request.param("apikey")
        bearer = gateway_bearer(self.keys, apikey, request.headers.get("authorization"))
        if bearer is not None:
            # What reaches PostgREST: the gateway's JWT in place of an opaque key. (Whether
            # the hosted gateway also strips ``apikey``, as self-hosted Kong's
            # ``hide_credentials`` does, is not documented; the stand-in passes it on.)
            request.headers["authorization"] = f"Bearer {bearer}"
        # 2. PostgREST: the JWT's role, or db-anon-role without a token.
        if bearer is None:
            claims: dict[str, Any] = {}
            role = ANON_ROLE
        else:
            claims = verify_jwt(bearer, self.keys.jwt_secret)
            role_claim = claims.get("role", ANON_ROLE)
            role = role_claim if isinstance(role_claim, str) else json.dumps(role_claim)
        claims = {**claims, "role": role}
        method = request.method
        schema = self._schema(request)
        if request.path.startswith("/rpc/"):
            name = request.path[len("/rpc/") :]
            if method not in ("GET", "HEAD", "POST"):
                raise errors.invalid_rpc_method(method)
            return self._rpc(request, schema, name, role, claims)
        name = request.path.strip("/")
        if not name or "/" in name:
            if not name and method in ("GET", "HEAD"):
                raise grammar.not_modelled("the OpenAPI root endpoint")
            raise PgrstError(404, "PGRST125", "Invalid path specified in request URL")
        if method not in ("GET", "HEAD", "POST", "PATCH", "DELETE"):
            if method == "PUT":
                raise grammar.not_modelled("PUT (single-row upsert)")
            raise errors.unsupported_method(method)
        return self._table(request, schema, name, role, claims)

    def _schema(self, request: Request) -> str:
        # Accept-Profile for reads, Content-Profile for writes (Switching schemas).
        header = "accept-profile" if request.method in ("GET", "HEAD") else "content-profile"
        schema = request.headers.get(header) or EXPOSED_SCHEMAS[0]
        if schema not in EXPOSED_SCHEMAS:
            raise errors.unacceptable_schema(schema, EXPOSED_SCHEMAS)
        return schema

    # -- tables --

    def _table(
        self, request: Request, schema: str, name: str, role: str, claims: dict[str, Any]
    ) -> Response:
        prefs = grammar.parse_prefer(request.prefer)
        single = _wants_single(request.headers.get("accept"))
        shape = _read_shape(
            request, single, self.max_rows if request.method in ("GET", "HEAD") else None
        )
        with self.pool.connection() as conn:
            relation = catalog.find_relation(conn, schema, name)
            if relation is None:
                hint = catalog.fuzzy_hint(catalog.relation_names(conn, schema), name)
                raise errors.table_not_found(
                    schema, name, f"Perhaps you meant the table '{schema}.{hint}'" if hint else None
                )
            if request.method in ("GET", "HEAD"):
                return self._read(conn, request, relation, shape, prefs, role, claims)
            return self._write(conn, request, relation, shape, prefs, role, claims)

    def _read(
        self,
        conn: psycopg.Connection[Any],
        request: Request,
        relation: Relation,
        shape: ReadShape,
        prefs: Preferences,
        role: str,
        claims: dict[str, Any],
    ) -> Response:
        count = prefs.get("count")
        statement = statements.read_table(relation, shape, count=count, max_rows=self.max_rows)
        with self._transaction(conn, request, role, claims, read_only=True) as tx:
            row = tx.run(statement)
            total = row["total_result_set"]
            total = _counted(tx, statement, count, total, self.max_rows)
            _check_single(shape, row)
        return self._read_response(
            request, shape, row, total if count else None, prefs, location=f"/{relation.name}"
        )

    def _read_response(
        self,
        request: Request,
        shape: ReadShape,
        row: dict[str, Any],
        total: int | None,
        prefs: Preferences,
        *,
        location: str | None,
        void: bool = False,
    ) -> Response:
        page = int(row["page_total"])
        lower = shape.range.offset
        upper = lower + page - 1
        # https://docs.postgrest.org/en/v12/references/api/pagination_count.html: every
        # response says its range; with a count, 206 when the range is partial, and
        # (RangeQuery.rangeStatusHeader) 416 PGRST103 past the end, "*" for an empty range.
        status = 200
        if total is not None:
            if lower > total:
                status = 416
            elif (1 + upper - lower) < total:
                status = 206
        range_text = f"{lower}-{upper}" if (total != 0 and lower <= upper) else "*"
        headers = {"Content-Range": f"{range_text}/{'*' if total is None else total}"}
        if location is not None:
            canonical = "&".join(f"{k}={v}" for k, v in sorted(request.query))
            headers["Content-Location"] = location + (f"?{canonical}" if canonical else "")
        applied = _applied(prefs, ("count",))
        if applied:
            headers["Preference-Applied"] = applied
        if status == 416:
            err = errors.invalid_range(
                f"An offset of {lower} was requested, but there are only {total} rows."
            )
            return _error_response(err)
        if void:
            return _with_gucs(Response(204, headers), row)
        headers["Content-Type"] = OBJECT_TYPE if shape.single else JSON_TYPE
        body = b"" if request.method == "HEAD" else row["body"].encode()
        return _with_gucs(Response(status, headers, body), row)

    def _write(
        self,
        conn: psycopg.Connection[Any],
        request: Request,
        relation: Relation,
        shape: ReadShape,
        prefs: Preferences,
        role: str,
        claims: dict[str, Any],
    ) -> Response:
        representation = prefs.get("return") == "representation"
        counted = prefs.get("count") is not None
        method = request.method
        if method in ("PATCH", "DELETE") and (request.param("limit") or request.param("offset")):
            raise grammar.not_modelled("limited updates and deletes (limit/offset on PATCH/DELETE)")
        if method == "POST":
            statement, upsert = self._insert_statement(
                request, relation, shape, prefs, representation
            )
        elif method == "PATCH":
            payload = _json_body(request.body)
            if not isinstance(payload, dict):
                raise errors.invalid_body("Empty or invalid json")
            columns = self._payload_columns(request, relation, [payload])
            if not columns:
                # An empty object updates nothing.
                return _empty_update(representation)
            statement = statements.update(
                relation,
                columns,
                json.dumps(payload),
                shape,
                representation=representation,
                counted=counted,
            )
            upsert = False
        else:
            statement = statements.delete(
                relation, shape, representation=representation, counted=counted
            )
            upsert = False
        with self._transaction(conn, request, role, claims, read_only=False) as tx:
            row = tx.run(statement)
            if representation:
                _check_single(shape, row)
        return self._write_response(method, relation, prefs, row, representation, shape, upsert)

    def _insert_statement(
        self,
        request: Request,
        relation: Relation,
        shape: ReadShape,
        prefs: Preferences,
        representation: bool,
    ) -> tuple[statements.Statement, bool]:
        payload = _json_body(request.body)
        rows = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(r, dict) for r in rows):
            raise errors.invalid_body("All object keys must match")
        columns = self._payload_columns(request, relation, rows)
        resolution = prefs.get("resolution")
        on_conflict_text = request.param("on_conflict")
        on_conflict = (
            grammar.parse_columns(on_conflict_text)
            if on_conflict_text
            else list(relation.primary_key)
        )
        if resolution and not on_conflict:
            resolution = None  # no key to resolve on: a plain insert (Upsert doc)
        if prefs.get("missing") == "default":
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for r in rows:
                groups.setdefault(tuple(c for c in columns if c in r), []).append(r)
            grouped = [(list(k), json.dumps(v)) for k, v in groups.items()]
        else:
            grouped = [(columns, json.dumps(rows))]
        if not rows:
            grouped = [(columns, "[]")] if columns else []
            if not grouped:
                grouped = [(list(relation.column_names), "[]")]
        statement = statements.insert(
            relation,
            grouped,
            on_conflict=on_conflict if resolution else None,
            resolution=resolution,
            representation=representation,
            shape=shape,
        )
        return statement, resolution is not None

    def _payload_columns(
        self, request: Request, relation: Relation, rows: list[dict[str, Any]]
    ) -> list[str]:
        """``columns=`` when given (Specifying Columns), else the payload's keys, which must
        be the same in every object of a bulk insert (Bulk Insert: "all-matching keys")."""
        given = request.param("columns")
        if given is not None:
            columns = grammar.parse_columns(given)
        else:
            keys = [list(r) for r in rows]
            if any(set(k) != set(keys[0]) for k in keys[1:]):
                raise errors.invalid_body("All object keys must match")
            columns = keys[0] if keys else []
        for column in columns:
            if column not in relation.columns:
                raise errors.column_not_found(relation.name, column)
        return columns

    def _write_response(
        self,
        method: str,
        relation: Relation,
        prefs: Preferences,
        row: dict[str, Any],
        representation: bool,
        shape: ReadShape,
        upsert: bool,
    ) -> Response:
        total = row.get("total_result_set", row.get("total"))
        counted = prefs.get("count") is not None
        shown_total = str(total) if counted and total is not None else "*"
        headers: dict[str, str] = {}
        if method == "PATCH":
            n = int(total or 0)
            # contentRangeH 0 (n - 1): "0-2/*", or "*/*" when nothing changed
            headers["Content-Range"] = f"{'0-' + str(n - 1) if n > 0 else '*'}/{shown_total}"
        else:
            headers["Content-Range"] = f"*/{shown_total}"
        applied_keys = ["return", "count"] + (["resolution", "missing"] if method == "POST" else [])
        applied = _applied(prefs, tuple(applied_keys), resolution=upsert)
        if applied:
            headers["Preference-Applied"] = applied
        if method == "POST":
            inserted = row.get("inserted")
            # isInsertIfGTZero: a merge-duplicates upsert that inserted no row is a 200.
            status = (
                200
                if (
                    prefs.get("resolution") == "merge-duplicates"
                    and upsert
                    and inserted is not None
                    and inserted <= 0
                )
                else 201
            )
        else:
            status = 200 if representation else 204
        if not representation:
            return _with_gucs(Response(status, headers), row)
        headers["Content-Type"] = OBJECT_TYPE if shape.single else JSON_TYPE
        return _with_gucs(Response(status, headers, row["body"].encode()), row)

    # -- functions --

    def _rpc(
        self, request: Request, schema: str, name: str, role: str, claims: dict[str, Any]
    ) -> Response:
        prefs = grammar.parse_prefer(request.prefer)
        single_object = prefs.get("params") == "single-object"
        is_post = request.method == "POST"
        if is_post:
            # The body's keys are the argument names; an empty body calls with none.
            payload = _json_body(request.body) if request.body.strip() else {}
            arguments = request.body.decode() if request.body.strip() else "{}"
            keys = list(payload) if isinstance(payload, dict) and not single_object else []
        else:
            # GET: the query parameters that are not filters are the arguments (QueryParams.hs).
            args = {
                k: v
                for k, v in request.query
                if k not in grammar.RESERVED
                and not k.startswith("not.")
                and not grammar.looks_like_filter(v)
            }
            arguments = json.dumps(args)
            keys = list(args)
        with self.pool.connection() as conn:
            candidates = catalog.functions_named(conn, schema, name)
            routine, one_positional = _choose_routine(
                candidates, set(keys), single_object=single_object, is_post=is_post
            )
            if routine is None:
                raise self._no_function(conn, schema, name, keys, candidates, is_post)
            passed = [] if one_positional else [p.name for p in routine.params if p.name in keys]
            single = _wants_single(request.headers.get("accept"))
            shape = _read_shape(
                request, single, self.max_rows, rpc_arguments=set(keys) if not is_post else None
            )
            count = prefs.get("count")
            statement = statements.call(
                routine,
                arguments,
                passed,
                one_positional=one_positional,
                shape=shape,
                count=count,
                max_rows=self.max_rows,
            )
            read_only = not is_post or routine.volatility in ("s", "i")
            with self._transaction(
                conn, request, role, claims, read_only=read_only, routine=routine
            ) as tx:
                row = tx.run(statement)
                total = row["total_result_set"]
                total = _counted(tx, statement, count, total, self.max_rows)
                if routine.returns != "void":
                    _check_single(shape, row)
        return self._read_response(
            request,
            shape,
            row,
            total if count else None,
            prefs,
            location=None,
            void=routine.returns == "void",
        )

    def _no_function(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        name: str,
        keys: list[str],
        candidates: list[Routine],
        is_post: bool,
    ) -> PgrstError:
        hint = None
        if candidates:
            # Overloads exist: suggest the closest parameter list (Error.hs noRpcHint).
            lists = ["(" + ", ".join(sorted(p.name for p in r.params)) + ")" for r in candidates]
            best = catalog.fuzzy_hint(lists, "(" + ", ".join(sorted(keys)) + ")", min_score=0.33)
            if best:
                hint = f"Perhaps you meant to call the function {schema}.{name}{best}"
        else:
            best = catalog.fuzzy_hint(catalog.function_names(conn, schema), name)
            if best:
                hint = f"Perhaps you meant to call the function {schema}.{best}"
        return errors.function_not_found(schema, name, sorted(keys), single_json=is_post, hint=hint)

    # -- the transaction --

    @contextmanager
    def _transaction(
        self,
        conn: psycopg.Connection[Any],
        request: Request,
        role: str,
        claims: dict[str, Any],
        *,
        read_only: bool,
        routine: Routine | None = None,
    ) -> Iterator[_Tx]:
        role_settings = _role_settings(conn, role)
        func_settings = {
            k: v for k, v in (routine.settings if routine else {}).items() if k in HOISTED_SETTINGS
        }
        isolation = (
            func_settings.get("default_transaction_isolation")
            or role_settings.get("default_transaction_isolation")
            or "read committed"
        )
        mode = "READ ONLY" if read_only else "READ WRITE"
        authenticated = role != ANON_ROLE
        settings: list[tuple[str, str]] = [
            ("search_path", ", ".join(f'"{s}"' for s in _search_path(request)))
        ]
        settings += list(role_settings.items())
        settings += [
            ("role", role),
            ("request.jwt.claims", json.dumps(claims)),
            ("request.method", request.method),
            ("request.path", request.path),
            ("request.headers", json.dumps(request.headers)),
            ("request.cookies", json.dumps(_cookies(request.headers.get("cookie")))),
        ]
        settings += list(func_settings.items())
        try:
            conn.execute(
                sql.SQL("BEGIN ISOLATION LEVEL {} {}").format(
                    sql.SQL(isolation.upper()), sql.SQL(mode)
                )
            )
            conn.execute(
                sql.SQL("SELECT {}").format(
                    sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in settings)
                ),
                [value for pair in settings for value in pair],
            )
            yield _Tx(conn)
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            _rollback(conn)
            raise errors.from_postgres(exc, authenticated=authenticated) from None
        except BaseException:
            _rollback(conn)
            raise


class _Tx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def run(self, statement: statements.Statement) -> dict[str, Any]:
        cursor = self.conn.execute(statement.query, statement.params)
        assert cursor.description is not None
        names = [c.name for c in cursor.description]
        row = cursor.fetchone()
        assert row is not None
        return dict(zip(names, row, strict=True))

    def planned(self, statement: statements.Statement) -> int:
        plan = self.conn.execute(statement.query, statement.params).fetchone()
        assert plan is not None
        document = plan[0] if isinstance(plan[0], list) else json.loads(plan[0])
        return int(document[0]["Plan"]["Plan Rows"])


# --- helpers ------------------------------------------------------------------------------


def _counted(
    tx: _Tx,
    statement: statements.Statement,
    count: str | None,
    total: int | None,
    max_rows: int | None,
) -> int | None:
    """``resultSetWTotal``: planned is the planner's row estimate; estimated counts exactly
    up to db-max-rows + 1 rows and, past the cap, takes the larger of that and the estimate
    (pagination and count doc, "Estimated Count")."""
    if count == "planned" or (
        count == "estimated" and max_rows is not None and total is not None and total > max_rows
    ):
        assert statement.planned is not None
        planned = tx.planned(statement.planned)
        return planned if count == "planned" or total is None else max(total, planned)
    return total


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with suppress(Exception):
        if not conn.closed and conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")


def _search_path(request: Request) -> tuple[str, ...]:
    schema = request.headers.get("accept-profile") or request.headers.get("content-profile")
    first = schema if schema in EXPOSED_SCHEMAS else EXPOSED_SCHEMAS[0]
    return (first, *[s for s in EXTRA_SEARCH_PATH if s != first])


def _role_settings(conn: psycopg.Connection[Any], role: str) -> dict[str, str]:
    """``ALTER ROLE <role> [IN DATABASE …] SET …`` of user-context settings, applied as
    transaction-scoped settings ("Impersonated Role Settings", transactions doc)."""
    rows = conn.execute(
        "SELECT s.setdatabase, unnest(s.setconfig) FROM pg_db_role_setting s "
        "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s "
        "AND s.setdatabase IN "
        "(0, (SELECT oid FROM pg_database WHERE datname = current_database())) "
        "ORDER BY s.setdatabase",
        (role,),
    ).fetchall()
    settings: dict[str, str] = {}
    for _, item in rows:
        key, _, value = item.partition("=")
        settings[key] = value
    if not settings:
        return {}
    allowed = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM pg_settings WHERE context = 'user' AND name = ANY(%s)",
            (list(settings),),
        ).fetchall()
    }
    return {k: v for k, v in settings.items() if k in allowed}


def _cookies(header: str | None) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            cookies[name] = value
    return cookies


def _empty_update(representation: bool) -> Response:
    """PATCH with ``{}``: nothing to set, so nothing changes and nothing is returned."""
    headers = {"Content-Range": "*/*"}
    if representation:
        return Response(200, {**headers, "Content-Type": JSON_TYPE}, b"[]")
    return Response(204, headers)


def _json_body(body: bytes) -> Any:
    if not body.strip():
        raise errors.invalid_body("Empty or invalid json")
    try:
        return json.loads(body)
    except ValueError:
        raise errors.invalid_body("Empty or invalid json") from None


def _wants_single(accept: str | None) -> bool:
    if not accept:
        return False
    types = [t.split(";")[0].strip() for t in accept.split(",")]
    if any(
        t in ("application/vnd.pgrst.object+json", "application/vnd.pgrst.object") for t in types
    ):
        return True
    if any(t in ("application/json", "*/*", "application/*") for t in types):
        return False
    raise grammar.not_modelled(f"the media type {accept!r}")


def _read_shape(
    request: Request, single: bool, max_rows: int | None, *, rpc_arguments: set[str] | None = None
) -> ReadShape:
    conditions: list[Filter | Logic] = []
    for key, value in request.query:
        if key in ("select", "columns", "on_conflict", "limit", "offset", "order", "apikey"):
            continue
        if key in ("or", "and", "not.or", "not.and"):
            conditions.append(grammar.parse_logic(key, value))
            continue
        if "." in key:
            if key.endswith((".or", ".and", ".order", ".limit", ".offset")):
                raise grammar.not_modelled(f"filters on embedded resources ({key})")
            raise grammar.not_modelled(f"filters on embedded resources ({key})")
        if rpc_arguments is not None and key in rpc_arguments:
            continue
        if grammar.looks_like_filter(value):
            conditions.append(grammar.parse_filter(key, value))
        # Any other parameter is not a filter: PostgREST ignores it on a table.
    order_text = request.param("order")
    window = grammar.parse_range(
        request.param("limit"),
        request.param("offset"),
        request.headers.get("range"),
        request.headers.get("range-unit"),
    )
    return ReadShape(
        select=grammar.parse_select(request.param("select")),
        filters=conditions,
        order=grammar.parse_order(order_text) if order_text else [],
        range=window.restrict(max_rows),
        single=single,
    )


def _check_single(shape: ReadShape, row: dict[str, Any]) -> None:
    # A singular response needs exactly one row; otherwise 406 and the transaction rolls
    # back (Singular or Plural: "the transaction is rolled back" for mutations too).
    if shape.single and int(row["page_total"]) != 1:
        raise errors.singularity_error(int(row["page_total"]))


def _choose_routine(
    candidates: list[Routine], keys: set[str], *, single_object: bool, is_post: bool
) -> tuple[Routine | None, bool]:
    """PostgREST's ``findProc``: match by argument names, falling back to a function with a
    single json/jsonb parameter on POST (functions doc, "Overloaded functions")."""
    matched = [r for r in candidates if _matches(r, keys, single_object)]
    fallback = [
        r
        for r in candidates
        if r not in matched
        and is_post
        and len(r.params) == 1
        and r.params[0].type in ("json", "jsonb")
    ]
    chosen: Routine | None
    if len(matched) == 1:
        chosen = matched[0]
    elif len(matched) > 1:
        raise errors.ambiguous_function([r.signature() for r in matched])
    elif len(fallback) == 1:
        chosen = fallback[0]
    elif len(fallback) > 1:
        raise errors.ambiguous_function([r.signature() for r in fallback])
    else:
        return None, False
    only = chosen.params[0] if len(chosen.params) == 1 else None
    # CallPlan: a single parameter takes the whole body when it is unnamed or when
    # Prefer: params=single-object asks for it.
    one_positional = only is not None and (single_object or only.name == "")
    return chosen, one_positional


def _matches(routine: Routine, keys: set[str], single_object: bool) -> bool:
    params = routine.params
    if single_object:
        return len(params) == 1 and params[0].type in ("json", "jsonb")
    if not params:
        return not keys
    required = {p.name for p in params if p.required}
    optional = {p.name for p in params if not p.required}
    if not optional:
        return keys == required
    if not required:
        return keys <= optional
    return keys - optional == required


def _applied(prefs: Preferences, keys: tuple[str, ...], *, resolution: bool = True) -> str:
    parts = []
    for key in keys:
        if key == "resolution" and not resolution:
            continue
        value = prefs.get(key)
        if value is not None:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _with_gucs(response: Response, row: dict[str, Any]) -> Response:
    """``response.status`` and ``response.headers`` set by the query override PostgREST's
    (transactions doc, "Response Headers", "Response Status Code")."""
    status_text = row.get("response_status")
    if status_text:
        try:
            response.status = int(status_text)
        except ValueError:
            return _error_response(
                PgrstError(500, "PGRST112", "response.status guc must be a valid status code")
            )
    headers_text = row.get("response_headers")
    if headers_text:
        try:
            extra = json.loads(headers_text)
            for item in extra:
                ((name, value),) = dict(item).items()
                response.headers[str(name)] = str(value)
        except (ValueError, TypeError, AttributeError):
            return _error_response(
                PgrstError(
                    500,
                    "PGRST111",
                    "response.headers guc must be a JSON array composed of "
                    "objects with a single key and a string value",
                )
            )
    return response


def _error_response(exc: PgrstError) -> Response:
    headers = {"Content-Type": JSON_TYPE, **exc.headers}
    if not isinstance(exc, GatewayError):
        # Error.hs errorResponseFor: "Proxy-Status: PostgREST; error=<code>"
        headers["Proxy-Status"] = f"PostgREST; error={exc.code}"
    return Response(exc.status, headers, exc.body())


class _Handler(BaseHTTPRequestHandler):
    owner: PostgrestStandin
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections close after a minute
    # TCP_NODELAY, as Warp (PostgREST's server) sets on every connection: the headers and
    # the body go out in two writes, and with Nagle the second waits for the client's
    # delayed ACK (40 ms on Linux), which would add 40 ms to every request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._sockets.add(self.connection)

    def finish(self) -> None:
        with suppress(OSError):
            super().finish()
        with self.owner._lock:
            self.owner._sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request log is ``PostgrestStandin.requests``

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        prefer = self.headers.get_all("Prefer") or []
        response, _ = self.owner.handle(self.command, self.path, headers, prefer, body)
        recorded = RecordedRequest(
            self.command,
            urlsplit(self.path).path.removeprefix("/rest/v1") or "/",
            urlsplit(self.path).query,
            headers,
            body,
            None if response is None else response.status,
        )
        with self.owner._lock:
            self.owner.requests.append(recorded)
        if response is None:
            # A dropped connection: close without a byte of answer.
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = _serve
