"""``miro serve``: a web page for reward-controlled sampling from a run folder (gradio, an optional extra)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from miro_cli.common import console, echo, registry, user_errors
from miro_core.errors import ConfigError
from miro_core.serve_logic import DEFAULT_RUN


def attach(app: typer.Typer) -> None:
    app.command("serve")(serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@user_errors
def serve(
    run: Path = typer.Argument(
        DEFAULT_RUN,
        help="Run folder of `miro train` (default: what `make demo` trains), or a released MIRO checkpoint: a "
        "folder in the authors' layout or a Hugging Face repo id found in the local cache (nothing is downloaded).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; only this machine can reach 127.0.0.1."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="TCP port of the page."),
    device: str = typer.Option("cpu", "--device"),
    weights: str = typer.Option("ema", "--weights", help="ema or raw."),
    variant: str = typer.Option(None, "--variant", help="Variant subfolder of a released checkpoint (miro-no-...)."),
) -> None:
    """Serve a page to sample from RUN with a target and a negative-target slider per reward."""
    from miro_core.authors_layout import released_folder
    from miro_core.serve_logic import ServeSession, check_run_folder
    from miro_core.webui import import_gradio
    from miro_core.webui import serve as serve_page

    run = Path(released_folder(str(run), variant))
    check_run_folder(run)
    import_gradio()
    if not is_loopback(host):
        console.print(
            f"[yellow]warning:[/] serving on {host}: anyone who can reach this machine can use the page",
            highlight=False,
        )
    session = ServeSession.open(run, registry=registry(), device=device, weights=weights)
    echo(f"serving {run} (step {session.pipe.step}) on http://{host}:{port} ; press Ctrl+C to stop")
    try:
        serve_page(session, host=host, port=port)
    except OSError as err:
        raise ConfigError(f"cannot serve on {host}:{port} ({err}); pick another --port") from None
