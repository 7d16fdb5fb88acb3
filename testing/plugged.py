"""``python -m salesmgr.testing.plugged PLUGIN... -- ARGS`` runs ``salesmgr ARGS`` with plugin
modules registered that the process would not load by itself: a plugin a test registered in its
own registry (not installed), or any plugin while ``SALESMGR_DISABLE_PLUGINS`` is set.  The
pytest plugin starts emulated devices this way when their transport comes from such a plugin.

Each PLUGIN is ``MODULE`` (imported by name) or ``MODULE=PATH`` (a module file, loaded from
PATH under that name).  A module that is already registered (installed, loaded through its
entry point) is not registered twice.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

import pluggy

from salesmgr.errors import PluginError
from salesmgr.plugin.manager import Registry, make_plugin_manager, use_registry


def plugin_module(spec: str) -> ModuleType:
    name, _, path = spec.partition("=")
    if name in sys.modules:
        return sys.modules[name]
    if not path:
        return importlib.import_module(name)
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise PluginError(f"cannot load the plugin {name} from {path}")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    found.loader.exec_module(module)
    return module


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: python -m salesmgr.testing.plugged PLUGIN... -- ARGS")
    split = argv.index("--")
    try:
        pm = make_plugin_manager()
        for spec in argv[:split]:
            module = plugin_module(spec)
            if not pm.is_registered(module):
                pm.register(module, name=spec.partition("=")[0])
        pm.check_pending()
        use_registry(Registry(pm))
    except (PluginError, pluggy.PluginValidationError, ImportError, OSError) as problem:
        sys.exit(f"salesmgr: cannot load a plugin: {problem}")
    from salesmgr.cli.group import cli

    cli.main(args=argv[split + 1 :], prog_name="salesmgr")


if __name__ == "__main__":
    main(sys.argv[1:])
