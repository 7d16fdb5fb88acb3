"""The ``salesmgr`` command line.  `group` is the top-level click group and its error reporting;
every other module here is an ordinary plugin adding commands through
``salesmgr_register_commands``, exactly as a third party's would."""
