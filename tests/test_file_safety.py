"""Where a pipeline file's lock lives, and editing through a symbolic link: the file system is
shared with other users and other tools, and none of them gets to block, skip or divert an
edit."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from helpers import content, desktop_file, one_error_line, salesmgr

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command


@pytest.fixture
def no_runtime_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A session without XDG_RUNTIME_DIR, its temporary folder and its home under ``tmp_path``."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)  # like /tmp: anyone may create names in it
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    return shared_tmp


def test_without_a_runtime_folder_locks_live_in_a_private_folder_not_a_guessable_tmp_name(
    no_runtime_folder: Path, tmp_path: Path
) -> None:
    # Someone else got there first and made the folder the old locks used, open to all.
    planted = no_runtime_folder / f"salesmgr-locks-{os.getuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    pipeline = desktop_file(tmp_path)
    deal = sorted(storage.load(pipeline).records)[0]

    edited = salesmgr("edit", pipeline, deal, "--stage", "Won")
    assert edited.exit_code == 0, edited.output
    assert list(planted.iterdir()) == []  # nothing of ours in there, nothing of theirs used
    lock = Path(storage.lock_path_of(os.path.realpath(pipeline)))
    assert lock.parent == tmp_path / "home" / ".cache" / "salesmgr" / "locks"
    info = lock.parent.stat()
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700


def test_a_lock_folder_others_may_use_is_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    (runtime / "salesmgr-locks").mkdir(parents=True)
    (runtime / "salesmgr-locks").chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    pipeline = desktop_file(tmp_path)
    before = pipeline.read_bytes()
    deal = sorted(storage.load(pipeline).records)[0]
    edited = salesmgr("edit", pipeline, deal, "--stage", "Won")
    assert edited.exit_code == 3
    assert "the folder for salesmgr's locks is not private" in one_error_line(edited)
    assert pipeline.read_bytes() == before


def test_an_edit_through_a_symbolic_link_changes_the_file_it_names(tmp_path: Path) -> None:
    real = desktop_file(tmp_path)
    link = tmp_path / "shortcut.pipe"
    link.symlink_to(real)
    deal = sorted(storage.load(real).records)[0]

    edited = salesmgr("edit", link, deal, "--stage", "Won")
    assert edited.exit_code == 0, edited.output
    assert link.is_symlink() and link.resolve() == real
    assert content(real)[deal][2]["stage"] == "Won"
    backup = real.with_name(real.name + ".bak")
    assert backup.is_file() and not backup.is_symlink()
    assert content(backup)[deal][2].get("stage") != "Won"
    assert not (tmp_path / "shortcut.pipe.bak").exists()


def test_the_emulator_child_never_imports_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """salesmgr demo and the pytest plugin start the emulator with this Python: a module planted
    in the folder the user runs them from must not be imported in its place."""
    planted = tmp_path / "downloads"
    planted.mkdir()
    marker = tmp_path / "planted-code-ran"
    (planted / "pluggy.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(planted)
    emulator = EmulatorProcess(
        emulator_command(tmp_path / "device.pipe", "tcp://127.0.0.1:0"), tmp_path,
        secret="child-isolation-test-secret-Pq4m",
    )
    try:
        assert emulator.url.startswith("tcp://127.0.0.1:")
    finally:
        emulator.stop()
    assert not marker.exists()
