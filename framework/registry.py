"""The plugin manager and what the plugins registered: record types, codecs, transports, policies.

Built-in plugins are registered first, exactly as a third-party one would be, then every module
named in the ``salesmgr`` entry-point group (unless ``SALESMGR_DISABLE_PLUGINS`` is set, which helps
tell a broken third-party plugin from a bug here).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pluggy

from salesmgr import hookspecs
from salesmgr.errors import PluginError

if TYPE_CHECKING:
    from salesmgr.merge import Conflict, FieldOutcome
    from salesmgr.model import Pipeline

DISABLE_ENV = "SALESMGR_DISABLE_PLUGINS"
CORE_PLUGINS = ("salesmgr.builtin_records", "salesmgr.merge_rules")
# Packages that ship plugins with salesmgr; each lists its modules in BUILTIN_PLUGINS.
BUILTIN_PACKAGES = ("salesmgr.plugins", "salesmgr.emulator")


class Codec:
    """Reads and writes one pipeline file format (one major version of it)."""

    format: str = "pipeline"
    version: tuple[int, int] = (1, 0)
    help: str = ""

    def sniff(self, head: bytes) -> bool:
        """True when ``head`` (the file's first bytes) starts a file of this format."""
        raise NotImplementedError

    def decode(self, data: bytes, source: str) -> Pipeline:
        """The pipeline in ``data``; raises PipelineFileError naming ``source`` if it is bad."""
        raise NotImplementedError

    def encode(self, pipeline: Pipeline) -> bytes:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return f"{self.format}-v{self.version[0]}"


class Link(Protocol):
    """A duplex, ordered, reliable channel of whole messages between desktop and device."""

    bytes_sent: int
    bytes_received: int

    def send(self, message: bytes) -> None:
        """Send one message; raises SyncError when the link is gone."""

    def receive(self, timeout: float) -> bytes:
        """The next message; raises SyncError on timeout, a closed or a broken link."""

    def close(self) -> None: ...


class Listener(Protocol):
    """The device end waiting for the desktop."""

    url: str  # the real address, e.g. with the port the system picked for port 0

    def accept(self, timeout: float | None = None) -> Link: ...

    def close(self) -> None: ...


class Mail(NamedTuple):
    """One entry of a `Mailbox`, as read."""

    data: bytes  # its bytes, at most the ``limit`` asked for
    size: int  # its whole size (more than ``len(data)`` when cut at the limit)
    age: float  # seconds since it last changed: a young, incomplete entry may still be arriving


class Mailbox(Protocol):
    """A store-and-forward drop box shared by desktop and device (``folder://``).

    The two ends never talk at the same time: each leaves whole entries (drops, see
    `salesmgr.drops`) for the other and picks up what the other left.  Entry names are plain
    names, never paths; a mailbox refuses any other name and never reaches outside itself."""

    url: str  # the real address, e.g. ``folder:///home/ana/Mirror``

    def entries(self) -> dict[str, object]:
        """The entries now in the box, each with a token that changes whenever it does;
        entries still being written under a temporary name are left out."""

    def read(self, name: str, limit: int) -> Mail | None:
        """Entry ``name``, or None if it is gone; raises SyncError for an entry it must not read
        (a link, not a regular file)."""

    def write(self, name: str, data: bytes) -> None:
        """Leave ``data`` as entry ``name``, atomically: whole or not at all."""

    def remove(self, name: str) -> None:
        """Take entry ``name`` away; one already gone is not an error."""

    def home(self, name: str) -> str:
        """Where entry ``name`` lives, as a pipeline file's home (for files dropped by hand)."""

    def close(self) -> None: ...


class Transport:
    """Carries a sync session for one URL scheme (``tcp://``, ``serial://``, ``folder://``).

    A live transport implements `connect` and `listen` (a `Link` at a time).  A store-and-forward
    transport, where desktop and device are never connected at once, sets ``store_and_forward``
    and implements `open_mailbox` instead; the session code then exchanges drops through it
    (`salesmgr.drop_sync`)."""

    scheme: str = ""
    help: str = ""
    store_and_forward: bool = False

    def connect(self, url: str, options: Mapping[str, Any]) -> Link:
        """Desktop side: open the link to the device at ``url``."""
        raise NotImplementedError

    def listen(self, url: str, options: Mapping[str, Any]) -> Listener:
        """Device side: wait for the desktop at ``url`` (the emulator uses this)."""
        raise NotImplementedError

    def open_mailbox(self, url: str, options: Mapping[str, Any]) -> Mailbox:
        """Both sides of a store-and-forward transport: the drop box at ``url``."""
        raise NotImplementedError


class MergePolicy:
    """Decides true conflicts: both sides changed the same thing differently."""

    name: str = ""
    help: str = ""
    # True when the policy decides whole records (newest-record, keep-both), not single fields.
    record_level: bool = False

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        raise NotImplementedError


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


def _builtin_modules() -> list[str]:
    names = list(CORE_PLUGINS)
    for package in BUILTIN_PACKAGES:
        module = importlib.import_module(package)
        names.extend(getattr(module, "BUILTIN_PLUGINS", ()))
    return names


def make_plugin_manager(
    *, entry_points: bool | None = None, extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in _builtin_modules():
        pm.register(importlib.import_module(name), name=name)
    if entry_points is None:
        entry_points = not os.environ.get(DISABLE_ENV)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as problem:  # a broken third-party plugin must not look like our bug
            raise PluginError(f"cannot load a salesmgr plugin: {problem}") from problem
    try:
        for plugin in extra:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as problem:
        raise PluginError(str(problem)) from None
    return pm


class Registry:
    """What every registered plugin provides, looked up by name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        from salesmgr import __version__
        from salesmgr.fields import RecordType

        self.pm = pm
        self.hook = pm.hook
        self.record_types: dict[str, RecordType] = {}
        self.codecs: list[Codec] = []
        self.transports: dict[str, Transport] = {}
        self.policies: dict[str, MergePolicy] = {}
        versions = {
            pm.get_name(plugin) or "": dist.version for plugin, dist in pm.list_plugin_distinfo()
        }
        self.plugins: dict[str, PluginInfo] = {
            name: PluginInfo(name, versions.get(name, __version__))
            for name, _ in pm.list_name_plugin()
            if name
        }

        def collect(hookname: str, add: Any, what: str, key: Any) -> None:
            # Called one implementation at a time so each thing is credited to its plugin.
            for impl in reversed(getattr(pm.hook, hookname).get_hookimpls()):
                def register(*args: Any, _plugin: str = impl.plugin_name) -> None:
                    add(*args)
                    self.plugins[_plugin].provides.append((what, key(*args)))
                impl.function(register=register)

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

        def add_transport(transport: Transport) -> None:
            if transport.scheme in self.transports:
                raise PluginError(f"transport scheme {transport.scheme!r} is registered twice")
            self.transports[transport.scheme] = transport

        def add_policy(policy: MergePolicy) -> None:
            if policy.name in self.policies:
                raise PluginError(f"merge policy {policy.name!r} is registered twice")
            self.policies[policy.name] = policy

        collect("salesmgr_register_record_types", add_type, "record_type", lambda t: t.name)
        collect("salesmgr_register_fields", add_field, "field", lambda t, f: f"{t}.{f.name}")
        collect("salesmgr_register_codecs", add_codec, "codec", lambda c: c.name)
        collect("salesmgr_register_transports", add_transport, "transport", lambda t: t.scheme)
        collect("salesmgr_register_policies", add_policy, "policy", lambda p: p.name)
        self.codecs.sort(key=lambda c: (c.format, c.version), reverse=True)

    def record_type(self, name: str) -> Any:
        try:
            return self.record_types[name]
        except KeyError:
            raise PluginError(f"no record type {name!r} (is its plugin installed?)") from None

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

    def transport(self, scheme: str) -> Transport:
        try:
            return self.transports[scheme]
        except KeyError:
            known = ", ".join(f"{s}://" for s in sorted(self.transports)) or "none"
            raise PluginError(f"no transport for {scheme}:// (known: {known})") from None


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

