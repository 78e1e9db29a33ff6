"""The package is completely typed: mypy, with the settings in pyproject.toml, finds nothing.

mypy keeps its cache in the repository's .mypy_cache (ignored by git), shared with a
developer's own ``mypy`` runs: a cold run takes about ten seconds (Stripe's stubs are most
of it), a warm one under a second.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "pyproject.toml")


def run_mypy(*args: str) -> tuple[str, int]:
    stdout, stderr, status = api.run(["--config-file", CONFIG, *args])
    return stdout + stderr, status


def test_the_package_type_checks(monkeypatch):
    # From the repository root, as ``mypy`` is run there: ``files`` in the config names
    # the package, and the cache lands in the root's .mypy_cache.
    monkeypatch.chdir(ROOT)
    report, status = run_mypy()
    assert status == 0, f"mypy found errors:\n{report}"
    assert "no issues found" in report, report


def test_the_settings_demand_complete_hints(monkeypatch, tmp_path):
    # Proves the check above can fail, and that pyproject.toml's settings are the strict
    # ones: an unannotated function, a bare generic and an unnamed ignore are all errors.
    monkeypatch.chdir(ROOT)
    sample = tmp_path / "loose.py"
    sample.write_text(
        "def untyped(value):\n"
        "    return value\n"
        "\n"
        "\n"
        "def bare() -> dict:\n"
        "    return {}\n"
        "\n"
        "\n"
        "count: int = 'one'  # type: ignore\n"
    )
    report, status = run_mypy(str(sample))
    assert status == 1, report
    for code in ("[no-untyped-def]", "[type-arg]", "[ignore-without-code]"):
        assert code in report, report
