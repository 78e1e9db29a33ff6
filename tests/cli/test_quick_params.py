"""Every parameter of every command converts a value without Pydantic exactly as Typer's
own converter does: the same value, or the same error with the same words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer._click import Context
from typer._coercion import build_runtime_param
from typer.core import _TyperParameter
from typer.main import get_command

from cloudgreet_billing.cli import COMMANDS, app, build_command
from cloudgreet_billing.cli.quick_params import QuickParam, quick_kind


def every_parameter() -> Iterator[tuple[str, Any, _TyperParameter]]:
    """(command path, command, parameter) for the root, every command and subcommand, and
    each one's help option."""

    def walk(path: str, command: Any) -> Iterator[tuple[str, Any, _TyperParameter]]:
        ctx = Context(command, info_name=path, help_option_names=["-h", "--help"])
        for param in [*command.params, command.get_help_option(ctx)]:
            if isinstance(param, _TyperParameter):
                yield path, command, param
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(f"{path} {name}", sub)

    yield from walk("cloudgreet-billing", get_command(app))
    for name in COMMANDS:
        yield from walk(name, build_command(name))


def outcome(runtime: Any, value: Any, param: _TyperParameter, ctx: Context) -> Any:
    try:
        return ("value", type(value).__name__, runtime.coerce(value, param=param, ctx=ctx))
    except Exception as exc:
        words = getattr(exc, "message", None) or str(exc)
        return ("error", type(exc).__name__, words, getattr(exc, "hint", None))


@pytest.fixture(scope="module")
def values(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    folder = tmp_path_factory.mktemp("values")
    (folder / "prod.env").write_text("# a file\n")
    (folder / "sub").mkdir()
    texts = [
        "",
        " ",
        "x",
        "-",
        "0",
        "5",
        "-1",
        "007",
        "1_000",
        "12.5",
        " 7 ",
        "9" * 30,
        "yes",
        "no",
        "true",
        "scheduled",
        "needs_review",
        "usd",
        "cus_RiJ2m0yQbTgC4x",
        "in_1QpL8HLkdIwHu7ixl4OzzPMv",
        "evt_1QpL8ILkdIwHu7ixSt4rTu9p",
        "2026-12-01",
        "2026-12-01T00:00:00Z",
        "https://example.com/pay",
        "a//b",
        "./x",
        str(folder / "prod.env"),
        f"{folder}/./prod.env",
        str(folder / "sub"),
        str(folder / "missing.env"),
    ]
    return [*texts, True, False, 3, None]


PARAMETERS = list(every_parameter())


def test_every_command_has_parameters_the_quick_path_takes() -> None:
    kinds = {quick_kind(param) for _, _, param in PARAMETERS}
    assert {"parsed", "text", "flag", "path"} <= kinds
    # And some it leaves to Typer (a port with limits, a list of ids).
    assert None in kinds


@pytest.mark.parametrize(
    ("path", "command", "param"),
    [entry for entry in PARAMETERS if quick_kind(entry[2]) is not None],
    ids=lambda entry: entry if isinstance(entry, str) else "",
)
def test_the_quick_path_converts_as_typer_does(
    path: str, command: Any, param: _TyperParameter, values: list[Any]
) -> None:
    descriptor = param.type_descriptor
    kind = quick_kind(param)
    assert kind is not None
    quick = QuickParam(
        parameter_info=descriptor.parameter_info,
        annotation=descriptor.annotation,
        kind=kind,
        descriptor=descriptor,
    )
    typer_own = build_runtime_param(descriptor)
    ctx = Context(command, info_name=path)
    for value in values:
        assert outcome(quick, value, param, ctx) == outcome(typer_own, value, param, ctx), (
            param.name,
            value,
        )


def test_a_bad_value_still_reads_as_typer_words_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the whole command, the path quoted as typed: ``sub`` by the quick path,
    # ``./sub`` by Typer's own (``Path`` would spell it ``sub``); a number with limits
    # is Typer's too.
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    runner = CliRunner()
    for typed in ("sub", "./sub"):
        result = runner.invoke(app, ["--env-file", typed, "db", "status"])
        assert result.exit_code == 2
        assert f"'--env-file': file '{typed}' is a directory." in result.output
    result = runner.invoke(app, ["serve", "--port", "70000", "--json"])
    assert result.exit_code == 2
    assert "Input should be less than or equal to 65535" in result.output
