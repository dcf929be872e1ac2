"""The ``p2ptransfer`` command line: click commands over the library, rich output.

Layout (magic-wormhole style: the CLI is apart from the library):

* :mod:`.main`     the root group, its global options and the ONE dispatch point
                   that turns library errors into a sentence and an exit code;
* :mod:`.app`      the per-invocation state commands share (home, relay URL,
                   output consoles, passphrase sources, ledger, async runner);
* :mod:`.render`   tables, JSON and CSV, and the ``--json``/``--csv`` decorator;
* :mod:`.commands` one module per family of commands, each command a dozen
                   lines: parse, call the library, render.

Nothing outside this package imports it.
"""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
