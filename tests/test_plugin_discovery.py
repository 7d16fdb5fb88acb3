"""Plugins are found without importing importlib.metadata, and exactly as it finds them.

`salesmgr.plugin.discovery` reads each distribution's ``entry_points.txt`` itself where the
installation is plain folders on ``sys.path`` and asks importlib.metadata anywhere else; either
way the entry points, their order and their distributions' versions must be importlib.metadata's.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from salesmgr.plugin import discovery
from salesmgr.plugin.discovery import Entry, entries, metadata_entries, plain_entries


@pytest.mark.parametrize("group", ["salesmgr", "console_scripts", "pytest11"])
def test_this_installation_is_read_as_importlib_metadata_reads_it(group: str) -> None:
    assert list(plain_entries(group)) == metadata_entries(group)


# Distributions laid out as installers lay them out, in spellings that test the rules: names
# that normalize alike (so an earlier one hides a later one), entry points with spaces,
# comments, attributes and extras, other groups around ours.
NAMES = ["salesmgr_extra", "Salesmgr.Extra", "salesmgr-extra", "other", "Other_Tool", "zeta"]
LINES = ["# a comment", "#off = commented_out", "", "  ", "plug = plug_mod", "plug2=plug_mod:make",
         " spaced  =  a.b : c.d ", "extras = mod:obj [fast]", "plug = again"]


@st.composite
def site_folders(draw: st.DrawFn) -> list[list[tuple[str, str, str]]]:
    """Folders on sys.path, each a list of (info folder name, its kind, entry_points.txt)."""
    folders = []
    for _ in range(draw(st.integers(1, 3))):
        infos = []
        for name in draw(st.lists(st.sampled_from(NAMES), max_size=4)):
            version = draw(st.sampled_from(["1.0", "2.0.post1", ""]))
            kind = draw(st.sampled_from([".dist-info", ".dist-info", ".egg-info"]))
            stem = f"{name}-{version}" if version else name
            groups = []
            for group in draw(st.lists(st.sampled_from(["salesmgr", "console_scripts"]),
                                       max_size=2)):
                groups.append(f"[{group}]")
                groups += draw(st.lists(st.sampled_from(LINES), max_size=3))
            infos.append((stem + kind, version, "\n".join(groups)))
        folders.append(infos)
    return folders


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=site_folders())
def test_any_layout_of_folders_is_read_as_importlib_metadata_reads_it(
    layout: list[list[tuple[str, str, str]]], tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    roots = []
    for infos in layout:
        root = tmp_path_factory.mktemp("site")
        for folder, version, text in infos:
            info = root / folder
            if info.exists():
                continue
            info.mkdir()
            name = folder.rpartition(".")[0].partition("-")[0]  # as the installer named it
            (info / ("METADATA" if folder.endswith(".dist-info") else "PKG-INFO")).write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version or '0'}\n")
            (info / "entry_points.txt").write_text(text)
        roots.append(str(root))
    with monkeypatch.context() as patch:
        patch.setattr(sys, "path", roots)
        expected = metadata_entries("salesmgr")
        try:
            read = list(plain_entries("salesmgr"))
        except discovery.NotPlain:
            event("left to importlib.metadata")
            read = entries("salesmgr")
        else:
            event("read without importlib.metadata")
        assert read == expected


def test_an_installation_it_cannot_read_alike_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "legacy_plugin.egg-info"  # no version in the name: only PKG-INFO says it
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: legacy-plugin\nVersion: 3.1\n")
    (info / "entry_points.txt").write_text("[salesmgr]\nlegacy = legacy_plugin\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(discovery.NotPlain):
        list(plain_entries("salesmgr"))
    assert entries("salesmgr") == [Entry("legacy", "legacy_plugin", "legacy_plugin", "3.1")]


def test_an_entry_point_loads_as_entrypoint_load_loads_it() -> None:
    import importlib.metadata

    for value in ("salesmgr.plugin.discovery", "salesmgr.plugin.discovery:Entry.load",
                  "salesmgr.plugin.discovery : entries [extra]"):
        ep = importlib.metadata.EntryPoint("x", value, "salesmgr")
        assert Entry("x", value, "d", "1").load() is ep.load()
    with pytest.raises(ValueError):
        Entry("x", "not a module!", "d", "1").load()


def test_names_are_compared_as_importlib_metadata_compares_them() -> None:
    for a, b in itertools.combinations(["Salesmgr.Extra", "salesmgr-extra", "SALESMGR__extra"], 2):
        assert discovery.normalized(a) == discovery.normalized(b) == "salesmgr_extra"
