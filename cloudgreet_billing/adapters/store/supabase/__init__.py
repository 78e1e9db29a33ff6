"""The Supabase REST store: the store protocol through Supabase's API (PostgREST) with the
``supabase`` client, for engineers who have the project URL and a secret key but not the
database password.

Each HTTP request is one transaction, so every operation that must be atomic, or reads
many rows, is one Postgres function of ``migrations/0007_supabase_api.sql`` called through
``SupabaseApi.rpc``. The modules follow the SQL stores' areas:

- ``client.py``: the one client per process, timeouts, request counting, paging by key;
- ``errors.py``: PostgREST's errors as the contract's one-line errors;
- ``base.py``: schema, settings, row counts, writability;
- ``mirror.py``, ``dunning.py``, ``finance.py``, ``operations.py``: the areas, one mixin
  each;
- ``store.py``: ``SupabaseStore``, which gathers them.
"""
