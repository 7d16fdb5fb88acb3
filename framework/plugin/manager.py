"""The plugin manager and what the plugins registered: record types, codecs, transports, stores,
policies, commands.

Every plugin, built-in or not, is a module named in the ``salesmgr`` entry-point group; the core
names none of them.  The ones the salesmgr distribution itself declares (its ``pyproject.toml``)
are its built-ins; ``SALESMGR_DISABLE_PLUGINS=1`` loads only those, which helps tell a broken
third-party plugin from a bug here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import pluggy
from pluggy import HookImpl

from salesmgr.errors import PluginError
from salesmgr.plugin import hookspecs
from salesmgr.plugin.discovery import Entry, entries
from salesmgr.plugin.interfaces import (  # the interfaces are re-exported: plugins import them here
    AnyTransport,
    Codec,
    MailboxTransport,
    MergePolicy,
    Store,
    Transport,
)

__all__ = [
    "AnyTransport", "Codec", "MailboxTransport", "MergePolicy", "PluginManager", "Registry",
    "Store", "Transport", "get_registry", "make_plugin_manager", "use_registry",
]

DISABLE_ENV = "SALESMGR_DISABLE_PLUGINS"
DISTRIBUTION = "salesmgr"  # entry points of this distribution are the built-in plugins


@dataclass
class PluginInfo:
    name: str
    version: str
    provides: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        provides: dict[str, list[str]] = {}
        for what, name in self.provides:
            provides.setdefault(what, []).append(name)
        return {"name": self.name, "version": self.version, "provides": provides}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering each entry-point plugin's distribution version."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.versions: dict[str, str] = {}


def is_builtin(entry: Entry) -> bool:
    return entry.distribution == DISTRIBUTION


def plugin_entry_points(*, third_party: bool) -> list[Entry]:
    """The ``salesmgr`` entry points: the built-ins first, then, if asked, everyone else's."""
    found = entries(hookspecs.PROJECT)
    ours = [entry for entry in found if is_builtin(entry)]
    if not ours:
        raise PluginError("salesmgr's own plugins are not installed (pip install salesmgr)")
    theirs = [entry for entry in found if not is_builtin(entry)] if third_party else []
    return sorted(ours, key=lambda entry: entry.name) + theirs


def make_plugin_manager(
    *, entry_points: bool | None = None, extra: Iterable[object] = ()
) -> PluginManager:
    """A plugin manager with the built-in plugins, third-party ones unless ``entry_points`` is
    False (or ``SALESMGR_DISABLE_PLUGINS`` is set), and ``extra`` plugin objects (tests)."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    if entry_points is None:
        entry_points = not os.environ.get(DISABLE_ENV)
    for ep in plugin_entry_points(third_party=entry_points):
        # pluggy names an entry-point plugin by the entry point; a built-in by its module.
        name = ep.value if is_builtin(ep) else ep.name
        if pm.has_plugin(name):
            continue
        try:
            plugin = ep.load()
        except Exception as problem:  # a broken third-party plugin must not look like our bug
            raise PluginError(f"cannot load a salesmgr plugin ({ep.name}): {problem}") from problem
        try:
            pm.register(plugin, name=name)
        except ValueError as problem:
            raise PluginError(f"cannot register the salesmgr plugin {name!r}: {problem}") from None
        pm.versions[name] = ep.version
    try:
        for plugin in extra:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as problem:
        raise PluginError(str(problem)) from None
    return pm


class Implementations:
    """The implementations of one hook, to tell which of them is running.

    pluggy calls a hook's implementations one after the other in this thread, so the one running
    is the innermost implementation function on the call stack (a wrapper's generator is
    suspended, hence off the stack, while the implementations it wraps run).  That lets a
    ``register`` callback credit what it receives to a plugin without calling implementations
    one by one, which would skip wrappers."""

    def __init__(self, caller: pluggy.HookCaller) -> None:
        self.by_code: dict[CodeType, list[HookImpl]] = {}
        for impl in caller.get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if code is not None:
                self.by_code.setdefault(code, []).append(impl)

    def current(self) -> str:
        """The name of the plugin whose implementation called the caller of this method."""
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            impls = self.by_code.get(frame.f_code)
            if impls:
                if len(impls) == 1:
                    return impls[0].plugin_name
                # One class's method registered as several plugins: the instance tells.
                owner = frame.f_locals.get("self")
                for impl in impls:
                    if impl.plugin is owner:
                        return impl.plugin_name
            frame = frame.f_back
        raise PluginError("register() was called outside a salesmgr_register_* hook")


class Registry:
    """What every registered plugin provides, looked up by name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        from salesmgr import __version__
        from salesmgr.exchange.profiles import ImportProfile
        from salesmgr.model.fields import RecordType

        self.pm = pm
        self.hook = hookspecs.Hooks(pm.hook)
        self.record_types: dict[str, RecordType] = {}
        self.codecs: list[Codec] = []
        self.transports: dict[str, AnyTransport] = {}
        self.policies: dict[str, MergePolicy] = {}
        self.import_profiles: dict[str, ImportProfile] = {}
        self.stores: dict[str, Store] = {}
        versions = pm.versions if isinstance(pm, PluginManager) else {}
        self.plugins: dict[str, PluginInfo] = {
            name: PluginInfo(name, versions.get(name, __version__))
            for name, _ in pm.list_name_plugin()
            if name
        }

        def collect(hookname: str, add: Any, what: str, key: Any) -> None:
            # One call through pluggy, so wrappers run like around any hook; ``register`` credits
            # each thing to the plugin whose implementation is calling it.
            caller = getattr(pm.hook, hookname)
            calling = Implementations(caller)

            def register(*args: Any) -> None:
                add(*args)
                self.plugins[calling.current()].provides.append((what, key(*args)))

            caller(register=register)

        def add_type(rtype: RecordType) -> None:
            if rtype.name in self.record_types:
                raise PluginError(f"record type {rtype.name!r} is registered twice")
            self.record_types[rtype.name] = rtype

        def add_field(type_name: str, new: Any) -> None:
            if type_name not in self.record_types:
                raise PluginError(f"cannot add field {new.name!r}: no record type {type_name!r}")
            try:
                self.record_types[type_name].add_field(new)
            except ValueError as problem:
                raise PluginError(str(problem)) from None

        def add_codec(codec: Codec) -> None:
            if any(c.name == codec.name for c in self.codecs):
                raise PluginError(f"codec {codec.name!r} is registered twice")
            self.codecs.append(codec)

        def add_transport(transport: AnyTransport) -> None:
            if transport.scheme in self.transports:
                raise PluginError(f"transport scheme {transport.scheme!r} is registered twice")
            self.transports[transport.scheme] = transport

        def add_store(store: Store) -> None:
            if not store.schemes:
                raise PluginError(f"store {type(store).__name__} names no URL scheme")
            for scheme in store.schemes:
                if scheme in self.stores:
                    raise PluginError(f"store scheme {scheme!r} is registered twice")
                self.stores[scheme] = store

        def add_policy(policy: MergePolicy) -> None:
            if policy.name in self.policies:
                raise PluginError(f"merge policy {policy.name!r} is registered twice")
            self.policies[policy.name] = policy

        def add_import_profile(profile: ImportProfile) -> None:
            if profile.name.casefold() in self.import_profiles:
                raise PluginError(f"import profile {profile.name!r} is registered twice")
            self.import_profiles[profile.name.casefold()] = profile

        collect("salesmgr_register_record_types", add_type, "record_type", lambda t: t.name)
        collect("salesmgr_register_fields", add_field, "field", lambda t, f: f"{t}.{f.name}")
        collect("salesmgr_register_codecs", add_codec, "codec", lambda c: c.name)
        collect("salesmgr_register_transports", add_transport, "transport", lambda t: t.scheme)
        collect("salesmgr_register_policies", add_policy, "policy", lambda p: p.name)
        collect("salesmgr_register_import_profiles", add_import_profile, "import_profile",
                lambda p: p.name)
        collect("salesmgr_register_stores", add_store, "store", lambda s: "/".join(s.schemes))
        self.codecs.sort(key=lambda c: (c.format, c.version), reverse=True)
        logs = [t.name for t in self.record_types.values() if t.conflict_log]
        if len(logs) > 1:
            raise PluginError(
                f"record types {logs[0]!r} and {logs[1]!r} both keep the conflict log"
            )

    def record_type(self, name: str) -> Any:
        try:
            return self.record_types[name]
        except KeyError:
            raise PluginError(f"no record type {name!r} (is its plugin installed?)") from None

    @property
    def conflict_log(self) -> Any:
        """The record type the merge keeps its conflict log in (the one flagged
        ``conflict_log``); every merge writes there, whatever plugin declared it."""
        for rtype in self.record_types.values():
            if rtype.conflict_log:
                return rtype
        raise PluginError("no record type keeps the conflict log (is its plugin installed?)")

    def writer_codec(self, format: str = "pipeline") -> Codec:
        for codec in self.codecs:
            if codec.format == format:
                return codec
        raise PluginError(f"no codec writes the {format!r} format")

    def policy(self, name: str) -> MergePolicy:
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies))
            raise PluginError(f"no merge policy {name!r} (known: {known})") from None

    def transport(self, scheme: str) -> AnyTransport:
        try:
            return self.transports[scheme]
        except KeyError:
            known = ", ".join(f"{s}://" for s in sorted(self.transports)) or "none"
            raise PluginError(f"no transport for {scheme}:// (known: {known})") from None

    def store(self, scheme: str) -> Store:
        try:
            return self.stores[scheme]
        except KeyError:
            known = ", ".join(f"{s}://" for s in sorted(self.stores)) or "none"
            raise PluginError(f"no store for {scheme}:// addresses (known: {known})") from None


_current: Registry | None = None


def get_registry() -> Registry:
    """The registry of this process, built on first use."""
    global _current
    if _current is None:
        _current = Registry(make_plugin_manager())
    return _current


def use_registry(registry: Registry | None) -> Registry | None:
    """Replace the process registry (tests); returns the previous one."""
    global _current
    previous, _current = _current, registry
    return previous

