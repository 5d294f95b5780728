"""Remote runs on a Ray cluster, recorded here like local runs (`--cluster ADDRESS`).

    client (this machine)                         cluster node
    ─────────────────────                         ────────────
    launch: record run N, connect, check   ──▶    worker.RemoteJob (a detached actor holding
            resources, send missing inputs         the request): imports the input runs, runs
    session: copy output, metrics and      ◀──    `python -m tunesmith ...` in a fresh
            finished checkpoints; at the end       workspace, keeps its output, lists its files
            copy the outputs back, verified
    client: submit / follow / sync / stop

Ray is an optional extra (`pip install 'tunesmith[cluster]'`); the workers need tunesmith
installed, at the same version, in the Python that runs Ray there.
"""

from tunesmith.cluster.config import ClusterConfig

__all__ = ["ClusterConfig"]
