"""What a receiver answers to an incoming transfer: one pure decision, written once.

The runtime asks this module *what* to do with each arriving transfer and
does it (sign, store, send); the ledger repeats the id check inside its
write transaction only as a guard against a racing writer. The rules::

    not for us (wrong recipient, ...)        -> REFUSE     a signed rejection, not stored
    same id already recorded, same content   -> REPEAT     the stored receipt again
    same id already recorded, other content  -> CONFLICT   a signed rejection, not stored
    sender not a contact (no accept_unknown) -> QUARANTINE a signed unknown_sender
                                                           rejection, not journaled
    pays a request we lack, or not as asked   -> RECORD     rejected request_mismatch /
                                                           _paid / _expired / _cancelled
    otherwise                                -> RECORD     accepted, or rejected by the
                                                           policy (currency, limit)

Strangers are kept out of the journal because it is append-only: whatever
is recorded there stays for good, so anyone able to mint keys could grow it
without bound.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .receipt import RejectReason, SignedReceipt
from .request import PaymentRequest, RequestState, check_payment
from .transfer import Comparison, SignedTransfer, Transfer, compare

__all__ = ["AcceptancePolicy", "Action", "Verdict", "decide"]


@dataclass(frozen=True)
class AcceptancePolicy:
    """What this peer agrees to receive."""

    accept_unknown: bool = False
    currencies: frozenset[str] | None = None  # None: any supported currency
    limits: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(sender address, currency) -> the most one transfer may carry, in minor units."""

    def judge(self, transfer: Transfer, known_sender: bool) -> RejectReason | None:
        """None to accept, else why not."""
        if not known_sender and not self.accept_unknown:
            return RejectReason.UNKNOWN_SENDER
        if self.currencies is not None and transfer.currency not in self.currencies:
            return RejectReason.CURRENCY_NOT_ACCEPTED
        limit = self.limits.get((transfer.sender, transfer.currency))
        if limit is not None and transfer.amount > limit:
            return RejectReason.OVER_LIMIT
        return None


class Action(enum.Enum):
    """What the receiver does with one arriving transfer."""

    RECORD = "record"  # sign the receipt, journal transfer + receipt, then answer
    QUARANTINE = "quarantine"  # sign an unknown_sender rejection, keep it aside, answer
    REFUSE = "refuse"  # answer with a signed rejection for a transfer not meant for us
    REPEAT = "repeat"  # answer with the stored receipt; nothing is written
    CONFLICT = "conflict"  # answer with a signed CONFLICT rejection; nothing is written


@dataclass(frozen=True)
class Verdict:
    """The decision for one transfer: the action, and the reason for a rejection."""

    action: Action
    reason: RejectReason | None = None
    stored: SignedReceipt | None = None  # REPEAT: the receipt to send again

    @property
    def accepted(self) -> bool:
        return self.action is Action.RECORD and self.reason is None


def decide(
    signed: SignedTransfer,
    *,
    problem: RejectReason | None,
    stored: tuple[SignedTransfer, SignedReceipt] | None,
    known_sender: bool,
    policy: AcceptancePolicy,
    request: tuple[PaymentRequest, RequestState] | None = None,
    now_ms: int = 0,
) -> Verdict:
    """The verdict for ``signed``; see the module docstring for the rules.

    ``problem`` is what the session already found wrong with the transfer
    (e.g. it names another recipient); ``stored`` is what the ledger holds
    under its id, if anything. A transfer that pays a request is first held
    to it (:func:`.request.check_payment`, with the request as the ledger
    holds it and the payee's clock ``now_ms``): one naming a request we do
    not have is REQUEST_MISMATCH; the ledger checks again when it commits.
    """
    if problem is not None:
        return Verdict(Action.REFUSE, problem)
    if stored is not None:
        stored_transfer, stored_receipt = stored
        if compare(stored_transfer.transfer, signed.transfer) is Comparison.SAME:
            return Verdict(Action.REPEAT, stored=stored_receipt)
        return Verdict(Action.CONFLICT, RejectReason.CONFLICT)
    if signed.transfer.request_id is not None and (known_sender or policy.accept_unknown):
        if request is None:
            return Verdict(Action.RECORD, RejectReason.REQUEST_MISMATCH)
        paying = check_payment(request[0], request[1], signed.transfer, now_ms)
        if paying is not None:
            return Verdict(Action.RECORD, paying)
    reason = policy.judge(signed.transfer, known_sender)
    if reason is RejectReason.UNKNOWN_SENDER:
        return Verdict(Action.QUARANTINE, reason)
    return Verdict(Action.RECORD, reason)
