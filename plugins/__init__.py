"""The plugins that ship with salesmgr: codecs, merge policies and transports.

Each module here is an ordinary pluggy plugin; the core registers them before third-party plugins.
"""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "salesmgr.plugins.pipeline_codec",
    "salesmgr.plugins.policies",
    "salesmgr.plugins.transport_tcp",
    "salesmgr.plugins.transport_serial",
    "salesmgr.plugins.transport_folder",
)
