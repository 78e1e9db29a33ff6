"""Running the CLI in-process the way a user would, and reading its JSON."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from cloudgreet_billing.cli import app


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def data(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)["data"]


def error(result: Result) -> dict[str, Any]:
    return json.loads(result.stdout)["error"]
