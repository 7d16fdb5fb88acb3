"""The installed ``salesmgr`` console script works as a user's shell runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "salesmgr"


def salesmgr(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *(str(a) for a in args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def script() -> Path:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: install the project (pip install -e .)")
    return SCRIPT


def test_init_add_list_show_through_the_installed_script(script: Path, tmp_path: Path) -> None:
    assert salesmgr("init", "pipe.smgr", "--currency", "EUR", cwd=tmp_path).returncode == 0
    added = salesmgr("add", "pipe.smgr", "--company", "Acme", "--title", "Big deal",
                     "--value", "12000", "--probability", "40", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    record_id = added.stdout.strip()
    assert added.stdout == record_id + "\n"

    listed = salesmgr("list", "pipe.smgr", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t")[:3] == ["id", "company", "title"]
    assert row.split("\t")[:5] == [record_id, "Acme", "Big deal", "Lead", "12000.00"]

    shown = salesmgr("show", "pipe.smgr", record_id[:8], "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["id"], data["value"], data["probability"], data["currency"]) == (
        record_id, "12000.00", 40, "EUR")
    assert data["activities"] == []


def test_an_error_is_one_line_on_stderr_and_a_non_zero_exit(
    script: Path, tmp_path: Path
) -> None:
    assert salesmgr("init", "pipe.smgr", cwd=tmp_path).returncode == 0
    before = (tmp_path / "pipe.smgr").read_bytes()
    failed = salesmgr("edit", "pipe.smgr", "no-such-id", "--stage", "Won", cwd=tmp_path)
    assert failed.returncode != 0
    assert failed.stdout == ""
    assert failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("salesmgr: ") and "no-such-id" in failed.stderr
    assert (tmp_path / "pipe.smgr").read_bytes() == before
