"""Every hook salesmgr calls, in the order a sync meets them.  This is the one place they are
documented; `docs/plugins.md` follows it (a test checks that it names every hook here).

A plugin writes::

    from salesmgr import hookimpl

    @hookimpl
    def salesmgr_register_policies(register):
        register(MyPolicy())

Hooks named ``salesmgr_register_*`` collect: every plugin's implementation is called with a
``register`` callback and may call it any number of times.  Hooks marked *first result wins* stop
at the first implementation that returns something other than ``None``; use
``@hookimpl(tryfirst=True)`` to run before the built-ins, never rely on registration order.
Cross-cutting work (timing, tracing) belongs in ``@hookimpl(wrapper=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

import pluggy

if TYPE_CHECKING:
    import click

    from salesmgr.exchange.profiles import ImportProfile
    from salesmgr.merge.engine import Conflict, FieldMerge, FieldOutcome, MergeSession
    from salesmgr.merge.report import MergeReport
    from salesmgr.model.fields import Field, RecordType
    from salesmgr.model.pipeline import Pipeline, Record
    from salesmgr.plugin.interfaces import AnyTransport, Codec, MergePolicy, Store

PROJECT = "salesmgr"
hookimpl = pluggy.HookimplMarker(PROJECT)
_spec_marker = pluggy.HookspecMarker(PROJECT)
_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def hookspec(function: _F) -> _F: ...


@overload
def hookspec(*, firstresult: bool = False) -> Callable[[_F], _F]: ...


def hookspec(
    function: _F | None = None, *, firstresult: bool = False
) -> _F | Callable[[_F], _F]:
    """pluggy's spec marker, typed so that a spec stays the function it declares (tox wraps its
    marker the same way): `Hooks` below reads each hook's signature from it."""

    def mark(spec: _F) -> _F:
        return cast(_F, _spec_marker(spec, firstresult=firstresult))

    return mark if function is None else mark(function)


# --- 1. Start-up: what exists ----------------------------------------------------------------


@hookspec
def salesmgr_register_record_types(register: Callable[[RecordType], None]) -> None:
    """Declare record types.

    Called once when the registry is built, before any file is read.  ``register(record_type)``
    adds a `salesmgr.model.fields.RecordType`; a name registered twice is an error.
    Returns nothing.
    The built-in ``opportunity`` and ``activity`` types come from `salesmgr.plugins.records`.
    """


@hookspec
def salesmgr_register_fields(register: Callable[[str, Field], None]) -> None:
    """Add fields to record types declared by someone else.

    Called once after every record type is registered.  ``register(type_name, field)`` appends a
    `salesmgr.model.fields.Field` to that type (an unknown type or a duplicate field name is an
    error).
    Files written with the field keep it on machines without the plugin.  Returns nothing.
    """


@hookspec
def salesmgr_register_codecs(register: Callable[[Codec], None]) -> None:
    """Declare file codecs.

    Called once when the registry is built.  ``register(codec)`` adds a
    `salesmgr.plugin.interfaces.Codec`
    identified by format name and major version; reading picks the codec whose ``sniff`` accepts
    the file's first bytes, saving uses the newest version of the ``pipeline`` format.
    Returns nothing.
    """


@hookspec
def salesmgr_register_transports(register: Callable[[AnyTransport], None]) -> None:
    """Declare transports.

    Called once when the registry is built.  ``register(transport)`` adds a transport for one URL
    scheme (``tcp``, ``serial``, ``folder``...); ``salesmgr sync --from URL`` picks it by the URL's
    scheme.  A live transport is a `salesmgr.plugin.interfaces.Transport` (``connect``/``listen``:
    a duplex `Link`); a store-and-forward one is a `salesmgr.plugin.interfaces.MailboxTransport`
    (``open_mailbox``).  Returns nothing.
    """


@hookspec
def salesmgr_register_stores(register: Callable[[Store], None]) -> None:
    """Declare stores: where pipelines live.

    Called once when the registry is built.  ``register(store)`` adds a
    `salesmgr.plugin.interfaces.Store` for the URL schemes in its ``schemes`` (``file``,
    ``sqlite``, ``postgresql``...); every command taking a pipeline picks the store by its
    address's scheme, and a plain path is a ``file`` address.  A scheme registered twice is an
    error.  Returns nothing.
    """


@hookspec
def salesmgr_register_policies(register: Callable[[MergePolicy], None]) -> None:
    """Declare merge policies.

    Called once when the registry is built.  ``register(policy)`` adds a
    `salesmgr.plugin.interfaces.MergePolicy` under its ``name`` (``--policy NAME``).
    Returns nothing.
    """


@hookspec
def salesmgr_register_import_profiles(register: Callable[[ImportProfile], None]) -> None:
    """Declare import profiles: how another CRM's CSV export maps onto salesmgr's fields.

    Called once when the registry is built.  ``register(profile)`` adds a
    `salesmgr.exchange.profiles.ImportProfile` under its ``name`` (``import --profile NAME``);
    ``salesmgr import`` also picks, unasked, the one profile whose ``signature`` columns the
    CSV's header has.  A name registered twice is an error.  Returns nothing.
    The built-in Salesforce, HubSpot, Pipedrive and Zoho profiles come from
    `salesmgr.plugins.crm_profiles`.
    """


@hookspec
def salesmgr_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``salesmgr`` command line.

    Called once when the command line starts, with the top-level click group; add commands with
    ``cli.add_command`` or the ``@cli.command()`` decorator.  Returns nothing.
    """


# --- 2. Merge: collect, match, merge fields, resolve, validate, report -------------------------


@hookspec(firstresult=True)
def salesmgr_collect_changes(replica: Pipeline, since: Mapping[str, int]) -> list[Record] | None:
    """Find what ``replica`` changed that a peer with knowledge ``since`` has not seen.

    Called once per side at the start of every merge and sync.  ``since`` maps replica ids to the
    highest counter the peer has seen.  Returns the records (live or deleted) that hold at least one
    write the peer lacks.  First result wins; the built-in scans every record's versions.
    """


@hookspec(firstresult=True)
def salesmgr_match_records(session: MergeSession) -> list[tuple[str, str]] | None:
    """Pair the desktop's records with the device's.

    Called once per merge after changes are collected.  ``session`` holds both pipelines and the
    changes of each side.  Returns ``(desktop_id, device_id)`` pairs to merge field by field;
    a record in no pair is taken as it is.  First result wins; the built-in pairs equal ids.
    """


@hookspec(firstresult=True)
def salesmgr_merge_field(session: MergeSession, item: FieldMerge) -> FieldOutcome | None:
    """Decide one field of a matched record pair whose two versions differ.

    Called for every field whose dot differs between the two sides.  ``item`` carries the field's
    name, both values and dots, and the record type.  Returns a `salesmgr.merge.FieldOutcome`
    (take a side, a merged value, or a conflict for the policy).  First result wins; the built-ins
    are the causal rule (a write the other side has seen is superseded) and a three-way line merge
    (merge3) for free-text fields such as ``notes``.
    """


@hookspec(firstresult=True)
def salesmgr_resolve_conflict(
    session: MergeSession, conflict: Conflict, policy: MergePolicy
) -> FieldOutcome | None:
    """Decide a true conflict: both sides changed the same field (or record) differently.

    Called once per conflict with the policy chosen by ``--policy``.  Returns the outcome; the
    losing value is written to the conflict log whatever decides.  First result wins; the
    built-in asks ``policy.resolve(conflict)``, so a plugin can override single conflicts here.
    """


@hookspec
def salesmgr_validate_merged(session: MergeSession, record: Record) -> list[str] | None:
    """Check a record the merge produced.

    Called for every record whose merged content differs from either side, before anything is
    written.  Returns a list of warnings (shown in the report), or None.  All results are kept.
    """


@hookspec
def salesmgr_merge_report(session: MergeSession, report: MergeReport) -> None:
    """Look at the finished merge before either file is written.

    Called once per merge (and per ``--dry-run``).  ``report`` counts records added, changed and
    deleted each way and lists every conflict and how it was decided.  Returns nothing.
    """


# --- 3. Sync sessions: progress and tracing ----------------------------------------------------


@hookspec
def salesmgr_sync_event(stage: str, info: Mapping[str, Any]) -> None:
    """Hear how a sync session is going.

    Called by both ends of a session at each stage: ``hello``, ``authenticated``, ``batch``
    (``info`` has ``records`` and ``bytes`` so far), ``merged``, ``committed``, ``failed``.
    Returns nothing; progress bars and traces are built on it.
    """


# --- the hooks as the core calls them ----------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


class Hook(Generic[P, R]):
    """One hook on `Hooks`: pluggy's caller, typed after the hook's spec.  Call it with keyword
    arguments only (pluggy refuses positional ones)."""

    def __init__(self, spec: Callable[..., Any], *, first: bool) -> None:
        self.name = spec.__name__
        self.first = first  # the spec says firstresult

    def __get__(self, hooks: Hooks, owner: type | None = None) -> Callable[P, R]:
        # The type as a string: subscripting Callable at run time made a new alias at every
        # call of every hook (a hundredth of a 100,000-record merge).
        return cast("Callable[P, R]", getattr(hooks.relay, self.name))


def first_result(spec: Callable[P, R]) -> Hook[P, R]:
    """A hook whose first non-None result wins: the call returns that result, or None."""
    return Hook(spec, first=True)


def every_result(spec: Callable[P, R | None]) -> Hook[P, list[R]]:
    """A hook every implementation answers: the call returns their non-None results."""
    return Hook(spec, first=False)


def every_call(spec: Callable[P, None]) -> Hook[P, list[None]]:
    """A hook that only tells: every implementation is called, nothing is returned."""
    return Hook(spec, first=False)


class Hooks:
    """pluggy's hook relay as mypy sees it: each hook has its spec's parameters and returns what
    pluggy returns for it, so a call that does not match its spec fails the type check.
    (A hook not listed here, say a plugin's own, is still reachable, untyped.)"""

    salesmgr_register_record_types = every_call(salesmgr_register_record_types)
    salesmgr_register_fields = every_call(salesmgr_register_fields)
    salesmgr_register_codecs = every_call(salesmgr_register_codecs)
    salesmgr_register_transports = every_call(salesmgr_register_transports)
    salesmgr_register_policies = every_call(salesmgr_register_policies)
    salesmgr_register_import_profiles = every_call(salesmgr_register_import_profiles)
    salesmgr_register_stores = every_call(salesmgr_register_stores)
    salesmgr_register_commands = every_call(salesmgr_register_commands)
    salesmgr_collect_changes = first_result(salesmgr_collect_changes)
    salesmgr_match_records = first_result(salesmgr_match_records)
    salesmgr_merge_field = first_result(salesmgr_merge_field)
    salesmgr_resolve_conflict = first_result(salesmgr_resolve_conflict)
    salesmgr_validate_merged = every_result(salesmgr_validate_merged)
    salesmgr_merge_report = every_call(salesmgr_merge_report)
    salesmgr_sync_event = every_call(salesmgr_sync_event)

    def __init__(self, relay: pluggy.HookRelay) -> None:
        self.relay = relay

    def __getattr__(self, name: str) -> Any:
        return getattr(self.relay, name)
