"""The suite's own footing: the hypothesis profiles tox passes on, and strategies that draw only
what a test can go on to use (a flaky draw replays from the example database on every run)."""

from __future__ import annotations

import os

import pytest
from conftest import chosen_profile
from hypothesis import find, given, settings
from hypothesis.errors import NoSuchExample
from strategies import EDIT_ROOM, own_counters, pipelines

from salesmgr import storage
from salesmgr.plugin.manager import get_registry


@pytest.mark.parametrize("name", ["dev", "ci"])
def test_every_profile_tox_may_pass_is_registered(name: str) -> None:
    assert settings.get_profile(name) is not None


def test_the_ci_profile_draws_the_same_examples_and_remembers_none() -> None:
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None


def test_the_profile_in_force_is_the_one_asked_for() -> None:
    expected = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    assert chosen_profile() == expected == settings.get_current_profile_name()


def test_the_counter_a_replica_writes_next_is_never_drawn_at_the_limit() -> None:
    with pytest.raises(NoSuchExample):
        find(own_counters, lambda c: c > 2**64 - 1 - EDIT_ROOM,
             settings=settings(database=None, max_examples=200))


@settings(max_examples=100, deadline=None)
@given(pipelines() | pipelines(max_records=1, max_replicas=1))  # the latter: counters mostly
def test_a_drawn_pipeline_can_take_edits_and_still_be_saved(pipeline) -> None:
    opportunity = get_registry().record_type("opportunity")
    for _ in range(3):
        pipeline.add(opportunity, {"company": "Acme", "title": "Anvils"})
    assert pipeline.counter <= 2**64 - 1 - EDIT_ROOM + 3
    assert storage.decode(storage.encode(pipeline), "test") == pipeline
