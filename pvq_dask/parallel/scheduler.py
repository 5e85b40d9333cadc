"""Pick a Dask scheduler: local threads/processes, a LocalCluster, or a remote cluster."""

from contextlib import contextmanager

__all__ = ["get_client", "client_for", "LOCAL_SCHEDULERS"]

LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")


def get_client(scheduler):
    """Return ``(client_or_None, owned)`` for a scheduler spec.

    ``None`` means use ``dask.compute(scheduler=...)`` with a local scheduler name; ``owned``
    means the caller must close the client (and its LocalCluster) when done.
    """
    if scheduler in LOCAL_SCHEDULERS:
        return None, False
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    if scheduler == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        return Client(cluster), True
    if isinstance(scheduler, str) and "://" in scheduler:
        return Client(scheduler), True
    raise ValueError(f"unknown scheduler {scheduler!r}: use one of {LOCAL_SCHEDULERS}, "
                     "'local', an address like tcp://host:8786, or a distributed.Client")


@contextmanager
def client_for(scheduler):
    """``with client_for(spec) as client:`` -- None for local schedulers; clients (and
    LocalClusters) this call started are closed on exit, a Client passed in is left open."""
    client, owned = get_client(scheduler)
    try:
        yield client
    finally:
        if owned:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
