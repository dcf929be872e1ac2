"""``init``, ``passwd``, ``whoami``, ``register``, ``unregister``: who this home is, its handles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ...errors import AlreadyExists
from ..app import App, pass_app
from ..options import output_option
from . import check_name

if TYPE_CHECKING:
    from ...protocol.identity import PublicIdentity


def _default_name() -> str:
    import getpass

    try:
        return getpass.getuser() or "me"
    except (KeyError, OSError):
        return "me"


def _show_identity(app: App, name: str, public: PublicIdentity, output: str) -> None:
    from ..render import echo_json

    if output == "json":
        echo_json({"name": name, "address": public.address, "fingerprint": public.fingerprint})
        return
    app.say(f"name         {name}")
    app.say(f"address      {public.address}")
    app.say(f"fingerprint  {public.fingerprint}")


@click.command()
@click.option("--name", help="Your display name, shown to nobody but you [default: login name].")
@output_option("json")
@pass_app
def init(app: App, name: str | None, output: str) -> None:
    """Create your identity (key file, passphrase-protected) and an empty ledger.

    Refuses to touch a home that already holds an identity.
    """
    from ...storage.home import kdf_params_from_env
    from ...storage.ledger import Ledger

    home = app.home
    if home.exists():
        raise AlreadyExists(f"an identity already exists in {home.path}; refusing to overwrite it")
    display = check_name(name if name is not None else _default_name(), "the name")
    params = kdf_params_from_env()  # a bad P2PTRANSFER_KDF_LOG_N fails before any prompt
    passphrase = app.read_new_passphrase()
    with app.waiting("creating and encrypting your key…"):
        identity = home.create_identity(passphrase, display, params)
    Ledger.open(home.ledger_path, owner=identity).close()  # records its owner, signed
    _show_identity(app, display, identity.public, output)
    app.note(f"created a new identity in {home.path}")
    app.note("share your address; the other person runs: p2ptransfer contacts add NAME ADDRESS")


@click.command()
@click.option(
    "--new-passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Read the new passphrase from FILE (for scripts); else it is asked twice.",
)
@pass_app
def passwd(app: App, new_passphrase_file: Path | None) -> None:
    """Change the passphrase of your key file; your identity and address stay the same.

    The current passphrase comes as for every command (P2PTRANSFER_PASSPHRASE,
    --passphrase-file or a prompt); afterwards only the new one opens the key.
    """
    from ...storage.home import kdf_params_from_env

    home = app.require_home()
    params = kdf_params_from_env()  # a bad P2PTRANSFER_KDF_LOG_N fails before any prompt
    old = app.read_passphrase()
    new = app.read_new_passphrase(
        new_file=new_passphrase_file, label="New passphrase", scripted=False
    )
    with app.waiting("re-encrypting your key…"):
        identity = home.change_passphrase(old, new, params)
    app.say(f"changed the passphrase of {home.key_path}")
    app.note(f"your address is unchanged: {identity.public.address}")


@click.command()
@output_option("json")
@pass_app
def whoami(app: App, output: str) -> None:
    """Show your name, address and fingerprint (no passphrase needed)."""
    public = app.public_identity()
    _show_identity(app, app.home.name, public, output)


@click.command()
@click.argument("handle")
@pass_app
def register(app: App, handle: str) -> None:
    """Claim HANDLE at the relay's directory, so others can look your address up.

    First come, first served; the relay binds the handle to your key.
    """
    from ...protocol.relay_wire import check_handle

    check_handle(handle)  # a typo fails before the passphrase prompt
    app.require_home()
    passphrase = app.read_passphrase()

    from ...net.relay_client import RelayClient

    async def claim() -> None:
        client = await RelayClient.connect(app.relay_url, app.unlock(passphrase))
        try:
            await client.claim_handle(handle)
        finally:
            await client.close()

    with app.waiting(f"claiming {handle} at {app.relay_url}…"):
        app.run(claim())
    app.out.print(f"registered handle {handle} at {app.relay_url}", markup=False)
    app.note(f"others can now run: p2ptransfer contacts add NAME --lookup {handle}")


@click.command()
@click.argument("handle")
@pass_app
def unregister(app: App, handle: str) -> None:
    """Release HANDLE at the relay's directory, so it no longer points to you.

    Only the key that claimed a handle can release it; anybody may claim it afterwards.
    """
    from ...protocol.relay_wire import check_handle

    check_handle(handle)  # a typo fails before the passphrase prompt
    app.require_home()
    passphrase = app.read_passphrase()

    from ...net.relay_client import RelayClient

    async def release() -> None:
        client = await RelayClient.connect(app.relay_url, app.unlock(passphrase))
        try:
            await client.release_handle(handle)
        finally:
            await client.close()

    with app.waiting(f"releasing {handle} at {app.relay_url}…"):
        app.run(release())
    app.out.print(f"released handle {handle} at {app.relay_url}", markup=False)
