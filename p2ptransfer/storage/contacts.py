"""Contacts, handle pins and per-contact limits: local trust decisions, not money.

Ordinary mutable tables outside the journal. A contact's address *is* its
key, so saving a contact pins the key; a handle resolved through a relay's
directory is pinned on first use, and a changed key is refused loudly
(like SSH's changed host key), never re-pinned silently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ..errors import AlreadyExists, InputError, NotFound, PinMismatch, StorageError
from ..protocol.amounts import check_currency
from ..protocol.transfer import check_timestamp
from .records import (
    Contact,
    HandlePin,
    canonical_address,
    check_contact_name,
    check_note,
    describe_key,
)
from .store import Store

__all__ = ["ContactBook"]

_CONTACT_QUERIES = {
    "name": "SELECT name, address, public_key, added_at, verified_at, note FROM contacts "
    "WHERE name = ?",
    "address": "SELECT name, address, public_key, added_at, verified_at, note FROM contacts "
    "WHERE address = ?",
}


class ContactBook(Store):
    """The ledger's contacts, pins and limits (a part of :class:`~.ledger.Ledger`)."""

    def add_contact(
        self, name: str, address: str, at: int, note: str = "", *, handle: str | None = None
    ) -> Contact:
        """Save ``name`` for ``address`` and pin its key.

        One name per address and one address per name: AlreadyExists if the
        name is taken or the address is already saved under another name (so
        "who is this key?" always has one answer). To change a contact's key,
        remove it first — deliberately a separate step. With ``handle`` (the
        address came from the relay directory) the handle is pinned in the
        same transaction: both are written, or neither.
        """
        check_contact_name(name)
        canonical, public_key = canonical_address(address)
        check_timestamp(at, "added_at")
        check_note(note)
        if handle is not None:
            check_contact_name(handle, "handle")
        with self._transaction() as conn:
            if handle is not None:
                self._pin_handle(conn, handle, canonical, public_key, at)
            existing = self._contact_row(conn, "name", name)
            if existing is not None:
                if existing.address == canonical:
                    raise AlreadyExists(f"contact {name!r} already exists with this address")
                raise AlreadyExists(
                    f"contact {name!r} already exists and is pinned to "
                    f"{describe_key(existing.address)}; remove it first if their key "
                    "really changed"
                )
            other = self._contact_row(conn, "address", canonical)
            if other is not None:
                raise AlreadyExists(f"this address is already saved as contact {other.name!r}")
            conn.execute(
                "INSERT INTO contacts (name, address, public_key, added_at, verified_at, note) "
                "VALUES (?, ?, ?, ?, NULL, ?)",
                (name, canonical, public_key, at, note),
            )
        return Contact(name, canonical, public_key, at, None, note)

    def set_limit(self, name: str, currency: str, max_minor: int | None) -> None:
        """Accept at most ``max_minor`` of ``currency`` per transfer from contact ``name``.

        ``None`` removes the limit. NotFound for an unknown contact.
        """
        code = check_currency(currency)
        if max_minor is not None and (type(max_minor) is not int or max_minor <= 0):
            raise InputError("a limit is a positive amount")
        with self._transaction() as conn:
            if self._contact_row(conn, "name", name) is None:
                raise NotFound(self._no_contact(name))
            if max_minor is None:
                conn.execute(
                    "DELETE FROM contact_limits WHERE name = ? AND currency = ?", (name, code)
                )
            else:
                conn.execute(
                    "INSERT INTO contact_limits (name, currency, max_minor) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, currency) DO UPDATE SET max_minor = excluded.max_minor",
                    (name, code, max_minor),
                )

    def acceptance(self) -> tuple[bool, frozenset[str] | None]:
        """The stored policy: (accept transfers from strangers?, only these currencies or None)."""
        row = self._conn.execute(
            "SELECT accept_unknown, currencies FROM acceptance WHERE one = 1"
        ).fetchone()
        if row is None:
            return False, None
        accept_unknown, currencies = row
        if accept_unknown not in (0, 1) or not (currencies is None or isinstance(currencies, str)):
            raise StorageError("the stored acceptance policy is damaged; set it again")
        try:
            codes = (
                None
                if currencies is None
                else frozenset(check_currency(code) for code in currencies.split(","))
            )
        except InputError as exc:
            raise StorageError(f"the stored acceptance policy is damaged: {exc}") from exc
        return bool(accept_unknown), codes

    def set_acceptance(self, accept_unknown: bool, currencies: Iterable[str] | None) -> None:
        """Store the policy receiving commands use unless their flags say otherwise."""
        codes = None if currencies is None else sorted({check_currency(c) for c in currencies})
        if codes is not None and not codes:
            raise InputError("accepting no currency at all would refuse every transfer")
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO acceptance (one, accept_unknown, currencies) VALUES (1, ?, ?) "
                "ON CONFLICT (one) DO UPDATE SET accept_unknown = excluded.accept_unknown, "
                "currencies = excluded.currencies",
                (int(bool(accept_unknown)), None if codes is None else ",".join(codes)),
            )

    def limits(self) -> dict[tuple[str, str], int]:
        """Every per-contact limit: (address, currency) -> max minor units per transfer."""
        rows = self._conn.execute(
            "SELECT c.address, l.currency, l.max_minor "
            "FROM contact_limits l JOIN contacts c ON c.name = l.name"
        ).fetchall()
        return {(address, currency): max_minor for address, currency, max_minor in rows}

    def remove_contact(self, name: str) -> None:
        """Forget a contact and its pin (its transfers stay in the ledger)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM contacts WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(self._no_contact(name))

    def mark_verified(self, name: str, at: int) -> Contact:
        """Record that the user compared safety numbers with ``name`` at ``at``."""
        check_timestamp(at, "verified_at")
        with self._transaction() as conn:
            if (
                conn.execute(
                    "UPDATE contacts SET verified_at = ? WHERE name = ?", (at, name)
                ).rowcount
                == 0
            ):
                raise NotFound(self._no_contact(name))
        return self.get_contact(name)

    def get_contact(self, name: str) -> Contact:
        contact = self._contact_row(self._conn, "name", name)
        if contact is None:
            raise NotFound(self._no_contact(name))
        return contact

    def contacts(self) -> list[Contact]:
        rows = self._conn.execute(
            "SELECT name, address, public_key, added_at, verified_at, note FROM contacts "
            "ORDER BY name"
        ).fetchall()
        return [Contact(*row) for row in rows]

    def contact_for_address(self, address: str) -> Contact | None:
        """The contact whose pinned key is the one in ``address``, if any."""
        canonical, _ = canonical_address(address)
        return self._contact_row(self._conn, "address", canonical)

    def _no_contact(self, name: str) -> str:
        """The not-found sentence, naming the contact probably meant (case first, then spelling)."""
        import difflib

        names = [row[0] for row in self._conn.execute("SELECT name FROM contacts ORDER BY name")]
        meant = [other for other in names if other.casefold() == name.casefold()]
        meant = meant or difflib.get_close_matches(name, names, n=3)
        if meant:
            quoted = [repr(other) for other in meant]
            listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
            return f"no contact named {name!r}; did you mean {listed}?"
        return f"no contact named {name!r}; 'p2ptransfer contacts list' shows your contacts"

    @staticmethod
    def _contact_row(conn: sqlite3.Connection, column: str, value: str) -> Contact | None:
        row = conn.execute(_CONTACT_QUERIES[column], (value,)).fetchone()
        return None if row is None else Contact(*row)

    def pin_handle(self, handle: str, address: str, at: int) -> HandlePin:
        """Pin a relay-directory handle to the key it resolved to, on first use.

        The same key again returns the pin; a different key raises
        PinMismatch (the relay, or whoever answers for it, is not trusted to
        change who a handle is). Handles are compared exactly as given.
        """
        check_contact_name(handle, "handle")
        canonical, public_key = canonical_address(address)
        check_timestamp(at, "pinned_at")
        with self._transaction() as conn:
            return self._pin_handle(conn, handle, canonical, public_key, at)

    @staticmethod
    def _pin_handle(
        conn: sqlite3.Connection, handle: str, canonical: str, public_key: bytes, at: int
    ) -> HandlePin:
        row = conn.execute(
            "SELECT handle, address, public_key, pinned_at FROM handle_pins WHERE handle = ?",
            (handle,),
        ).fetchone()
        if row is not None:
            pin = HandlePin(*row)
            if pin.public_key != public_key:
                raise PinMismatch(
                    f"IDENTITY CHANGED: handle {handle!r} was pinned to "
                    f"{describe_key(pin.address)} and the relay now says "
                    f"{describe_key(canonical)}; refusing. Someone may be impersonating "
                    f"{handle!r}. If they really changed keys, compare safety numbers with "
                    "them and remove the old pin deliberately."
                )
            return pin
        conn.execute(
            "INSERT INTO handle_pins (handle, address, public_key, pinned_at) VALUES (?, ?, ?, ?)",
            (handle, canonical, public_key, at),
        )
        return HandlePin(handle, canonical, public_key, at)

    def unpin_handle(self, handle: str) -> None:
        """Forget a handle's pin (the explicit step after a verified key change)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM handle_pins WHERE handle = ?", (handle,)).rowcount == 0:
                raise NotFound(f"handle {handle!r} is not pinned")

    def handle_pin(self, handle: str) -> HandlePin | None:
        row = self._conn.execute(
            "SELECT handle, address, public_key, pinned_at FROM handle_pins WHERE handle = ?",
            (handle,),
        ).fetchone()
        return None if row is None else HandlePin(*row)

    def check_pin(self, address: str, name: str | None = None) -> Contact | None:
        """Check a presented key against the pins; return its contact (None if unknown).

        With ``name`` (the contact name or handle the user meant): if that
        name is pinned to a different key, PinMismatch — loudly, like SSH's
        changed host key. Without it, an unknown address is simply not a
        contact (None); the acceptance policy decides what that means.
        """
        canonical, public_key = canonical_address(address)
        if name is not None:
            contact = self._contact_row(self._conn, "name", name)
            pinned = contact.address if contact is not None else None
            what = "contact"
            if contact is None:
                pin = self.handle_pin(name)
                pinned = pin.address if pin is not None else None
                what = "handle"
            if pinned is not None and pinned != canonical:
                raise PinMismatch(
                    f"IDENTITY CHANGED: {what} {name!r} is pinned to {describe_key(pinned)} "
                    f"but the peer presented {describe_key(canonical)}; refusing. Someone may "
                    f"be impersonating {name!r}. If they really changed keys, compare safety "
                    "numbers with them and re-add the contact deliberately."
                )
        del public_key
        return self._contact_row(self._conn, "address", canonical)
