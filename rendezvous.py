"""Run the p2ptransfer rendezvous relay: ``python rendezvous.py [--host H] [--port P] [options]``.

Same command as ``p2ptransfer relay``; ``--help`` lists the options, docs/relay.md explains them.
"""

from __future__ import annotations

from p2ptransfer.cli.commands.relay import main

if __name__ == "__main__":
    main()
