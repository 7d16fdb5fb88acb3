"""The entry points of one group in every installed distribution, read without importing
``importlib.metadata`` wherever that gives the very same answer.

Importing ``importlib.metadata`` costs every command 15-25 ms (it brings ``email``, ``zipfile``,
``csv``...), and learning a distribution's name and version parses its METADATA.  In the usual
installation -- folders on ``sys.path`` holding ``NAME-VERSION.dist-info`` folders, found by
Python's own ``PathFinder`` -- the answer lies in plain files: each distribution's
``entry_points.txt``, and its name and version in its folder's name.  `entries` reads them as
``importlib.metadata.entry_points`` does (``sys.path`` in order, each folder in ``os.listdir``
order, the first distribution of a normalized name hiding any later one, the same
``entry_points.txt`` rules) and loads them as ``EntryPoint.load`` does.  Wherever it could
differ -- a zip or an egg on ``sys.path``, a finder that adds distributions of its own, an
``.egg-info`` (its folder name may lack the version), a line it cannot read -- it asks
``importlib.metadata`` instead.  `tests/test_plugin_discovery.py` checks both agree.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# importlib.metadata's own rules (Python 3.11), restated: see its Prepared.normalize,
# PathDistribution._name_from_stem, Sectioned and EntryPoint.pattern.
INFO_SUFFIXES = (".dist-info", ".egg-info")
WHEEL_VERSION = re.compile(r"\d[0-9a-z.!+]*")  # a normalized version: 1.2.3, 2!1.0rc1.post2+local.7
ENTRY_VALUE = re.compile(
    r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$"
)


def normalized(name: str) -> str:
    """A distribution's name as importlib.metadata compares names (``Foo.Bar-baz`` ->
    ``foo_bar_baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


@dataclass(frozen=True)
class Entry:
    """One entry point: its name, its ``module:attribute`` value, and the distribution that
    declares it (its `normalized` name, and its version)."""

    name: str
    value: str
    distribution: str
    version: str
    loader: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    def load(self) -> Any:
        """The object the entry point names, imported as ``EntryPoint.load`` imports it."""
        if self.loader is not None:
            return self.loader()
        match = ENTRY_VALUE.match(self.value)
        if match is None:
            raise ValueError(f"{self.value!r} is not module:attribute")
        attributes = filter(None, (match.group("attr") or "").split("."))
        return functools.reduce(getattr, attributes, importlib.import_module(match["module"]))


class NotPlain(Exception):
    """This installation is not one `entries` reads alike: ask importlib.metadata."""


def entries(group: str) -> list[Entry]:
    """Every distribution's entry points in ``group``, in importlib.metadata's order."""
    try:
        return list(plain_entries(group))
    except NotPlain:
        return metadata_entries(group)


def plain_entries(group: str) -> Iterator[Entry]:
    for finder in sys.meta_path:
        if hasattr(finder, "find_distributions") and not is_path_finder(finder):
            raise NotPlain(f"{finder!r} finds distributions of its own")
    seen: set[str] = set()
    for root in sys.path:
        if not isinstance(root, str):
            raise NotPlain(f"{root!r} on sys.path is not a str")
        for folder in info_folders(root):
            name, _, rest = folder.rpartition(".")[0].partition("-")
            key = normalized(name)
            if key in seen:
                continue  # hidden by a distribution of that name earlier on sys.path
            seen.add(key)
            text = read_text(os.path.join(root or ".", folder, "entry_points.txt"))
            if text is None:
                continue
            found = [(n, v) for section, n, v in sections(text) if section == group]
            if not found:
                continue
            # NAME-VERSION.dist-info, NAME with "_" for "-" and VERSION normalized (the wheel
            # spec, which installers follow): else only the METADATA says the version.
            version = rest
            if not folder.endswith(".dist-info") or not WHEEL_VERSION.fullmatch(version):
                raise NotPlain(f"{folder}: its name does not say the version")
            for entry_name, value in found:
                yield Entry(entry_name, value, key, version)


def is_path_finder(finder: object) -> bool:
    from importlib.machinery import PathFinder

    return finder is PathFinder


def info_folders(root: str) -> list[str]:
    """The ``*.dist-info`` and ``*.egg-info`` entries of one ``sys.path`` entry, in
    ``os.listdir`` order (importlib.metadata's), grouped by normalized name as it groups them."""
    if os.path.basename(root).lower().endswith(".egg"):
        raise NotPlain(f"{root} is an egg")
    try:
        children = os.listdir(root or ".")
    except NotADirectoryError:
        raise NotPlain(f"{root} is a file (a zip?)") from None
    except OSError:
        if os.path.isfile(root):
            raise NotPlain(f"{root} is a file (a zip?)") from None
        return []
    by_name: dict[str, list[str]] = {}
    for child in children:
        low = child.lower()
        if not low.endswith(INFO_SUFFIXES):
            continue
        if not child.endswith(INFO_SUFFIXES):
            raise NotPlain(f"{child}: importlib.metadata names it from its METADATA")
        by_name.setdefault(normalized(low.rpartition(".")[0].partition("-")[0]), []).append(child)
    return [child for group in by_name.values() for child in group]


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None  # as Distribution.read_text: none (or an .egg-info that is a file)
    except (OSError, UnicodeDecodeError) as problem:
        raise NotPlain(f"{path}: {problem}") from None  # importlib.metadata raises these


def sections(text: str) -> Iterator[tuple[str, str, str]]:
    """(section, name, value) of each ``name = value`` line of an ``entry_points.txt``."""
    section: str | None = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise NotPlain(f"{line!r} is not name = value")  # importlib.metadata raises here
        yield section, name.strip(), value.strip()


def metadata_entries(group: str) -> list[Entry]:
    """The same, from importlib.metadata (each distribution's METADATA read once)."""
    import importlib.metadata

    about: dict[importlib.metadata.Distribution, tuple[str, str]] = {}
    found = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist
        if dist is None:
            name = version = ""
        else:
            if dist not in about:
                metadata = dist.metadata
                about[dist] = (metadata["Name"], metadata["Version"])
            name, version = about[dist]
        found.append(Entry(ep.name, ep.value, normalized(name), version, loader=ep.load))
    return found
