"""``python -m p2ptransfer`` is the ``p2ptransfer`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
