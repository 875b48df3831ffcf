"""Starting or joining Ray the same way from every command."""

from __future__ import annotations

import os


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> str | None:
    """Join `address` (or $RAY_ADDRESS) if given, else start a local Ray.

    Returns the dashboard URL. The dashboard stays on (Ray Train's placement-group cleanup needs its State API) and
    binds to 127.0.0.1: an exposed dashboard/jobs API runs anyone's code.
    """
    import ray

    if ray.is_initialized():
        return None
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, **kwargs)
    else:
        # address="local": always a fresh local Ray, never a stale cluster some other
        # process left in /tmp/ray (ray.init's default would try to join it).
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level="WARNING", **kwargs)
    url = ctx.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url

