"""The one exception tree of p2ptransfer.

Every error the package raises on purpose is a :class:`P2PTransferError`, so a
caller (the CLI dispatch point, a test, a program embedding the library) can
catch the whole family in one place and map it to a message and an exit code.
Each class carries its own ``exit_code``; the CLI returns it unchanged, so
scripts can tell *why* a command failed without parsing text.

The tree::

    P2PTransferError                      exit 1
    ├── InputError                        exit 3   the user gave us something invalid
    │   ├── AddressError                           malformed / mistyped address
    │   ├── AmountError                            amount text not valid for the currency
    │   ├── CurrencyError                          unknown ISO 4217 code
    │   └── MemoError                              memo too long or with control characters
    ├── KeyFileError                      exit 4   the identity key file cannot be used
    │   ├── WrongPassphrase                        the file is intact, the passphrase is not
    │   ├── CorruptKeyFile                         the file is damaged or not a key file
    │   ├── InsecureKeyFile                        permissions let others read it
    │   └── PassphraseUnavailable                  no passphrase source available
    ├── ProtocolError                     exit 5   the remote side broke the protocol
    │   ├── DecodeError                            bytes that are not a valid message
    │   ├── HandshakeError                         the handshake failed; no keys were made
    │   ├── ChannelError                           a record failed: session over for good
    │   │   └── RecordLimitReached                 the per-key record cap was hit
    │   ├── SignatureError                         a signature did not verify
    │   └── PrekeyError                            a peer's prekey cannot be sealed to
    ├── IdentityError                     exit 6   the peer is not who we expected
    │   ├── IdentityMismatch                       key differs from the address dialled
    │   └── PinMismatch                            key differs from the pinned key (changed!)
    ├── TransferRefused                   exit 7   the receiver rejected the transfer
    ├── TransferConflict                  exit 8   same transfer id, different content
    ├── StorageError                      exit 9   the local ledger / home cannot be used
    │   ├── LedgerIntegrityError                   hash chain or signature check failed
    │   ├── LedgerOwnerMismatch                    the ledger belongs to another identity
    │   ├── NotFound                               unknown contact / transfer
    │   └── AlreadyExists                          refusing to overwrite
    ├── NetworkError                      exit 10  the relay or the peer cannot be reached
    │   ├── RelayUnreachable                       cannot connect / authenticate to the relay
    │   ├── RelayRefused                           the relay refused a request (handle taken …)
    │   ├── PeerOffline                            recipient not online before the timeout
    │   ├── SessionTimeout                         a session step took too long
    │   └── MailUnavailable                        the recipient cannot be mailed (no prekey)
    └── LimitError                        exit 11  a configured limit was exceeded

Exceptions never carry secrets (keys, passphrases, plaintext records) in their
message or attributes: they end up in logs and terminals.
"""

from __future__ import annotations

__all__ = [
    "AddressError",
    "AlreadyExists",
    "AmountError",
    "ChannelError",
    "CorruptKeyFile",
    "CurrencyError",
    "DecodeError",
    "HandshakeError",
    "IdentityError",
    "IdentityMismatch",
    "InputError",
    "InsecureKeyFile",
    "KeyFileError",
    "LedgerIntegrityError",
    "LedgerOwnerMismatch",
    "LimitError",
    "MailUnavailable",
    "MemoError",
    "NetworkError",
    "NotFound",
    "P2PTransferError",
    "PassphraseUnavailable",
    "PeerOffline",
    "PinMismatch",
    "PrekeyError",
    "ProtocolError",
    "RecordLimitReached",
    "RelayRefused",
    "RelayUnreachable",
    "SessionTimeout",
    "SignatureError",
    "StorageError",
    "TransferConflict",
    "TransferRefused",
    "WrongPassphrase",
]


class P2PTransferError(Exception):
    """Root of every error p2ptransfer raises on purpose."""

    exit_code: int = 1


class InputError(P2PTransferError, ValueError):
    """Raised when a value supplied by the user (or a peer) fails validation."""

    exit_code = 3


class AddressError(InputError):
    """Raised when text is not a valid p2ptransfer address (typo, wrong checksum, version)."""


class AmountError(InputError):
    """Raised when amount text is not a positive decimal valid for its currency."""


class CurrencyError(InputError):
    """Raised when a currency code is not in the supported ISO 4217 table."""


class MemoError(InputError):
    """Raised when a memo is too long or contains control characters."""


class KeyFileError(P2PTransferError):
    """Raised when the identity key file cannot be used."""

    exit_code = 4


class WrongPassphrase(KeyFileError):
    """Raised when the key file is intact but the passphrase does not open it."""


class CorruptKeyFile(KeyFileError):
    """Raised when the key file is damaged, truncated or not a key file at all."""


class InsecureKeyFile(KeyFileError):
    """Raised when the key file (or home) is readable or writable by other users."""


class PassphraseUnavailable(KeyFileError):
    """Raised when no passphrase source (env, file, terminal) is available."""


class ProtocolError(P2PTransferError):
    """Raised when the remote side sent something the protocol does not allow.

    After a ProtocolError the session that raised it is finished: the state
    machines fail closed and refuse further input.
    """

    exit_code = 5


class DecodeError(ProtocolError, ValueError):
    """Raised when bytes are not a valid encoding of the expected message."""


class HandshakeError(ProtocolError):
    """Raised when a handshake cannot complete; no session keys exist afterwards."""


class ChannelError(ProtocolError):
    """Raised when a record is forged, replayed, reordered or missing; the channel is closed."""


class RecordLimitReached(ChannelError):
    """Raised when a direction's record counter reached the per-key cap."""


class SignatureError(ProtocolError):
    """Raised when an Ed25519 signature does not verify."""


class PrekeyError(ProtocolError):
    """Raised when a signed prekey must not be used to seal mail to an address.

    ``reason`` is one of ``"wrong-owner"`` (signed by another key than the
    address's, like a changed pin), ``"bad-signature"``, ``"expired"``,
    ``"not-yet-valid"``, ``"window-too-long"`` or ``"none"`` (no prekey at all);
    the message says it in words.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class IdentityError(P2PTransferError):
    """Raised when the peer proved an identity other than the one expected."""

    exit_code = 6


class IdentityMismatch(IdentityError, HandshakeError):
    """Raised when the responder's key is not the key of the address dialled."""

    exit_code = 6


class PinMismatch(IdentityError):
    """Raised when a contact presents a key different from the one pinned for it."""


class TransferRefused(P2PTransferError):
    """Raised when the receiver answered a transfer with a signed rejection."""

    exit_code = 7

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or f"the recipient rejected the transfer: {reason}")


class TransferConflict(P2PTransferError):
    """Raised when a transfer id is reused with different content."""

    exit_code = 8


class StorageError(P2PTransferError):
    """Raised when the home directory or the ledger cannot be used."""

    exit_code = 9


class LedgerIntegrityError(StorageError):
    """Raised when the ledger's hash chain or a stored signature does not verify.

    ``row`` names the first bad row (its sequence number), or None when the
    problem is not tied to a row.
    """

    def __init__(self, message: str, row: int | None = None) -> None:
        self.row = row
        super().__init__(message)


class LedgerOwnerMismatch(StorageError):
    """Raised when a ledger names another owner than the identity it is opened with.

    The key file or the ledger file was swapped (or copied between homes);
    using them together would let one identity's history pass as another's.
    """


class NotFound(StorageError):
    """Raised when a named contact or transfer does not exist."""


class AlreadyExists(StorageError):
    """Raised when creating something that exists and must not be overwritten."""


class NetworkError(P2PTransferError):
    """Raised when the relay or the peer cannot be reached in time."""

    exit_code = 10


class RelayUnreachable(NetworkError):
    """Raised when connecting or authenticating to the relay fails."""


class RelayRefused(NetworkError):
    """Raised when the relay answers a request with a refusal.

    ``reason`` is the relay's machine-readable code when it gave one
    (``mailbox-full``, ``no-prekey``, ``rate-limited``...), else None.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(message)


def _stay_pending(pending: tuple[bytes, ...]) -> str:
    """The one wording of what a failed delivery leaves behind, appended to its message."""
    if not pending:
        return ""
    if len(pending) == 1:
        what = f"transfer {pending[0].hex()} stays pending"
    else:
        what = f"{len(pending)} transfers stay pending"
    return f"; {what}: run 'p2ptransfer resend' later"


class PeerOffline(NetworkError):
    """Raised when the recipient did not come online before the timeout.

    ``pending`` holds the ids of the transfers that stay pending because of
    it (``p2ptransfer resend`` retries them with the same ids); the message
    names them.
    """

    def __init__(self, message: str, pending: tuple[bytes, ...] = ()) -> None:
        self.pending = tuple(pending)
        super().__init__(message + _stay_pending(self.pending))


class SessionTimeout(NetworkError):
    """Raised when a session step did not complete within its time limit.

    ``pending`` holds the ids of the transfers that stay pending because of
    it, as for :class:`PeerOffline`.
    """

    def __init__(self, message: str, pending: tuple[bytes, ...] = ()) -> None:
        self.pending = tuple(pending)
        super().__init__(message + _stay_pending(self.pending))


class MailUnavailable(NetworkError):
    """Raised when a transfer cannot be left in the recipient's mailbox.

    The recipient has no valid prekey at the relay (never connected with a
    version that publishes one, or all expired): nothing can be sealed to
    them. The transfers stay pending, named in ``pending``.
    """

    def __init__(self, message: str, pending: tuple[bytes, ...] = ()) -> None:
        self.pending = tuple(pending)
        super().__init__(message + _stay_pending(self.pending))


class LimitError(P2PTransferError):
    """Raised when a configured limit (size, rate, count) is exceeded."""

    exit_code = 11
