"""One ``supabase`` client per process, with our timeout, and the two ways we call it.

- ``rpc(fn, args)``: one POST ``/rest/v1/rpc/<fn>`` with named arguments, one transaction
  on the server. postgrest-py never retries a POST (it retries GET on 503 and 520 only),
  so every write function is idempotent by the same keys the SQL stores use, and a
  caller may repeat it after a timeout.
- ``pages(fn, args, after=…)``: a read of any size, page by key. PostgREST caps every
  read at ``db-max-rows`` (1,000 by default) and says nothing: HTTP 200, no error
  (https://docs.postgrest.org/en/v12/references/configuration.html#db-max-rows). So a
  page is asked for by key (``p_after``, ``p_limit``) and the reading stops only at an
  empty page, never at a short one, which a lower cap than ours would also produce.

The client's own default timeout is 120 s; a role's statement timeout on hosted Supabase
is about 8 s, so each call is kept small and given ``timeout`` seconds (httpx.Client
through ``ClientOptions``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from cloudgreet_billing.adapters.store.supabase.errors import api_failure
from cloudgreet_billing.errors import Unavailable

if TYPE_CHECKING:
    import httpx

#: Rows per page: under PostgREST's default cap, and small enough for the 8 s timeout.
PAGE_SIZE = 500
#: Seconds for one request, connect and read.
TIMEOUT_SECONDS = 30.0

_CLIENTS: dict[tuple[str, str, float], SupabaseApi] = {}


def api_for(url: str, key: str, *, timeout: float = TIMEOUT_SECONDS) -> SupabaseApi:
    """The process's client for this project and key, made on first use."""
    cache_key = (url, key, timeout)
    api = _CLIENTS.get(cache_key)
    if api is None or api.closed:
        api = _CLIENTS[cache_key] = SupabaseApi(url, key, timeout=timeout)
    return api


class SupabaseApi:
    """The project's REST API through the real ``supabase`` client."""

    def __init__(self, url: str, key: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        import httpx
        from supabase import ClientOptions, create_client

        self.url = url.rstrip("/")
        self.location = self.url
        #: Requests sent, for the benchmark and ``doctor``.
        self.requests = 0
        self.closed = False
        self._last_status: int | None = None
        self._http = httpx.Client(
            timeout=timeout,
            event_hooks={"request": [self._count], "response": [self._status]},
        )
        options = ClientOptions(
            httpx_client=self._http,
            postgrest_client_timeout=timeout,
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = create_client(self.url, key, options=options)

    def _count(self, request: httpx.Request) -> None:
        self.requests += 1

    def _status(self, response: httpx.Response) -> None:
        self._last_status = response.status_code

    def close(self) -> None:
        self.closed = True
        self._http.close()

    def rpc(self, fn: str, args: Mapping[str, Any] | None = None) -> Any:
        """Call ``fn`` with named ``args``; its JSON result (None for void)."""
        return self._send(lambda: self._client.rpc(fn, dict(args or {})).execute().data)

    def select(self, table: str, columns: str, **equals: Any) -> list[dict[str, Any]]:
        """Rows of a table (for the few reads that need no function); at most one page."""

        def run() -> Any:
            query = self._client.table(table).select(columns)
            for column, value in equals.items():
                query = query.eq(column, value)
            return query.limit(PAGE_SIZE).execute().data

        rows: list[dict[str, Any]] = self._send(run)
        return rows

    def pages(
        self,
        fn: str,
        args: Mapping[str, Any],
        *,
        after: Callable[[Mapping[str, Any]], Any],
        page_size: int = PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Every row ``fn`` returns, page by page: ``fn`` takes ``p_after`` (None for the
        first page, then ``after(last row)``) and ``p_limit``, and returns a JSON array
        ordered by that key."""
        cursor: Any = None
        while True:
            page = self.rpc(fn, {**args, "p_after": cursor, "p_limit": page_size}) or []
            if not page:
                return
            yield from page
            cursor = after(page[-1])

    def _send(self, call: Callable[[], Any]) -> Any:
        import httpx
        from postgrest.exceptions import APIError

        self._last_status = None
        try:
            return call()
        except APIError as exc:
            raise api_failure(self.location, exc.json(), self._last_status) from None
        except httpx.TimeoutException:
            raise Unavailable(
                f"Supabase ({self.location}) did not answer in time",
                hint="retry later; check the project's status in the Supabase dashboard",
                code="store_unavailable",
            ) from None
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach Supabase at {self.location}: {type(exc).__name__}",
                hint="check SUPABASE_URL and the network; retry later",
                code="store_unavailable",
            ) from None
