"""The plugin layer: the hooks (`hookspecs`), the interfaces plugins implement (`interfaces`) and
the manager that loads plugins and collects what they register (`manager`)."""
