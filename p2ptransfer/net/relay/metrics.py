"""Counters and gauges of the relay, rendered in the Prometheus text format (0.0.4)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

__all__ = ["Metrics"]


class Metrics:
    """The relay's numbers; counters only ever grow, gauges are read when rendered."""

    def __init__(self) -> None:
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.frames_refused: Counter[str] = Counter()
        self.connections_refused: Counter[str] = Counter()
        self.connections_closed: Counter[str] = Counter()
        self.rate_limited = 0
        self.auth_failures = 0
        self.connections_total = 0
        self.mail_deposits = 0
        self.mail_pushed = 0
        self.mail_acks = 0
        self.prekey_publishes = 0
        self.prekey_fetches = 0
        self.gauges: dict[str, tuple[str, Callable[[], int]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], int]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], int]) -> None:
        self.gauges[name] = (help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], int]) -> None:
        """A counter kept elsewhere (e.g. by a store), read when rendered."""
        self.counters[name] = (help_text, read)

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value}" for labels, value in samples)

        for name, (help_text, read) in self.gauges.items():
            metric(name, "gauge", help_text, [("", read())])
        metric(
            "p2pt_relay_connections_accepted_total",
            "counter",
            "WebSocket connections accepted.",
            [("", self.connections_total)],
        )
        metric(
            "p2pt_relay_frames_forwarded_total",
            "counter",
            "Deliver frames handed to recipients' queues (one per recipient connection).",
            [("", self.frames_forwarded)],
        )
        metric(
            "p2pt_relay_bytes_forwarded_total",
            "counter",
            "Payload bytes in forwarded frames.",
            [("", self.bytes_forwarded)],
        )
        metric(
            "p2pt_relay_frames_refused_total",
            "counter",
            "Frames not carried out, by reason.",
            _labelled(self.frames_refused),
        )
        metric(
            "p2pt_relay_rate_limited_total",
            "counter",
            "Frames throttled (reading paused) or connections refused by a token bucket.",
            [("", self.rate_limited)],
        )
        metric(
            "p2pt_relay_auth_failures_total",
            "counter",
            "Connections closed because authentication failed or timed out.",
            [("", self.auth_failures)],
        )
        metric(
            "p2pt_relay_connections_refused_total",
            "counter",
            "Opening handshakes refused before the upgrade, by reason.",
            _labelled(self.connections_refused),
        )
        metric(
            "p2pt_relay_connections_closed_total",
            "counter",
            "Connections closed by the relay, by reason.",
            _labelled(self.connections_closed),
        )
        metric(
            "p2pt_relay_mail_deposits_total",
            "counter",
            "Deposits stored durably (a replacement counts again).",
            [("", self.mail_deposits)],
        )
        metric(
            "p2pt_relay_mail_pushed_total",
            "counter",
            "Mail frames handed to owners' connections (on connect and on arrival).",
            [("", self.mail_pushed)],
        )
        metric(
            "p2pt_relay_mail_acks_total",
            "counter",
            "Acknowledgements that deleted mail.",
            [("", self.mail_acks)],
        )
        metric(
            "p2pt_relay_prekey_publishes_total",
            "counter",
            "Signed prekeys accepted for publication.",
            [("", self.prekey_publishes)],
        )
        metric(
            "p2pt_relay_prekey_fetches_total",
            "counter",
            "Prekey requests answered.",
            [("", self.prekey_fetches)],
        )
        for name, (help_text, read) in self.counters.items():
            metric(name, "counter", help_text, [("", read())])
        return "\n".join(lines) + "\n"


def _labelled(counter: Counter[str]) -> list[tuple[str, int]]:
    return [(f'{{reason="{reason}"}}', value) for reason, value in sorted(counter.items())]
