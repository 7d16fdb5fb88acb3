"""What many specifications need: run the command line in-process, read a one-line error, make
a small desktop file, and compare pipelines by what users see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from salesmgr import storage
from salesmgr.cli.group import cli
from salesmgr.model.pipeline import Pipeline, Sources
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data


def salesmgr(*args: object, env: dict[str, str] | None = None) -> Result:
    """``salesmgr ARGS`` through click's runner (stdout and stderr kept apart)."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    """The one line a failed command wrote on stderr (and no traceback anywhere)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def desktop_file(folder: Path, count: int = 5, name: str = "Spring") -> Path:
    pipeline = Pipeline.create(name, "ana")
    rtype = get_registry().record_type("opportunity")
    for i in range(count):
        pipeline.add(rtype, {"company": f"Company {i}", "title": f"Deal {i}", "notes": "met"})
    path = folder / f"{name.lower()}.pipe"
    storage.save(pipeline, path)
    return path


def content(path: Path) -> dict[str, Any]:
    """A pipeline file's user data (no versions, no hidden fields)."""
    return user_data(storage.load(path))


class Ticking(Sources):
    """Real ids; a wall clock that moves on a second at every write, as edits by hand do (so
    "the later edit" never depends on two writes falling in the same millisecond)."""

    def __init__(self) -> None:
        self.now = 1_796_000_000_000

    def now_ms(self) -> int:
        self.now += 1000
        return self.now
