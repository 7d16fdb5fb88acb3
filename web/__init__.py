"""``salesmgr web``: the desktop Sales Manager in a browser.

A Starlette application rendered on the server with Jinja2, on one pipeline file; every change
goes through the same core functions as the command line (validation, the file lock, the atomic
save).  Only the ``web`` command imports this package (see `salesmgr.web.plugin`).
"""
