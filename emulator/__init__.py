BUILTIN_PLUGINS: tuple[str, ...] = ()
