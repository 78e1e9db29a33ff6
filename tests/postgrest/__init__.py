"""A PostgREST stand-in: hosted Supabase's REST API over a real test PostgreSQL.

No PostgREST binary can be installed here (none is packaged for Debian, PyPI or npm), so
this package answers HTTP the way Supabase's API gateway and PostgREST 12/13 do, running
every request in one transaction on the real database, and the tests drive it with the
real ``supabase`` client (supabase-py 2.x, postgrest-py, httpx).

Use it through the fixtures (``tests/postgrest/fixtures.py``, imported by
``tests/conftest.py``)::

    def test_something(postgrest):              # a running stand-in on a fresh database
        postgrest.sql("CREATE TABLE …")          # setup as the owner, outside the API
        client = postgrest.client()              # supabase.Client with the sb_secret_ key
        client.table("t").select("*").execute()
        postgrest.client(postgrest.keys.anon)    # or .service_role, .publishable, any str
        postgrest.client(timeout=2, retry=False) # its own httpx.Client; retry = postgrest-py's
        postgrest.inject(Fault(method="GET", path="^/t", status=503, times=2))
        postgrest.requests_to("^/rpc/f", "POST") # what was sent, with headers and status
        postgrest.max_rows = 50                  # db-max-rows (default 1,000)
        postgrest.resize_pool(1, timeout=0.2)    # db-pool / acquisition timeout (PGRST003)

``postgrest.url`` is the project URL (``SUPABASE_URL``), ``postgrest.keys`` the project's
JWT secret and four keys (``ProjectKeys``: ``secret``, ``publishable``, ``service_role``,
``anon``; ``user_token(role=…, **claims)`` signs a user's token), ``postgrest.database_url``
the owner's URL. ``supabase_db`` alone gives a database set up as a Supabase project's
(``project.py``); ``no_retry_sleep`` records postgrest-py's retry back-off instead of
sleeping it.

What it reproduces, each with its source (cited again where it is implemented):

- routes under ``/rest/v1``; anything else is the gateway's 404 "no Route matched";
- the gateway's ``apikey`` check ("No API key found in request", "Invalid API key"), legacy
  JWT keys and the new ``sb_secret_``/``sb_publishable_`` keys mapped to ``service_role`` /
  ``anon`` (supabase.com/docs/guides/api/api-keys) — ``auth.py``;
- PostgREST's JWT check: HS256 with the project secret, 30 s skew, PGRST301 (bad token),
  PGRST303 (expired, not yet valid), no token = ``anon`` (``Auth/Jwt.hs``; auth doc);
- one transaction per request with PostgREST's access mode (GET/HEAD and stable/immutable
  functions READ ONLY), its ``set_config`` preamble (``search_path``, role settings,
  ``role``, ``request.jwt.claims``, ``request.method``, ``request.path``,
  ``request.headers``, ``request.cookies``, hoisted function settings), COMMIT or ROLLBACK
  (transactions doc; ``Query/PreQuery.hs``) — ``server.py``;
- tables and views: ``select`` (aliases, casts, JSON paths), the operators ``eq neq gt gte
  lt lte like ilike match imatch in is isdistinct cs cd ov sl sr nxr nxl adj fts plfts
  phfts wfts`` with ``not.`` and ``(any)/(all)``, ``or``/``and`` trees, ``order`` with
  ``nullsfirst/nullslast``, ``limit``/``offset`` and ``Range``/``Range-Unit``; a parameter
  without an operator is ignored on a table, as ``QueryParams.hs`` does (tables/views doc,
  URL grammar) — ``grammar.py``;
- POST of an object or array (``columns=``, ``Prefer: missing=default``), upserts
  (``resolution=merge-duplicates|ignore-duplicates``, ``on_conflict=``), PATCH and DELETE
  with filters, ``return=minimal|representation``, 201/200/204 and ``Content-Range`` as
  ``Response.hs`` answers them — ``statements.py``;
- ``/rpc/<fn>`` by POST, GET or HEAD: the function found in ``pg_proc`` by name and argument
  names (required/optional parameters, overloads, PGRST202/PGRST203 with PostgREST's
  wording and fuzzy hints), arguments cast with ``json_to_record`` to the parameter types, a
  single unnamed json/jsonb parameter or ``Prefer: params=single-object`` taking the body,
  results shaped as scalar, array of scalars, object or array of rows, void as 204
  (functions doc; ``Plan.hs`` ``findProc``; ``SqlFragment.hs`` ``asJsonF``);
- the **silent ``db-max-rows`` cap** on every read including set-returning functions, and
  ``Prefer: count=exact|planned|estimated`` with ``Content-Range: 0-999/N`` and 206 (or 416
  past the end) (pagination and count doc; ``RangeQuery.hs``);
- singular responses (``application/vnd.pgrst.object+json``, PGRST116 406);
- the error JSON and the SQLSTATE → HTTP table, 42501 as 401 for ``anon`` and 403 for any
  other role, ``RAISE`` with ``PTxxx`` and ``PGRST`` (errors doc; ``Error.hs``) —
  ``errors.py``;
- the connection pool and PGRST003 (504) on acquisition timeout, PGRST000 when the
  database is unreachable (connection pool doc);
- ``response.headers`` / ``response.status`` set by SQL (transactions doc);
- a Supabase project's roles, grants, default privileges, role timeouts and UTC
  (supabase/postgres init script) — ``project.py``.

Not modelled, and answered with a loud ``501 STANDIN`` rather than a wrong guess: resource
embedding, spreads and aggregates, PUT, limited PATCH/DELETE, CSV and other media types,
the OpenAPI root. The schema cache is the live catalog (never stale), which hosted Supabase
approximates by reloading after every DDL.
"""
