"""Which transport carries a device URL: the scheme names it, the registry knows it."""

from __future__ import annotations

from urllib.parse import urlsplit

from salesmgr.errors import SyncError
from salesmgr.plugin.interfaces import AnyTransport, MailboxTransport, Transport
from salesmgr.plugin.manager import Registry, get_registry


def scheme_of(url: str, registry: Registry | None = None) -> str:
    """The transport scheme of a device URL: ``tcp://HOST:PORT`` is ``tcp``.  A URL that is only
    a registered scheme's name (``serial-pty``, ``serial-pty?baud=9600``) names that transport."""
    scheme = urlsplit(url).scheme
    if not scheme:
        bare = url.partition("?")[0].lower()
        if bare and bare in (registry or get_registry()).transports:
            return bare
        raise SyncError(f"{url!r} is not a device URL (expected e.g. tcp://HOST:PORT)")
    return scheme.lower()


def transport_for(url: str, registry: Registry | None = None) -> AnyTransport:
    registry = registry or get_registry()
    return registry.transport(scheme_of(url, registry))


def live_transport(url: str, registry: Registry | None = None) -> Transport:
    """The transport of ``url``, which must carry a live link."""
    transport = transport_for(url, registry)
    if isinstance(transport, MailboxTransport):
        raise SyncError(f"{url}: {transport.scheme}:// is store and forward; it has no live link")
    return transport
