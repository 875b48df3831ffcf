"""CLI commands for operations (registered on cli.app): `emi-ray dashboard RUN`."""

from __future__ import annotations

from pathlib import Path

import typer

from emi_ray.cli import app, handles_errors, notify, out


@app.command()
@handles_errors
def dashboard(
    run: str = typer.Argument(..., metavar="RUN", help="A search run directory (emi-ray tune --out), or its "
                                                       "optuna.db / .journal file; an s3:// one is served from "
                                                       "a local snapshot."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind. Keep 127.0.0.1 and use SSH port "
                                                         "forwarding; anything else exposes the study."),
    port: int = typer.Option(8080, "--port", help="Port (0: any free port)."),
) -> None:
    """Serve optuna-dashboard on a search's Optuna study (live while the search runs). Ctrl-C stops it."""
    from emi_ray.io import is_uri
    from emi_ray.ops import (check_port, fetch_study_snapshot, find_study_storage, free_port, http_url,
                             serve_dashboard, storage_url)

    if is_uri(run):
        import tempfile

        storage = fetch_study_snapshot(run, Path(tempfile.mkdtemp(prefix="emi-study-")))
        notify(f"{run}: serving a snapshot copied to {storage} (restart to refresh it)")
    else:
        storage = find_study_storage(run)
    if host not in ("127.0.0.1", "localhost", "::1"):
        notify(f"warning: binding to {host} exposes the study to that network; prefer SSH port forwarding")
    port = port or free_port(host)
    check_port(host, port)
    out.print(f"optuna-dashboard on {storage_url(storage)}", highlight=False)
    out.print(f"open {http_url(host, port)}   (Ctrl-C to stop)", highlight=False)
    serve_dashboard(storage, host, port)
