"""``demo``: walk the daily checklist end to end in a throwaway workspace."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, json_mode

if TYPE_CHECKING:
    from rich.console import Console


def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Workspace folder (default: a new temporary folder). Its .env points every "
            "part at files inside it. A folder holding the store in use, or a .env the demo "
            "did not write, is refused.",
            file_okay=False,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Try the whole playbook with realistic data and no credentials.

    Each step runs the real command, as you would type it, in the workspace: your own
    environment's Stripe key and database are never used. retry, resend-link and portal
    run as dry runs, which need no key and send nothing. The closing lines run as printed.

    Example: cloudgreet-billing demo --dir /tmp/billing-demo
    """
    from cloudgreet_billing.adapters.files import store_files
    from cloudgreet_billing.bootstrap import store_files_of
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.config import default_sqlite_path, variables
    from cloudgreet_billing.errors import BillingError
    from cloudgreet_billing.services.demo import CARRY_ON, checklist, write_workspace

    try:
        protected = store_files_of(app_context(ctx).settings)
    except BillingError:
        # A broken environment is the demo's to ignore, not to trip over; the default
        # store is still never written.
        protected = store_files(default_sqlite_path())
    workspace = (directory or Path(tempfile.mkdtemp(prefix="cloudgreet-billing-demo-"))).resolve()
    files = write_workspace(workspace, utcnow(), protected=protected)
    # Real environment variables win over .env files: drop them, so the demo can never
    # touch a real Stripe account or database.
    env = {key: value for key, value in os.environ.items() if key not in variables()}
    program, activate = _program()
    typed = _typed(program, activate)
    if not json_mode():
        sys.stderr.write(
            "Every step runs in the workspace, as you would type it there:\n"
            + "".join(f"$ {line}\n" for line in _getting_there(workspace, activate))
        )
    steps = []
    for step in checklist(files):
        command = shlex.join([*typed, *step.args])
        if not json_mode():
            sys.stderr.write(f"\n== {step.title}\n$ {command}\n")
            sys.stderr.flush()
        result = subprocess.run(
            [sys.executable, "-m", "cloudgreet_billing", *step.args],
            env=env,
            cwd=workspace,
            capture_output=json_mode(),
            text=True,
            check=False,
        )
        steps.append({"command": command, "exit_code": result.returncode})
        if result.returncode not in step.expected:
            raise BillingError(
                f"demo step failed: {command} exited {result.returncode}",
                hint=f"set BILLING_DEBUG=1 and run that command in {workspace} to see why",
                code="demo_failed",
            )

    shell_sets = [name for name in variables() if os.environ.get(name, "").strip()]
    carry_on = [
        *([f"unset {' '.join(shell_sets)}"] if shell_sets else []),
        *_getting_there(workspace, activate),
        *(shlex.join([*typed, *args]) for args in CARRY_ON),
    ]
    if shell_sets and not json_mode():
        sys.stderr.write("\n" + _shell_warning(shell_sets) + "\n")

    def human(console: Console) -> None:
        console.print(
            f"\nThe workspace: {workspace}\n"
            f"  messages dunning sent: {files['outbox']}\n"
            f"  the finance export:    {files['export']}\n\n"
            "Carry on there; each line runs as printed:"
        )
        for line in carry_on:
            console.print(f"  {line}")

    emit(
        {
            "dir": str(workspace),
            "env_file": str(files["env"]),
            "steps": steps,
            "carry_on": carry_on,
            "shell_overrides": shell_sets,
        },
        human,
    )


def _program() -> tuple[list[str], Path | None]:
    """How to run this very installation from any folder, and the virtual environment's
    ``activate`` script when it is not on PATH (None when it is, or there is none).

    ``cloudgreet-billing`` when the shell finds this installation's script; otherwise the
    script's full path (``.venv/bin/cloudgreet-billing`` from a fresh clone), or the
    interpreter with ``-m`` when no script is installed."""
    script = Path(sys.executable).absolute().with_name("cloudgreet-billing")
    if not script.exists():
        return [sys.executable, "-m", "cloudgreet_billing"], None
    found = shutil.which("cloudgreet-billing")
    if found is not None and Path(found).resolve() == script.resolve():
        return ["cloudgreet-billing"], None
    activate = script.with_name("activate")
    in_venv = sys.prefix != sys.base_prefix and activate.is_file()
    return [str(script)], activate if in_venv else None


def _getting_there(workspace: Path, activate: Path | None) -> list[str]:
    """Shell lines that make the printed commands run as printed."""
    return [
        *([f"source {shlex.quote(str(activate))}"] if activate else []),
        f"cd {shlex.quote(str(workspace))}",
    ]


def _typed(program: list[str], activate: Path | None) -> list[str]:
    """What to type once the virtual environment is active."""
    return ["cloudgreet-billing"] if activate is not None else program


def _shell_warning(names: list[str]) -> str:
    from cloudgreet_billing.config import shown_value

    shown = []
    for name in names:
        value = os.environ[name]
        if name == "STRIPE_SECRET_KEY" and "_live_" in value:
            shown.append(f"{name} (a LIVE key, {shown_value(name, value)})")
        else:
            shown.append(name)
    it, wins = ("it", "it wins") if len(names) == 1 else ("them", "they win")
    return (
        f"warning: your shell sets {', '.join(shown)}.\n"
        f"The demo's own steps ignored {it}; in commands you type, {wins} over\n"
        f"the workspace's .env, so the first line below unsets {it}."
    )
