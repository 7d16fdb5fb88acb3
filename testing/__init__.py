"""Tools for testing salesmgr and what plugs into it: fault injection (`faults`), in-memory links
(`links`), and the pytest plugin for integrators (`pytest_plugin`)."""
