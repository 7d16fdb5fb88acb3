"""Plugins: a third-party field travels with the file, entry points load, mistakes fail loudly.

Throwaway plugins are registered in fixtures with ``make_plugin_manager(entry_points=False,
extra=[...])`` and the process registry is always put back afterwards; one test installs a real
distribution with an entry point.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from strategies import sample_pipeline

from salesmgr import hookimpl, storage
from salesmgr.errors import PluginError, SyncError, ValidationError
from salesmgr.merge.engine import Conflict, FieldOutcome, merge_files
from salesmgr.model.fields import Field, RecordType, Text
from salesmgr.model.pipeline import Pipeline, new_id
from salesmgr.plugin import hookspecs
from salesmgr.plugin.hookspecs import Hook, Hooks
from salesmgr.plugin.interfaces import MailboxTransport, MergePolicy, Transport
from salesmgr.plugin.manager import (
    DISABLE_ENV,
    Registry,
    get_registry,
    make_plugin_manager,
    use_registry,
)
from salesmgr.sync.transports import live_transport


class RegionPlugin:
    """What a third-party package adding a sales region to opportunities looks like."""

    @hookimpl
    def salesmgr_register_fields(self, register: Callable[[str, Field], None]) -> None:
        register("opportunity", Field("region", Text(50), help="sales region"))


@contextmanager
def registry_with(*plugins: object) -> Iterator[Registry]:
    """The process registry with only the built-ins and ``plugins``, for the block."""
    registry = Registry(make_plugin_manager(entry_points=False, extra=plugins))
    previous = use_registry(registry)
    try:
        yield registry
    finally:
        use_registry(previous)


@pytest.fixture
def with_region() -> Iterator[Registry]:
    with registry_with(RegionPlugin()) as registry:
        yield registry


@pytest.fixture
def without_region() -> Iterator[Registry]:
    with registry_with() as registry:
        yield registry


def region_file(path: Path) -> str:
    """Save a pipeline with one opportunity in region EMEA (the plugin must be installed)."""
    pipeline = sample_pipeline()
    deal, _ = pipeline.add(
        get_registry().record_type("opportunity"),
        {"company": "Acme", "title": "Anvils", "region": "EMEA"},
    )
    storage.save(pipeline, path)
    return deal.id


# -- a plugin's field -------------------------------------------------------------------------


def test_the_fixture_puts_the_previous_registry_back() -> None:
    before = get_registry()
    with registry_with(RegionPlugin()) as registry:
        assert get_registry() is registry
        assert "region" in registry.record_type("opportunity").by_name
    assert get_registry() is before
    assert "region" not in before.record_type("opportunity").by_name


def test_a_plugin_field_is_checked_and_round_trips(with_region: Registry, tmp_path: Path) -> None:
    opportunity = with_region.record_type("opportunity")
    with pytest.raises(ValidationError, match="region"):
        Pipeline.create().add(opportunity, {"company": "A", "title": "B", "region": "x" * 51})
    path = tmp_path / "p.smgr"
    deal_id = region_file(path)
    assert storage.load(path).find(deal_id).values["region"] == "EMEA"
    credited = [p for p in with_region.plugins.values() if ("field", "opportunity.region")
                in p.provides]
    assert len(credited) == 1


def test_without_the_plugin_the_field_is_kept_and_written_back(tmp_path: Path) -> None:
    path = tmp_path / "p.smgr"
    with registry_with(RegionPlugin()):
        deal_id = region_file(path)
        written = storage.load(path).find(deal_id)

    with registry_with() as plain:
        opportunity = plain.record_type("opportunity")
        pipeline = storage.load(path)
        assert pipeline.find(deal_id).values["region"] == "EMEA"
        with pytest.raises(ValidationError, match="no field 'region'"):
            pipeline.update(opportunity, deal_id, {"region": "APAC"})
        pipeline.update(opportunity, deal_id, {"stage": "Won"})
        storage.save(pipeline, path)

    with registry_with(RegionPlugin()):
        deal = storage.load(path).find(deal_id)
    assert deal.values["region"] == "EMEA"
    assert deal.dot_of("region") == written.dot_of("region")
    assert deal.values["stage"] == "Won"


# -- a real entry point -----------------------------------------------------------------------


@contextmanager
def installed(folder: Path, module: str, source: str, version: str = "1.2.3") -> Iterator[str]:
    """A distribution in ``folder`` (a module and its ``.dist-info`` with an entry point in
    the ``salesmgr`` group), the way pip would install it; yields the entry point's name."""
    (folder / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = folder / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n", encoding="utf-8"
    )
    name = module.replace("_", "-")
    (info / "entry_points.txt").write_text(f"[salesmgr]\n{name} = {module}\n", encoding="utf-8")
    try:
        yield name
    finally:
        sys.modules.pop(module, None)


TERRITORY = """
    from salesmgr import hookimpl
    from salesmgr.model.fields import Field, Text

    @hookimpl
    def salesmgr_register_fields(register):
        register("opportunity", Field("territory", Text(50)))
"""


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    return tmp_path


def test_an_installed_entry_point_is_loaded_and_listed_with_its_version(on_path: Path) -> None:
    with installed(on_path, "salesmgr_territory_demo", TERRITORY, "1.2.3") as name:
        registry = Registry(make_plugin_manager())
        assert registry.plugins[name].version == "1.2.3"
        assert ("field", "opportunity.territory") in registry.plugins[name].provides
        assert "territory" in registry.record_type("opportunity").by_name


def test_disable_plugins_skips_entry_points(on_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, "1")
    with installed(on_path, "salesmgr_territory_off", TERRITORY) as name:
        registry = Registry(make_plugin_manager())
        assert name not in registry.plugins
        assert "territory" not in registry.record_type("opportunity").by_name
        assert "salesmgr_territory_off" not in sys.modules


def test_a_plugin_that_cannot_be_imported_is_a_plugin_error(on_path: Path) -> None:
    broken = "import salesmgr_no_such_dependency\n"
    with installed(on_path, "salesmgr_broken_demo", broken), pytest.raises(
        PluginError, match="cannot load a salesmgr plugin"
    ):
        make_plugin_manager()


# -- mistakes fail loudly ---------------------------------------------------------------------


class Misspelled:
    @hookimpl
    def salesmgr_register_feilds(self, register: Callable[[str, Field], None]) -> None:
        register("opportunity", Field("region"))


class OpportunityAgain:
    @hookimpl
    def salesmgr_register_record_types(self, register: Callable[[RecordType], None]) -> None:
        register(RecordType("opportunity", [Field("company")]))


class FieldTwice:
    @hookimpl
    def salesmgr_register_fields(self, register: Callable[[str, Field], None]) -> None:
        register("opportunity", Field("company"))


class FieldOfNothing:
    @hookimpl
    def salesmgr_register_fields(self, register: Callable[[str, Field], None]) -> None:
        register("invoice", Field("amount"))


def test_a_misspelled_hook_name_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="salesmgr_register_feilds"):
        make_plugin_manager(entry_points=False, extra=[Misspelled()])


def test_a_misspelled_hook_in_an_installed_plugin_is_a_plugin_error(on_path: Path) -> None:
    source = TERRITORY.replace("salesmgr_register_fields", "salesmgr_register_field")
    with installed(on_path, "salesmgr_typo_demo", source), pytest.raises(
        PluginError, match="salesmgr_register_field"
    ):
        make_plugin_manager()


@pytest.mark.parametrize(
    ("plugin", "problem"),
    [
        (OpportunityAgain(), "record type 'opportunity' is registered twice"),
        (FieldTwice(), "already has a field 'company'"),
        (FieldOfNothing(), "no record type 'invoice'"),
    ],
    ids=["record type twice", "field twice", "field of an unknown type"],
)
def test_declaring_something_twice_or_for_nothing_is_a_plugin_error(
    plugin: object, problem: str
) -> None:
    with pytest.raises(PluginError, match=problem):
        Registry(make_plugin_manager(entry_points=False, extra=[plugin]))


# -- collecting hooks go through pluggy -------------------------------------------------------


class NamedPolicy(MergePolicy):
    def __init__(self, name: str) -> None:
        self.name = name

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        return FieldOutcome("desktop")


class WrapsPolicies:
    """Cross-cutting work around a collecting hook: it sees the call and adds a policy after the
    others registered theirs."""

    def __init__(self) -> None:
        self.calls = 0
        self.known_after: list[str] = []

    @hookimpl(wrapper=True)
    def salesmgr_register_policies(
        self, register: Callable[[MergePolicy], None]
    ) -> Generator[None, None, None]:
        self.calls += 1
        result = yield
        register(NamedPolicy("coin-toss"))
        return result


class Territory:
    """One plugin class, installed twice under different names."""

    def __init__(self, region: str) -> None:
        self.region = region

    @hookimpl
    def salesmgr_register_policies(self, register: Callable[[MergePolicy], None]) -> None:
        register(NamedPolicy(f"{self.region}-wins"))


def test_a_wrapper_around_a_register_hook_runs_and_is_credited_with_what_it_adds() -> None:
    wrapper = WrapsPolicies()
    registry = Registry(make_plugin_manager(entry_points=False, extra=[wrapper]))
    assert wrapper.calls == 1
    assert "coin-toss" in registry.policies
    name = registry.pm.get_name(wrapper)
    assert registry.plugins[name].provides == [("policy", "coin-toss")]
    built_in = registry.plugins["salesmgr.plugins.policies"].provides
    assert ("policy", "field-merge") in built_in and ("policy", "coin-toss") not in built_in


def test_each_instance_of_a_plugin_class_is_credited_with_its_own_registrations() -> None:
    north, south = Territory("north"), Territory("south")
    registry = Registry(make_plugin_manager(entry_points=False, extra=[north, south]))
    assert registry.plugins[registry.pm.get_name(north)].provides == [("policy", "north-wins")]
    assert registry.plugins[registry.pm.get_name(south)].provides == [("policy", "south-wins")]


# -- the core finds record types through the registry, not by name ------------------------------


class SecondConflictLog:
    @hookimpl
    def salesmgr_register_record_types(self, register: Callable[[RecordType], None]) -> None:
        register(RecordType("clash", [Field("field", Text())], conflict_log=True))


def test_the_conflict_log_type_is_the_one_flagged_and_only_one_may_be() -> None:
    registry = Registry(make_plugin_manager(entry_points=False))
    assert registry.conflict_log.name == "conflict"
    with pytest.raises(PluginError, match="both keep the conflict log") as refused:
        Registry(make_plugin_manager(entry_points=False, extra=[SecondConflictLog()]))
    assert "'conflict'" in str(refused.value) and "'clash'" in str(refused.value)


class Contacts:
    """A third-party record type whose e-mail address names the person."""

    @hookimpl
    def salesmgr_register_record_types(self, register: Callable[[RecordType], None]) -> None:
        register(RecordType(
            "contact", [Field("name", Text()), Field("email", Text())],
            title_field="name", identity_fields=("email",),
        ))


def test_combine_flags_likely_duplicates_of_any_type_that_names_its_identity_fields() -> None:
    with registry_with(Contacts()) as registry:
        ours, theirs = Pipeline(new_id(), "North"), Pipeline(new_id(), "South")
        contact = registry.record_type("contact")
        kept, _ = ours.add(contact, {"name": "Ana", "email": "ana@example.com"})
        again, _ = theirs.add(contact, {"name": "Ana B.", "email": " ANA@example.com"})
        theirs.add(contact, {"name": "Bo", "email": "bo@example.com"})
        result = merge_files(ours, theirs, combine=True)
    assert result.report.duplicates == [(kept.id, again.id, " ANA@example.com")]


def test_live_and_store_and_forward_transports_are_two_interfaces(tmp_path: Path) -> None:
    registry = Registry(make_plugin_manager(entry_points=False))
    folder, tcp = registry.transport("folder"), registry.transport("tcp")
    assert isinstance(folder, MailboxTransport) and not isinstance(folder, Transport)
    assert not hasattr(folder, "connect") and not hasattr(folder, "listen")
    assert isinstance(tcp, Transport) and not hasattr(tcp, "open_mailbox")
    with pytest.raises(SyncError, match="folder:// is store and forward; it has no live link"):
        live_transport(f"folder://{tmp_path}", registry)


def test_the_core_calls_every_hook_typed_as_its_spec_says() -> None:
    specs = {name for name in vars(hookspecs) if name.startswith("salesmgr_")}
    typed = {name: hook for name, hook in vars(Hooks).items() if isinstance(hook, Hook)}
    assert set(typed) == specs
    for name, hook in typed.items():
        assert hook.first == getattr(hookspecs, name).salesmgr_spec["firstresult"], name
    registry = Registry(make_plugin_manager(entry_points=False))
    assert registry.hook.salesmgr_match_records is registry.pm.hook.salesmgr_match_records
