"""What the suite needs beyond the virtualenv: ``make test``'s one-line stop (tests/prerequisites.py),
``conftest.require``'s skip or, under NNLAB_REQUIRE_ALL=1, failure, and the make targets they name."""
import dataclasses
import re
from pathlib import Path

import pytest

import prerequisites
from conftest import require, require_module

ROOT = Path(__file__).resolve().parents[2]


def hide(monkeypatch, name):
    """``NEEDS[name]`` as if it were missing here."""
    monkeypatch.setitem(prerequisites.NEEDS, name, dataclasses.replace(prerequisites.NEEDS[name], check=lambda: None))


def test_require_goes_on_skips_or_under_require_all_fails_naming_what_and_how(monkeypatch):
    monkeypatch.delenv("NNLAB_REQUIRE_ALL", raising=False)
    require("/usr/lib/postgresql/15/bin", "postgresql")  # found: nothing happens
    with pytest.raises(pytest.skip.Exception, match=r"missing PostgreSQL's server binaries .*: `make postgres`"):
        require(None, "postgresql")
    monkeypatch.setenv("NNLAB_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match=r"NNLAB_REQUIRE_ALL=1: missing PostgreSQL's server binaries"):
        require(None, "postgresql")
    with pytest.raises(pytest.fail.Exception, match=r"missing Tiny Shakespeare: .* \[text not found here\]"):
        require(FileNotFoundError("text not found here"), "text")
    with pytest.raises(pytest.fail.Exception, match=r"missing the PostgreSQL driver psycopg: `make setup`.*No module named"):
        require_module("psycopg_that_is_not_there", "psycopg")


def test_make_test_stops_in_one_line_naming_what_is_missing_unless_partial(monkeypatch, capsys):
    for name in prerequisites.NEEDS:
        monkeypatch.setitem(prerequisites.NEEDS, name,
                            dataclasses.replace(prerequisites.NEEDS[name], check=lambda: True))
    assert prerequisites.main([]) == 0 and capsys.readouterr().err == ""
    hide(monkeypatch, "postgresql")
    hide(monkeypatch, "chromium")
    assert prerequisites.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("make test: missing Debian's chromium: `make browser`")
    assert "PostgreSQL's server binaries" in err and "`make postgres` as root" in err and "PARTIAL=1" in err
    assert prerequisites.main(["--partial"]) == 0
    assert capsys.readouterr().err.startswith("make test PARTIAL=1: without Debian's chromium")


def test_every_make_target_a_need_names_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = {target for need in prerequisites.NEEDS.values() for target in re.findall(r"`make ([\w-]+)", need.how)}
    assert named and named <= targets, named - targets


def test_no_test_skips_except_through_require():
    """A skip for something missing goes through ``conftest.require``, so it says how to get it and
    fails under NNLAB_REQUIRE_ALL=1; a dependency of the package is a plain import."""
    tests = ROOT / "tests"
    direct = [f"{path.relative_to(tests)}:{n}" for path in sorted(tests.rglob("*.py")) if path.name != "conftest.py"
              for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if re.search(r"pytest\.(skip|importorskip)\(|mark\.skip(if)?\b", line)]
    assert direct == []
