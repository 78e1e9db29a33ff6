"""Benchmark: ``dunning run`` of 10,000 due steps through Supabase's REST API, beside
direct PostgreSQL (issue 14). Not a test: prints measurements.

    .venv/bin/python tests/benchmarks/bench_dunning_rest.py [--steps 10000]

(PostgreSQL: BILLING_TEST_DATABASE_URL, else a throwaway local cluster when the binaries
exist.) Seeds ``--steps`` unpaid invoices whose day-0 email is due (and their later, not yet
due steps) as ``bench_dunning.py`` does, once in a plain database and once in a database
set up as a Supabase project's (the owner's connection, as the SQL editor would), then
times one ``cloudgreet-billing dunning run`` process on each, start-up included, with the
``file`` email backend: ``BILLING_DATABASE_URL`` for the first, only ``SUPABASE_URL`` and
the secret key for the second, through the PostgREST stand-in (running in this process)
and the real ``supabase`` client. Printed: seconds, steps/s and, for REST, the HTTP
requests the run made (per function). The stand-in is on this machine: a hosted project
adds its round-trip time to every request, which is why the requests are counted.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_dunning import run, seed  # noqa: E402
from tests.benchmarks.databases import drop_database, fresh_database, postgres_server  # noqa: E402


def delivery_env(outbox: Path) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BILLING_", "SUPABASE_", "NEXT_PUBLIC_SUPABASE_"))
    }
    return {
        **environment,
        "PYTHONPATH": str(REPO),
        "BILLING_EMAIL_BACKEND": "file",
        "BILLING_SMS_BACKEND": "file",
        "BILLING_OUTBOX_DIR": str(outbox),
        "EMAIL_FROM": "billing@cloudgreet.test",
    }


def main() -> None:
    from tests.postgrest.project import authenticator_url, ensure_roles, prepare_database
    from tests.postgrest.server import PostgrestStandin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()

    with postgres_server() as base, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        direct_url = fresh_database(base)
        seed(direct_url, args.steps)
        env = {**delivery_env(tmp / "direct"), "BILLING_DATABASE_URL": direct_url}
        direct_seconds, direct = run(env)
        assert direct["sent"] == args.steps, direct
        drop_database(base, direct_url)

        ensure_roles(base)
        project = fresh_database(base)
        prepare_database(project)
        seed(project, args.steps)  # as the owner: the schema and the due steps
        standin = PostgrestStandin(project, authenticator_url(project)).start()
        try:
            env = {
                **delivery_env(tmp / "rest"),
                "SUPABASE_URL": standin.url,
                "SUPABASE_SECRET_KEY": standin.keys.secret,
            }
            rest_seconds, rest = run(env)
            sent = standin.sql("SELECT count(*) FROM billing_dunning_events WHERE status = 'sent'")
            written = len(list((tmp / "rest").glob("*.eml")))
            assert rest["sent"] == args.steps == sent[0][0] == written, (rest, sent, written)
            calls = collections.Counter(
                request.path.rsplit("/", 1)[-1] for request in standin.requests
            )
        finally:
            standin.close_clients()
            standin.stop()
            drop_database(base, project)

    steps = args.steps
    print(f"{'dunning run (file)':<22}{'steps':>8}{'seconds':>9}{'steps/s':>10}{'requests':>10}")
    print(
        f"{'postgres (direct)':<22}{steps:>8}{direct_seconds:>9.1f}"
        f"{steps / direct_seconds:>10,.0f}{'-':>10}"
    )
    print(
        f"{'supabase (REST)':<22}{steps:>8}{rest_seconds:>9.1f}{steps / rest_seconds:>10,.0f}"
        f"{sum(calls.values()):>10}"
    )
    for name, count in calls.most_common():
        print(f"  {name:<48}{count:>8}")


if __name__ == "__main__":
    main()
