"""Connecting to Ray: `--ray local` starts a cluster in this process, `auto` joins the one this machine runs, any
other value is a cluster address (`ray://host:10001` or `host:6379`).

Example:
    >>> from index.cluster import connect  # doctest: +SKIP
    >>> connect("local")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

from index.extras import require

logger = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """Ray could not be reached, or a task or actor on it failed; the message names which and what to do."""


def ray_module(feature: str = "--ray") -> ModuleType:
    """`ray`, or `MissingExtraError` naming the `ray` extra."""
    return require("ray", "ray", feature)


def connect(address: str, num_cpus: int | None = None) -> ModuleType:
    """Join (or, for "local", start) a Ray cluster unless this process already has; returns `ray`.

    Parameters:
        address: "local", "auto" or a cluster address.
        num_cpus: CPUs of a local cluster (default: the machine's).
    """
    ray = ray_module()
    if ray.is_initialized():
        return ray
    # Our workers log through their own loggers; the driver's console is the user's, not the cluster's.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    # Ray's note that a new local cluster made itself an auth token: a line per start, the user's to read only
    # at debug level (the token still protects the cluster).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        detail = " ".join(str(exc).split())[:200]
        hint = ("start one with `ray start --head`, or use --ray local" if address == "auto"
                else "check the address and that the cluster runs the same Ray version")
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r} ({type(exc).__name__}: {detail}); "
                           f"{hint}") from None
    logger.info("Ray: %s, %s CPUs", address, int(ray.cluster_resources().get("CPU", 0)))
    return ray


def cluster_cpus() -> int:
    ray = ray_module()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
