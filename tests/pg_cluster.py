"""A throwaway PostgreSQL cluster for the test session, when no server is given.

CI starts its own cluster (``.ci/run``) and passes ``BILLING_TEST_DATABASE_URL``. On a
developer machine with Debian's ``postgresql-NN`` binaries, the tests start one here:
``initdb`` refuses to run as root, so the server runs as ``postgres`` when we are root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def find_bin_dir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    port: int
    bin_dir: Path
    as_postgres: bool

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        data = self.root / "data"
        sockets = self.root / "sockets"
        sockets.mkdir()
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(sockets, "postgres")
        self._run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        options = (
            f"-k {sockets} -c listen_addresses=127.0.0.1 -p {self.port} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster | None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return None
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="billing-pg-"))
    root.chmod(0o755)
    cluster = Cluster(root=root, port=free_port(), bin_dir=bin_dir, as_postgres=as_postgres)
    cluster.start()
    return cluster
