"""Start an MXNet ``dist_sync`` job on this machine: ps-lite's scheduler, servers and workers.

MXNet's distributed kvstore is a parameter server (ps-lite): one *scheduler* that introduces
the nodes, *servers* that hold and sum the pushed arrays, and one *worker* per training
process. Each learns its role from ``DMLC_ROLE`` and finds the scheduler through
``DMLC_PS_ROOT_URI``/``DMLC_PS_ROOT_PORT``; ``DMLC_NUM_SERVER``/``DMLC_NUM_WORKER`` say how
many to wait for. A scheduler or server is nothing but ``python -c "import mxnet"`` in that
environment (MXNet runs the node's loop at import and exits when the workers finish).

MXNet's own ``tools/launch.py --launcher local`` does exactly this, but its ``dmlc_tracker``
calls ``Thread.isAlive()``, which Python 3.9 removed: on Python 3.11 it dies after starting
the scheduler and leaves it running (measured with mxnet 1.9.1). This module is that
launcher's ``local`` mode and nothing more; the kvstore, its sums and its barriers are
MXNet's. It also gives each worker ``DMLC_WORKER_ID`` (0..N-1), which
:func:`d2lkaggle.parallel.distributed.detect` reads as the rank (ps-lite assigns its own ranks only
when the kvstore connects, too late to decide which process writes the run folder), and
``DMLC_LOCAL_RANK`` (its GPU on this machine).

Usage (the launched command is what ``torchrun`` would get)::

    python -m d2lkaggle.parallel.pslaunch --nproc_per_node 2 -m d2lkaggle.cli run cifar10 --backend mxnet ...
    python -m d2lkaggle.parallel.pslaunch --nproc_per_node 2 train.py --epochs 3
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from typing import Mapping, Sequence

#: what a scheduler or server runs: MXNet's node loop starts at import (kvstore_server.py)
NODE_CODE = "import mxnet"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for the scheduler)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_env(role: str, *, num_workers: int, num_servers: int, host: str, port: int,
             worker_id: int | None = None, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of one ps-lite node (``role``: scheduler, server or worker)."""
    if role not in ("scheduler", "server", "worker"):
        raise ValueError(f"role must be scheduler, server or worker, got {role!r}")
    env = dict(base, DMLC_ROLE=role, DMLC_PS_ROOT_URI=host, DMLC_PS_ROOT_PORT=str(port),
               DMLC_NUM_WORKER=str(num_workers), DMLC_NUM_SERVER=str(num_servers))
    # (ps-lite binds every node to DMLC_NODE_HOST when set; the loopback keeps a
    # one-machine job off the network interfaces)
    env.setdefault("DMLC_NODE_HOST", host)
    env.pop("DMLC_WORKER_ID", None)
    env.pop("DMLC_LOCAL_RANK", None)
    if role == "worker":   # one machine: the rank is also the device index
        env["DMLC_WORKER_ID"] = env["DMLC_LOCAL_RANK"] = str(worker_id or 0)
    return env


def commands(target: Sequence[str], module: bool) -> list[str]:
    """The worker's command line: ``python -m MODULE ARGS`` or ``python SCRIPT ARGS``."""
    if not target:
        raise ValueError("nothing to launch: give a script or -m MODULE and its arguments")
    return [sys.executable, *(["-m"] if module else []), *target]


def launch(target: Sequence[str], *, nproc: int = 2, num_servers: int = 1,
           host: str = "127.0.0.1", port: int | None = None, module: bool = False,
           timeout: float | None = None) -> int:
    """Run ``target`` in ``nproc`` workers with a scheduler and ``num_servers`` servers;
    returns the first non-zero worker exit code (0 when all succeed). A failing worker
    stops the whole job, since the others would wait for it at the next sum forever."""
    if nproc < 1 or num_servers < 1:
        raise ValueError(f"need at least one worker and one server, got {nproc} and {num_servers}")
    port = port or free_port(host)
    kw = dict(num_workers=nproc, num_servers=num_servers, host=host, port=port)
    nodes = [subprocess.Popen([sys.executable, "-c", NODE_CODE], env=node_env("scheduler", **kw))]
    nodes += [subprocess.Popen([sys.executable, "-c", NODE_CODE], env=node_env("server", **kw))
              for _ in range(num_servers)]
    cmd = commands(target, module)
    workers = [subprocess.Popen(cmd, env=node_env("worker", worker_id=i, **kw))
               for i in range(nproc)]
    t0, rc = time.monotonic(), 0
    try:
        # (poll every process each round: ``any(...)`` would stop at the first running one)
        while [w.poll() for w in workers].count(None):
            failed = [w.returncode for w in workers if w.returncode not in (None, 0)]
            if failed or (timeout is not None and time.monotonic() - t0 > timeout):
                rc = failed[0] if failed else 124
                break
            dead = [code for code in (n.poll() for n in nodes) if code not in (None, 0)]
            if dead:
                rc = dead[0]
                print(f"pslaunch: a scheduler/server exited with {rc} (is mxnet installed for "
                      f"{sys.executable}?)", file=sys.stderr)
                break
            time.sleep(0.2)
        else:
            rc = next((w.returncode for w in workers if w.returncode), 0)
        for n in nodes:   # they leave once the workers have gone; give them a moment
            try:
                n.wait(timeout=30 if rc == 0 else 1)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for p in workers + nodes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m d2lkaggle.parallel.pslaunch``: the command line of :func:`launch`."""
    p = argparse.ArgumentParser(prog="python -m d2lkaggle.parallel.pslaunch",
                                description="Run a script in N MXNet dist_sync workers on this "
                                            "machine (ps-lite scheduler + servers + workers).")
    p.add_argument("--nproc_per_node", "--nproc-per-node", "-n", type=int, default=2,
                   help="worker processes (default: 2)")
    p.add_argument("--num-servers", "-s", type=int, default=1,
                   help="ps-lite server processes (default: 1)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the scheduler listens on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help="scheduler port (default: a free one)")
    p.add_argument("-m", dest="module", action="store_true",
                   help="run the target as a module (python -m MODULE), like torchrun -m")
    p.add_argument("target", nargs=argparse.REMAINDER, help="script (or module) and its arguments")
    a = p.parse_args(argv)
    try:
        return launch(a.target, nproc=a.nproc_per_node, num_servers=a.num_servers,
                      host=a.host, port=a.port, module=a.module)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
