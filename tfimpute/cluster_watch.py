"""Watches a multi-worker training process while TensorFlow forms the cluster (standard library only).

``MultiWorkerMirroredStrategy()`` blocks in native code until every worker has joined; the
waiting process can neither time out nor react to Ctrl-C there, and TensorFlow takes SIGTERM for
its own preemption notices. :func:`tfimpute.distribute.start_multi_worker` therefore starts this
script as a separate process of the same process group:

    python cluster_watch.py PARENT_PID TIMEOUT_SECONDS NAME NAME=HOST:PORT ...

It ends quietly when the parent closes its stdin (the cluster is up, or the parent is gone).
Otherwise, after TIMEOUT_SECONDS it prints one line naming the peers whose address never accepted
a connection, and on Ctrl-C or SIGTERM to the process group (what a terminal and a scheduler
stopping a job send) one line saying so; then it kills the parent (SIGKILL: the blocked native call
cannot be left otherwise). It is run by path, so it imports nothing of tfimpute.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time


class Stopped(Exception):
    """SIGTERM received."""


def _stopped(signum, frame) -> None:
    raise Stopped


def listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def stop(parent: int, message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    try:
        os.kill(parent, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> None:
    parent, timeout = int(argv[1]), float(argv[2])
    me = argv[3]
    peers = dict(peer.split("=", 1) for peer in argv[4:])
    signal.signal(signal.SIGTERM, _stopped)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if ready:
                return  # end of file: the cluster is up, or the parent is gone
    except KeyboardInterrupt:
        stop(parent, f"{me}: stopped by Ctrl-C while waiting for the cluster")
        return
    except Stopped:
        stop(parent, f"{me}: stopped by SIGTERM while waiting for the cluster")
        return
    missing = [f"{name} ({address})" for name, address in peers.items() if not listening(address)]
    reason = (f"never came up: {', '.join(missing)}" if missing else
              "every peer is listening but the cluster did not form (do all workers have the same TF_CONFIG "
              "cluster?)")
    stop(parent, f"{me}: gave up after --cluster_timeout={timeout:g} s; {reason}")


if __name__ == "__main__":
    main(sys.argv)
