"""p2ptransfer: signed, end-to-end encrypted transfer instructions between two peers."""

from __future__ import annotations

__version__ = "0.1.0"
