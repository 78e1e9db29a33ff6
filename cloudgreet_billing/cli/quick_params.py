"""Converting the command line's plain values without building Pydantic adapters.

Typer 0.29 converts every parameter's value through a Pydantic ``TypeAdapter``, built
when the command runs: importing Pydantic and building the adapters took 0.08 s of CPU
of ``sync``'s 0.23 s start-up, on every run of every command, cron's included, where
the values are nearly always plain text, a flag, or nothing at all. For those cases this
module gives the value Typer's adapter would give (the same object, the same error)
without Pydantic; anything else goes to Typer's own adapter, built then.

What is quick, each as ``typer._adapters.build_leaf_adapter`` converts it:

- a value for a parameter with a ``parser``: the parser's answer (the adapter is
  ``Annotated[Any, BeforeValidator(parser)]``). A parser that raises one of our own
  errors is answered the same both ways; anything else it raises goes to Typer, which
  calls the parser again and words the failure as it always does;
- ``str`` given a ``str``: the same string (``str(value)``);
- ``bool`` given a ``bool``: the same flag;
- ``Path`` given a ``str`` that ``Path`` keeps as it is (``str(Path(v)) == v``): Typer's
  own path checks (``coerce_cli_path``) on ``Path(v)``, which is what Pydantic's
  ``TypeAdapter(Path)`` gives; a path Python would normalise (``a//b``, ``./x``, ``""``)
  goes to Typer, so that its messages quote the path as typed.

This replaces Typer's private ``_TyperParameter.get_runtime_param`` and subclasses its
``RuntimeParam``, so ``pyproject.toml`` pins Typer below 0.30.
``tests/cli/test_quick_params.py`` checks every parameter of every command against Typer's
own adapter; ``tests/test_startup.py``, that plain commands import no Pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path
from typer.core import _TyperParameter

from cloudgreet_billing.errors import BillingError

if TYPE_CHECKING:
    from typer._click import Context

PARSED: Final = "parsed"
TEXT: Final = "text"
FLAG: Final = "flag"
PATH: Final = "path"


@dataclass(frozen=True)
class QuickParam(RuntimeParam):
    """A ``RuntimeParam`` that converts the plain cases itself (``kind``) and hands the
    rest to the one Typer would have built (``typer._coercion.build_runtime_param``)."""

    kind: str
    descriptor: Any

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        kind = self.kind
        if kind == TEXT and type(value) is str:
            return value
        if kind == FLAG and type(value) is bool:
            return value
        if kind == PARSED:
            parser = self.parameter_info.parser
            assert parser is not None
            try:
                return parser(value)
            except BillingError:
                raise  # Pydantic lets any error but a ValueError through as it is
            except Exception:
                return self._as_typer_would(value, param, ctx)  # which words this one
        if kind == PATH and type(value) is str and str(Path(value)) == value:
            return coerce_cli_path(
                Path(value), self.parameter_info, path_type=Path, param=param, ctx=ctx
            )
        return self._as_typer_would(value, param, ctx)

    def _as_typer_would(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        typer_own = build_runtime_param(self.descriptor)
        return typer_own._coerce_value(value, param=param, ctx=ctx)


def quick_kind(param: _TyperParameter) -> str | None:
    """Which plain case ``param`` is (``PARSED``, ``TEXT``, ``FLAG``, ``PATH``), or None
    when Typer's adapter is the only way to convert its values."""
    descriptor = param.type_descriptor
    info = descriptor.parameter_info
    annotation = descriptor.annotation
    if descriptor.file_annotation is not None or descriptor.is_list or descriptor.is_tuple:
        return None
    if info.parser is not None:
        return PARSED
    if annotation is str:
        return TEXT
    if annotation is bool:
        return FLAG
    if annotation is Path and info.path_type is None:
        return PATH
    return None


def use_quick_params() -> None:
    """Have every Typer parameter convert its plain cases with a ``QuickParam``: Typer
    builds a parameter's converter on its first value (``get_runtime_param``), help
    options included, which exist only once a command runs."""
    typer_own = _TyperParameter.get_runtime_param

    def get_runtime_param(self: _TyperParameter) -> RuntimeParam:
        if self._runtime_param is None:
            kind = quick_kind(self)
            if kind is None:
                return typer_own(self)
            descriptor = self.type_descriptor
            self._runtime_param = QuickParam(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                kind=kind,
                descriptor=descriptor,
            )
        return self._runtime_param

    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
