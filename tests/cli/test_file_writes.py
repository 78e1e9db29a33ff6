"""Every file the toolkit writes (``export-csv -o``, the outbox, ``demo --dir``) follows
one set of rules: never over the store, through a FIFO or a device, atomically otherwise,
and one line with no partial file when the disk is full or the folder is closed.

Refusing the store's files is SQLite's case (a PostgreSQL store is no file here); every
other export case runs on both backends, since the export streams from the store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cloudgreet_billing.adapters import files
from tests.cli.helpers import data, error, run
from tests.read_only import read_only

CUSTOMER = "cus_QpL8HLkdIwHu7ixl4O"


def add_entries(count: int = 3, *, first: int = 0) -> None:
    for n in range(first, first + count):
        added = run(
            "ledger",
            "add",
            "--customer",
            CUSTOMER,
            "--kind",
            "booking_fee",
            "--amount",
            f"{n + 1}.25",
            "--invoice",
            "in_1QpL8HLkdIwHu7ixl4OzzPMv",
            "--external-id",
            f"bk_2026_11_{n:04d}",
            "--json",
        )
        assert added.exit_code == 0, added.stderr


def ledger_count() -> int:
    return len(data(run("ledger", "list", "--json", "--limit", "1000")))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_file(store_env: str) -> Path:
    return Path(store_env.removeprefix("sqlite:///"))


# --- never over the store ------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The SQLite store (the only one that is a file), with three ledger entries."""
    database = tmp_path / "billing.db"
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{database}")
    add_entries()
    return database


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_export_refuses_to_write_over_the_store_or_its_companions(sqlite_store, suffix):
    target = Path(f"{sqlite_store}{suffix}")
    before = digest(target) if target.exists() else None

    result = run("export-csv", "-o", str(target))

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: refusing to write {target}: it is the billing store's file {target} "
        "(choose another file name, e.g. -o export.csv; nothing was written)"
    ]
    assert (digest(target) if target.exists() else None) == before
    assert ledger_count() == 3
    assert not list(sqlite_store.parent.glob("*.part"))


def test_export_refuses_the_store_reached_by_another_name(sqlite_store, tmp_path, isolated_env):
    symlink = tmp_path / "link.csv"
    symlink.symlink_to(sqlite_store)
    hard_link = tmp_path / "hard.csv"
    os.link(sqlite_store, hard_link)
    dotted = isolated_env / ".." / sqlite_store.name
    before = digest(sqlite_store)
    for name in (symlink, hard_link, dotted):
        result = run("export-csv", "-o", str(name), "--json")
        assert result.exit_code == 2, name
        assert error(result)["code"] == "refused_overwrite"
        assert str(sqlite_store) in error(result)["message"]
    assert digest(sqlite_store) == before
    assert symlink.is_symlink()
    assert ledger_count() == 3


def test_a_relative_store_url_is_refused_from_the_working_directory(isolated_env, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///billing.db")
    add_entries(1)
    result = run("export-csv", "-o", "billing.db")
    assert result.exit_code == 2
    assert f"it is the billing store's file {isolated_env / 'billing.db'}" in result.stderr
    assert ledger_count() == 1


def test_export_over_an_older_export_replaces_it_whole(store_env, tmp_path):
    add_entries()
    target = tmp_path / "weekly.csv"
    target.write_text("an older export\n")
    summary = data(run("export-csv", "-o", str(target), "--json"))
    assert summary["rows"] == 3
    lines = target.read_text().splitlines()
    assert lines[0].startswith("id,occurred_at,customer_id")
    assert len(lines) == 4
    assert target.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".weekly.csv.*"))


def test_a_symlink_is_followed_and_stays_a_link(store_env, tmp_path):
    add_entries()
    real = tmp_path / "exports" / "ledger.csv"
    real.parent.mkdir()
    real.write_text("last week\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)

    summary = data(run("export-csv", "-o", str(link), "--json"))

    assert summary["rows"] == 3
    assert link.is_symlink() and link.resolve() == real
    assert real.read_text().count("\n") == 4
    assert not list(real.parent.glob("*.part"))


# --- a full disk, a closed folder -----------------------------------------------------


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_mid_export_leaves_no_partial_file_and_no_traceback(
    store_env, tmp_path, monkeypatch
):
    add_entries()
    target = tmp_path / "nov.csv"
    target.write_text("the export finance already has\n")
    real_write = files._write_all
    calls = []

    def disk_fills_up(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(files, "_write_all", disk_fills_up)

    result = run("export-csv", "-o", str(target))

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: cannot write {target}: No space left on device "
        "(nothing was written; free some space, then run it again)"
    )
    assert "Traceback" not in result.stderr and "closed database" not in result.stderr
    assert target.read_text() == "the export finance already has\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []
    # The store was finished with properly: the next command reads and writes it.
    monkeypatch.setattr(files, "_write_all", real_write)
    add_entries(1, first=3)
    assert ledger_count() == 4


def test_a_folder_that_cannot_be_written_is_one_line(store_env, tmp_path):
    add_entries(1)
    closed = tmp_path / "closed"
    closed.mkdir()
    with read_only(closed):
        result = run("export-csv", "-o", str(closed / "nov.csv"))
        assert list(closed.iterdir()) == []
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot write {closed / 'nov.csv'}: ")
    assert f"in the folder {closed}" in lines[-1]
    assert f"make {closed} writable by this user" in lines[-1]
    assert "Traceback" not in result.stderr


def test_export_to_a_missing_folder_is_bad_input(store_env, tmp_path):
    result = run("export-csv", "-o", str(tmp_path / "no-such" / "nov.csv"))
    assert result.exit_code == 2
    assert f"the folder {tmp_path / 'no-such'} does not exist" in result.stderr


# --- FIFOs and devices, as a cron job or a shell would use them ------------------------


def script(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudgreet_billing", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.fixture
def script_env(store_env: str, tmp_path: Path) -> dict[str, str]:
    add_entries()
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BILLING_DATABASE_URL": store_env,
        "XDG_DATA_HOME": str(tmp_path / "data-home"),
    }


@pytest.fixture
def full_device(tmp_path: Path) -> Path:
    """A device that is always full: as root, a private node of /dev/full's device, so that
    a regression replaces only that copy and never the machine's own /dev/full."""
    if os.geteuid() != 0:
        return Path("/dev/full")
    node = tmp_path / "full"
    full = os.stat("/dev/full").st_rdev
    os.mknod(node, 0o666 | stat.S_IFCHR, full)
    return node


def test_a_full_device_is_written_through_and_reported(script_env, tmp_path, full_device):
    result = script("export-csv", "-o", str(full_device), env=script_env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: cannot write {full_device}: No space left on device "
        "(nothing was written; free some space, then run it again)"
    )
    assert "Traceback" not in result.stderr and "closed database" not in result.stderr
    assert full_device.is_char_device()


def test_stdout_into_a_full_device_is_one_line(script_env, tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "cloudgreet_billing", "export-csv"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=script_env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "error: cannot write the export to stdout: No space left on device"
    )
    assert "Traceback" not in result.stderr and "closed database" not in result.stderr


def test_a_fifo_is_written_through_not_replaced(script_env, tmp_path):
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = script("export-csv", "-o", str(fifo), env=script_env, cwd=tmp_path)
    # A daemon: if the FIFO was replaced instead, its reader waits forever, and must not
    # hold the test run.
    reader.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert fifo.is_fifo()
    assert received, "nothing came through the FIFO"
    lines = received[0].decode().splitlines()
    assert lines[0].startswith("id,occurred_at,customer_id") and len(lines) == 4


def test_a_descriptor_path_is_the_pipe_it_names(script_env, tmp_path):
    # /dev/fd/1 rather than /dev/stdout: a regression that replaced the path would fail
    # inside /proc instead of replacing the machine's /dev/stdout.
    result = script("export-csv", "-o", "/dev/fd/1", env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("id,occurred_at,customer_id")
    # Only the CSV: the summary goes to stderr, where it cannot end up inside the data.
    assert len(result.stdout.splitlines()) == 4
    assert "exported 3 ledger rows" in result.stderr


def test_a_json_summary_cannot_share_stdout_with_the_csv(script_env, tmp_path):
    result = script("export-csv", "-o", "/dev/fd/1", "--json", env=script_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "id,occurred_at" not in result.stdout
    assert json.loads(result.stdout)["error"]["message"].endswith("--json needs -o FILE")


def test_stdout_appended_to_the_store_is_refused(sqlite_store, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BILLING_DATABASE_URL": f"sqlite:///{sqlite_store}",
    }
    before = digest(sqlite_store)
    for args in (("export-csv",), ("export-csv", "-o", "/dev/fd/1")):
        with sqlite_store.open("ab") as appended:  # the shell's `>> billing.db`
            result = subprocess.run(
                [sys.executable, "-m", "cloudgreet_billing", *args],
                stdout=appended,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=60,
                check=False,
            )
        assert result.returncode == 2, args
        assert "it is the billing store's file" in result.stderr.splitlines()[-1]
    assert digest(sqlite_store) == before
    assert ledger_count() == 3


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/stderr", "/dev/fd/3", "/proc/self/fd/1"])
def test_dev_stdout_and_its_kin_are_written_through(name):
    assert files._is_descriptor_path(Path(name))


# --- the outbox and the demo workspace ----------------------------------------------


def test_the_outbox_writes_whole_files_and_names_a_failure(tmp_path):
    from cloudgreet_billing.adapters.notify.outbox import Outbox
    from cloudgreet_billing.adapters.notify.protocol import DeliveryError

    outbox = Outbox(tmp_path / "outbox")
    name = outbox.write("email", 7, ".eml", b"Subject: hello\r\n\r\nbody\r\n")
    written = tmp_path / "outbox" / name
    assert written.read_bytes().endswith(b"body\r\n")
    assert written.stat().st_mode & 0o777 == 0o600  # a customer's address and invoice
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [name]
    with read_only(tmp_path / "outbox"), pytest.raises(DeliveryError) as caught:
        outbox.write("sms", 8, ".sms.json", b"{}")
    assert str(caught.value).startswith(f"cannot write {tmp_path / 'outbox'}/")
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [name]


def test_demo_refuses_the_folder_of_the_store_in_use(tmp_path, monkeypatch):
    live = tmp_path / "live"
    live.mkdir()
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{live / 'billing.db'}")
    add_entries()
    before = digest(live / "billing.db")

    result = run("demo", "--dir", str(live), "--json")

    assert result.exit_code == 2
    assert error(result)["code"] == "refused_overwrite"
    assert "billing.db is the billing store in use" in error(result)["message"]
    assert digest(live / "billing.db") == before
    assert sorted(p.name for p in live.iterdir() if not p.name.startswith("billing.db")) == []
    assert ledger_count() == 3


def test_demo_refuses_a_folder_with_someone_elses_env(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("STRIPE_SECRET_KEY=sk_live_0123456789abcdefghij\n")

    result = run("demo", "--dir", str(project))

    assert result.exit_code == 2
    assert "it has a .env the demo did not write" in result.stderr
    assert (project / ".env").read_text() == "STRIPE_SECRET_KEY=sk_live_0123456789abcdefghij\n"
    assert [p.name for p in project.iterdir()] == [".env"]
