"""``demo``, the self-contained tour (``relay`` is the relay's own command, net.relay)."""

from __future__ import annotations

from pathlib import Path

import click

from ..app import App, pass_app


@click.command()
@click.option(
    "--keep",
    "keep_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Create the two homes in this new directory and keep them (to inspect afterwards).",
)
@pass_app
def demo(app: App, keep_dir: Path | None) -> None:
    """Run a complete tour: a local relay, two throwaway people, real transfers.

    Nothing outside a temporary directory is touched, and it is removed at the end.
    """
    if keep_dir is not None:
        if keep_dir.exists():
            raise click.BadParameter(f"{keep_dir} already exists", param_hint="--keep")
        keep_dir.mkdir(mode=0o700, parents=True)
    from ...demo import run_demo
    from ..demo_report import ConsoleReport

    app.run(run_demo(ConsoleReport(app), keep_dir=keep_dir))
