"""Hypothesis profiles for this suite, chosen with ``HYPOTHESIS_PROFILE`` (tox passes it on).

- ``dev`` (the default on a workstation): random examples, and the example database in
  ``.hypothesis/`` so that a failure found once is replayed first on the next run.
- ``ci`` (the default when ``CI`` is set): derandomized, no example database — every run of the
  same commit draws the same examples, and nothing a previous run stored can make a run fail that
  the code alone would pass.

Each test keeps its own ``max_examples`` and ``stateful_step_count``; a profile only says how the
examples are drawn and remembered.

And fixtures every specification may use: where a pipeline lives (one test, three stores).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from salesmgr.testing.postgres import TemporaryPostgres

PROFILE_ENV = "HYPOTHESIS_PROFILE"

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)


def chosen_profile() -> str:
    """The profile asked for, else ``ci`` under CI and ``dev`` elsewhere."""
    return os.environ.get(PROFILE_ENV) or ("ci" if os.environ.get("CI") else "dev")


settings.load_profile(chosen_profile())

STORES = ("file", "sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """One throwaway PostgreSQL server for the whole run, started on first use.  If it cannot
    start, every test needing it fails (never skips): CI must not pass without it."""
    server = TemporaryPostgres.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_uri(postgres: TemporaryPostgres) -> Iterator[str]:
    """A new database of the test's own (dropped afterwards): tests never see each other."""
    uri = postgres.new_database()
    yield uri
    postgres.drop_database(uri)


Addresses = Callable[[str], str]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def address(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Addresses:
    """``address(name)``: where a pipeline called ``name`` lives in the store under test — a file
    of its own, or one slot of the test's SQLite or PostgreSQL database."""
    if store_kind == "file":
        return lambda name: str(tmp_path / f"{name}.smp")
    if store_kind == "sqlite":
        return lambda name: f"sqlite:///{tmp_path}/office.db#{name}"
    uri = request.getfixturevalue("postgres_uri")
    return lambda name: f"{uri}#{name}"
