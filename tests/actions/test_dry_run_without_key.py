"""A dry run needs no Stripe key: it checks the local mirror, says so, and says which key a
real run would use (or that none is set). With a key it checks Stripe instead."""

from __future__ import annotations

from typing import Any

import pytest

from tests.actions.conftest import CUSTOMER_ID, INVOICE_ID, data, error, invoice, run, story
from tests.stripe_fake import FakeStripe

PAY = f"/v1/invoices/{INVOICE_ID}/pay"
SEND = f"/v1/invoices/{INVOICE_ID}/send"


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.setenv("APP_URL", "https://app.cloudgreet.test")


@pytest.mark.usefixtures("no_key")
@pytest.mark.parametrize(
    "command",
    [("retry", "1"), ("resend-link", "1"), ("portal", "1"), ("portal", "1", "--send")],
    ids=" ".join,
)
def test_a_dry_run_with_no_key_checks_the_mirror_and_says_so(
    seeded: Any, command: tuple[str, ...]
) -> None:
    human = run(*command, "--dry-run")
    machine = run(*command, "--dry-run", "--json")

    assert human.exit_code == 0, human.output
    assert "no Stripe key set · dry run: checks the local mirror, sends nothing" in human.stderr
    assert "key: none (STRIPE_SECRET_KEY is not set; a real run needs one)" in human.stdout
    assert "checked against: the local mirror (no key; Stripe may know better)" in human.stdout
    assert machine.exit_code == 0, machine.output
    preview = data(machine)
    assert (preview["dry_run"], preview["stripe_key"], preview["mode"]) == (True, None, None)
    assert preview["checked_against"] == "mirror"
    assert preview["request"]["method"] == "POST"


@pytest.mark.usefixtures("no_key")
def test_the_mirror_is_judged_by_the_real_runs_rules(seeded: Any) -> None:
    # The mirror's copy is a draft. (Seeded open, and the mirror never moves an invoice
    # back, domain.merge: the row is set as a draft's own upsert would have left it.)
    with seeded._transaction():
        seeded._execute("UPDATE billing_invoices SET status = 'draft' WHERE id = ?", (INVOICE_ID,))

    retried = run("retry", "1", "--dry-run", "--json")
    resent = run("resend-link", "1", "--dry-run", "--json")

    assert (retried.exit_code, resent.exit_code) == (2, 2)
    assert error(retried)["code"] == error(resent)["code"] == "invoice_not_actionable"
    assert [outcome for _, outcome, _ in story(seeded)] == ["refused", "refused"]
    assert all(line.details["dry_run"] for line in seeded.audit_trail(INVOICE_ID))


@pytest.mark.usefixtures("no_key")
def test_an_invoice_the_mirror_does_not_have_needs_a_key_or_a_sync(sqlite_env: str) -> None:
    result = run("retry", INVOICE_ID, "--dry-run")

    assert result.exit_code == 2
    assert "not in the local mirror" in result.stderr
    assert "set STRIPE_SECRET_KEY, or run `cloudgreet-billing sync` first" in result.stderr


@pytest.mark.usefixtures("no_key")
def test_a_real_run_still_needs_the_key(seeded: Any) -> None:
    result = run("retry", "1", "--yes")

    assert result.exit_code == 2
    assert "STRIPE_SECRET_KEY is not set" in result.stderr
    assert story(seeded) == []


def test_a_dry_run_with_a_live_key_names_it_redacted_and_checks_stripe(
    fake_stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_key = "sk_live_51LiveKey00000000000000009f3a"
    with FakeStripe(api_key=live_key) as live:
        monkeypatch.setenv("STRIPE_SECRET_KEY", live_key)
        monkeypatch.setenv("STRIPE_API_BASE", live.url)
        live.reply("GET", "/v1/account", {"id": "acct_1Live", "object": "account"})
        live.reply("GET", f"/v1/invoices/{INVOICE_ID}", invoice("open"))

        result = run("resend-link", "1", "--dry-run")

    live.assert_clean()
    assert result.exit_code == 0, result.output
    assert "key: sk_live_…9f3a (LIVE mode)" in result.stdout
    assert "checked against: Stripe, just now" in result.stdout
    assert "Stripe LIVE mode · account acct_1Live" in result.stderr
    assert live_key not in result.output
    assert live.requests_to("POST", SEND) == []


def test_the_demo_workspace_runs_every_dry_run_with_no_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    workspace = tmp_path / "demo"
    assert run("demo", "--dir", str(workspace), "--json").exit_code == 0
    env_file = str(workspace / ".env")
    alerts = data(run("--env-file", env_file, "alerts", "list", "--json"))
    failed = next(alert for alert in alerts if alert["type"] == "invoice_failed")

    for command in (
        ("retry", str(failed["id"])),
        ("resend-link", str(failed["id"])),
        ("portal", failed["customer_id"], "--send"),
    ):
        result = run("--env-file", env_file, *command, "--dry-run", "--json")
        assert result.exit_code == 0, (command, result.output)
        assert data(result)["checked_against"] == "mirror"
        assert data(result)["stripe_key"] is None


def test_no_key_is_not_mistaken_for_a_customer(seeded: Any, no_key: None) -> None:
    result = run("portal", CUSTOMER_ID, "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    assert data(result)["customer_id"] == CUSTOMER_ID
