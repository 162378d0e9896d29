"""A multi-node Ray cluster on one machine: a head "127.0.0.1" and worker nodes "127.0.0.2", "127.0.0.3", …

Each node is its own ``ray start --block`` process (own process group, temp dir, resources, ports and node name;
a custom resource ``node_<n>: 1``), so a node can be lost the way a real one is — its raylet and all of its
workers die together — and everything is stopped by the process ids that started it, never by ``ray stop``
(which would stop every Ray instance of this user on the machine).

A node is named by a loopback address. By default every node *listens* on 127.0.0.1 and the name is its Ray node
name only: Ray 2.60 binds a node's raylet, workers and agent to 127.0.0.1 only when the node's address is
127.0.0.1, and to every interface for any other address (127.0.0.2 included), which would expose them on the
machine's network. ``distinct_ips=True`` gives each node its own address 127.0.0.n as well (for a machine or
network namespace without outside interfaces).

Used by the multi-node tests (``tests/integration/multinode``), ``benchmarks/recovery.py`` and
``cluster/local/nodes.sh`` (``python -m neurolm.runtime.local_cluster add|remove|kill|list``)::

    with LocalRayCluster(tmp_dir, worker_ips=("127.0.0.2", "127.0.0.3")) as cluster:
        cluster.connect(env_vars)                   # the driver joins the head node
        cluster.kill_node("127.0.0.2")              # SIGKILL: raylet, object store, agents and workers

Loopback addresses: Ray rewrites ``127.0.0.1`` into the machine's routable address unless it runs in its
single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and that mode refuses to start worker nodes.
So the head runs in single-machine mode (node address 127.0.0.1), and each worker node's ``ray start`` runs
with Ray's loopback rewrite turned off in that one process (:data:`_WORKER_LAUNCHER`): it keeps the head's
address as given and its own. The driver connects in single-machine mode too (:func:`driver_env`).

Auth: with ``auth_mode="token"`` every process of the cluster and the driver share one token file
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``); a node or client without it is refused by the GCS.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["LocalRayCluster", "NodeProcess", "LocalClusterError", "driver_env", "node_pids", "main"]

HEAD_IP = "127.0.0.1"
_ENABLE_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# Run in every node's `ray start` process. The raylet waits a fixed 30 s (Ray 2.60, no setting) for the node's
# dashboard agent to write the port it listens on, and aborts when the agent is slower, which a loaded 2-core
# machine makes routine (its imports alone took 45 s here). Every port of our nodes is chosen up front, so the
# launcher writes that file itself, with the port the agent is told to use, before the raylet starts.
_ANNOUNCE_AGENT_PORT = """
import ray._private.node as _node
from ray._raylet import DASHBOARD_AGENT_LISTEN_PORT_NAME, persist_port
_start_raylet = _node.Node.start_raylet
def _start_raylet_announced(self, *args, **kwargs):
    port = self._ray_params.dashboard_agent_listen_port
    if port:
        persist_port(self._session_dir, self._node_id, DASHBOARD_AGENT_LISTEN_PORT_NAME, port)
    return _start_raylet(self, *args, **kwargs)
_node.Node.start_raylet = _start_raylet_announced
"""

# `ray start` for the head: `ray start --head` starts the Ray Client server whenever its dependency imports;
# saying it does not import leaves it out.
_HEAD_LAUNCHER = (
    "import sys\n" + _ANNOUNCE_AGENT_PORT + "import ray.scripts.scripts as cli\n"
    "cli.get_ray_client_dependency_error = lambda: ImportError('Ray Client off')\n"
    "sys.argv[0] = 'ray'\ncli.main()\n"
)

# `ray start` for a worker node, in a process where Ray keeps loopback addresses as given (see module doc).
_WORKER_LAUNCHER = (
    "import sys\n"
    "from ray._private import services\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    + _ANNOUNCE_AGENT_PORT
    + "import ray.scripts.scripts as cli\n"
    "sys.argv[0] = 'ray'\ncli.main()\n"
)

# The raylet's other waits for its agents follow this setting; a loaded machine needs more than the default.
_SLOW_MACHINE_TIMEOUTS = {"RAY_agent_register_timeout_ms": "300000"}


class LocalClusterError(RuntimeError):
    """A node did not start, join or stop."""


@dataclass
class NodeProcess:
    """One ``ray start --block`` process and what it was started with."""

    name: str  # "head" or "node_2" for 127.0.0.2
    ip: str
    pid: int
    temp_dir: str
    log: str
    cpus: float
    resources: dict[str, float] = field(default_factory=dict)


def free_port(ip: str) -> int:
    """A free TCP port on ``ip`` (a loopback address: every 127.x.y.z is local on Linux)."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _free_ports(ip: str, n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind((ip, 0))
            socks.append(s)
            if s.getsockname()[1] not in ports:
                ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def node_name(ip: str) -> str:
    """``node_<last octet>``: also the custom resource a node offers, so work can be pinned to it."""
    return f"node_{ip.rsplit('.', 1)[-1]}"


def node_pids(pid: int) -> list[int]:
    """A node's ``ray start`` process and every process below it (raylet, object store, agents, workers).

    Ray starts workers in process groups of their own, so a process-group signal would miss them; they are
    all descendants of the node's ``ray start`` process though."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid] + [p.pid for p in root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = _alive(pids)
    while left and time.monotonic() < deadline:
        for pid in left:
            _reap(pid)
        time.sleep(0.2)
        left = _alive(pids)
    return left


def stop_node(pid: int, timeout_s: float = 30.0) -> None:
    """Stop a node gracefully: SIGTERM to ``ray start --block`` stops its processes in order; SIGKILL stragglers."""
    pids = node_pids(pid)
    _signal_all([pid], signal.SIGTERM)
    left = _wait_gone(pids, timeout_s)
    if left:
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(left, 10.0)
    if left:
        raise LocalClusterError(f"processes {left} of the node started as pid {pid} would not stop")


def kill_node(pid: int) -> list[int]:
    """Lose a node the hard way: SIGKILL to all of its processes at once (raylet, object store, workers).

    Returns the pids killed. Nothing is told first, as when a machine loses power or a spot instance goes."""
    pids = node_pids(pid)
    # Stop the tree from spawning while it is being killed, then kill everything.
    _signal_all(pids, signal.SIGSTOP)
    pids = sorted(set(pids) | set(node_pids(pid)))
    _signal_all(pids, signal.SIGKILL)
    left = _wait_gone(pids, 10.0)
    if left:
        raise LocalClusterError(f"processes {left} survived SIGKILL")
    return pids


def driver_env(auth_mode: str, token_path: str | None) -> dict[str, str]:
    """Environment a driver (or ``ray`` CLI) needs to join the cluster: single-machine mode keeps its node
    address 127.0.0.1 (the head's), and the token settings."""
    env = {_ENABLE_CLUSTER_ENV: "0", "RAY_AUTH_MODE": auth_mode}
    if auth_mode == "token" and token_path:
        env["RAY_AUTH_TOKEN_PATH"] = token_path
    return env


def wait_for_nodes(
    address: str, ips: list[str], timeout_s: float = 120.0, env: dict[str, str] | None = None,
    watch_pids: list[int] | None = None,
) -> None:  # fmt: skip
    """Block until the GCS at ``address`` lists an alive node named each of ``ips``; fail early when a process in
    ``watch_pids`` (the nodes' ``ray start``) exits. The probe runs in a subprocess: it must not make this
    process a Ray client."""
    probe = (
        "import os, sys, time, json\n"
        "from ray._raylet import GcsClient\n"
        "from ray.core.generated.gcs_pb2 import GcsNodeInfo\n"
        "client = GcsClient(address=sys.argv[1])\n"
        "want, deadline = set(json.loads(sys.argv[2])), time.monotonic() + float(sys.argv[3])\n"
        "import psutil\n"
        "watch, had_raylet = json.loads(sys.argv[4]), set()\n"
        "seen = set()\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n"
        "        infos = client.get_all_node_info(timeout=5, state_filter=GcsNodeInfo.GcsNodeState.ALIVE)\n"
        "        seen = {i.node_name for i in infos.values()}\n"
        "        if want <= seen:\n"
        "            sys.exit(0)\n"
        "    except Exception:\n"
        "        pass\n"
        "    for pid in watch:\n"
        "        try:\n"
        "            names = {p.name() for p in psutil.Process(pid).children(recursive=True)}\n"
        "        except psutil.NoSuchProcess:\n"
        "            sys.exit(f'EXITED: the node process {pid} exited before joining {sys.argv[1]}')\n"
        "        if 'raylet' in names:\n"
        "            had_raylet.add(pid)\n"
        "        elif pid in had_raylet:\n"
        "            sys.exit(f'EXITED: the raylet of node process {pid} died before joining {sys.argv[1]}')\n"
        "    time.sleep(0.5)\n"
        "sys.exit(f'nodes {sorted(want - seen)} did not join {sys.argv[1]} within {sys.argv[3]} s (alive: {sorted(seen)})')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, address, json.dumps(ips), str(timeout_s), json.dumps(watch_pids or [])],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout_s + 120,
    )  # fmt: skip
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "probe failed").strip().splitlines()
        raise LocalClusterError(lines[-1])


class LocalRayCluster:
    """Head (127.0.0.1) plus worker nodes (127.0.0.2, …), each a process tree of its own, under ``root``.

    ``head_cpus=0`` keeps training off the head: Train workers and Ray Data tasks then run on the worker nodes,
    so losing a worker node loses work. Each worker node offers a custom resource ``node_<n>: 1``.
    """

    def __init__(
        self,
        root: str | Path,
        worker_ips: tuple[str, ...] = ("127.0.0.2", "127.0.0.3"),
        head_cpus: float = 0,
        worker_cpus: float = 2,
        object_store_memory: int = 400 * 2**20,
        auth_mode: str = "token",
        env: dict[str, str] | None = None,
        distinct_ips: bool = False,
    ) -> None:
        self.root = Path(root).absolute()
        self.worker_ips = tuple(worker_ips)
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.object_store_memory = object_store_memory
        if auth_mode not in ("token", "disabled"):
            raise LocalClusterError(f"auth_mode must be token or disabled, got {auth_mode!r}")
        self.auth_mode = auth_mode
        self.env = dict(env or {})
        self.token_path = str(self.root / "auth_token") if auth_mode == "token" else None
        self.head: NodeProcess | None = None
        self.nodes: dict[str, NodeProcess] = {}
        self.gcs_port: int | None = None
        self.start_attempts = 3
        self.distinct_ips = distinct_ips
        self.dashboard_port: int | None = None

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The GCS address (``ray.init(address=...)``, ``ray start --address``)."""
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    def driver_env(self) -> dict[str, str]:
        """Environment for a driver joining this cluster (``connect`` sets it in this process)."""
        return {**driver_env(self.auth_mode, self.token_path), "RAY_API_SERVER_ADDRESS": self.dashboard_url}

    def connect(self, env_vars: dict[str, str] | None = None) -> None:
        """``ray.init`` this process as a driver on the head node; ``env_vars`` go to every Ray worker."""
        import ray
        from ray._private import ray_constants
        from ray._raylet import Config

        os.environ.update(self.driver_env())
        # Ray reads both settings once, at import: refresh them for this already-running process.
        ray_constants.ENABLE_RAY_CLUSTER = False
        Config.initialize("")
        ray.init(
            address=self.address,
            runtime_env={"env_vars": {**(env_vars or {}), "RAY_API_SERVER_ADDRESS": self.dashboard_url}},
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0) -> LocalRayCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.token_path and not Path(self.token_path).exists():
            # Ray's own token format (64 hex digits), readable by this user only.
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        try:
            self._start_head(timeout_s)
            for ip in self.worker_ips:  # one at a time: node starts are CPU-heavy
                self.add_node(ip, timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _env(self, ip: str) -> dict[str, str]:
        env = {
            **os.environ,
            **_SLOW_MACHINE_TIMEOUTS,
            **self.env,
            "RAY_AUTH_MODE": self.auth_mode,
            "RAY_DISABLE_USAGE_STATS": "1",
        }
        if self.token_path:
            env["RAY_AUTH_TOKEN_PATH"] = self.token_path
        env.pop("RAY_ADDRESS", None)  # a node joins the head it is told to, nothing else
        # Head: single-machine mode keeps 127.0.0.1. Worker nodes: cluster mode (else `ray start` refuses),
        # loopback kept by the launcher.
        env[_ENABLE_CLUSTER_ENV] = "0" if ip == HEAD_IP else "1"
        return env

    def _spawn(self, name: str, ip: str, args: list[str], launcher: list[str], cpus: float,
               resources: dict[str, float]) -> NodeProcess:  # fmt: skip
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            # setsid: the node's processes do not share this process's group or terminal signals.
            proc = subprocess.Popen(
                [*launcher, "start", "--block", *args], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self._env(ip), start_new_session=True,
            )  # fmt: skip
        node = NodeProcess(name, ip, proc.pid, str(temp_dir), str(log_path), cpus, resources)
        (self.root / f"{name}.json").write_text(json.dumps(asdict(node)))
        return node

    def _node_ports(self, name: str) -> list[str]:
        """Node name, address and every port, chosen free on the address the node listens on."""
        ip = name if self.distinct_ips or name == HEAD_IP else HEAD_IP
        nm, om, metrics, rt_env, agent_grpc, agent_http = _free_ports(ip, 6)
        return [
            f"--node-name={name}",
            f"--node-ip-address={ip}",
            f"--node-manager-port={nm}",
            f"--object-manager-port={om}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={rt_env}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--dashboard-agent-listen-port={agent_http}",
        ]

    def _start_head(self, timeout_s: float) -> None:
        self.gcs_port, self.dashboard_port = _free_ports(HEAD_IP, 2)
        args = [
            "--head",
            f"--port={self.gcs_port}",
            *self._node_ports(HEAD_IP),
            f"--num-cpus={self.head_cpus:g}",
            f"--object-store-memory={self.object_store_memory}",
            "--include-dashboard=true",
            f"--dashboard-host={HEAD_IP}",
            f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.root / 'head'}",
            "--disable-usage-stats",
        ]
        launcher = [sys.executable, "-c", _HEAD_LAUNCHER]
        self.head = self._start_with_retries("head", HEAD_IP, args, launcher, self.head_cpus, {}, timeout_s)

    def _start_with_retries(self, name: str, ip: str, args: list[str], launcher: list[str], cpus: float,
                            resources: dict[str, float], timeout_s: float) -> NodeProcess:  # fmt: skip
        """Start a node and wait until it has joined; start it again when it died on the way.

        On a loaded machine a node can die at start: its raylet waits a fixed 30 s for the Python agents to
        report their ports and aborts when they are slower (measured: 45 s with the load of several clusters
        on 2 cores). Such a start is retried with a fresh temp dir; any other failure is raised."""
        for attempt in range(1, self.start_attempts + 1):
            node = self._spawn(name, ip, args, launcher, cpus, resources)
            try:
                wait_for_nodes(self.address, [ip], timeout_s, self._env(HEAD_IP), watch_pids=[node.pid])
                return node
            except BaseException as err:  # noqa: B036 - an interrupted start must not leave the node running
                try:
                    stop_node(node.pid)
                finally:
                    _reap(node.pid)
                if not isinstance(err, LocalClusterError):
                    raise
                if "EXITED" not in str(err) or attempt == self.start_attempts:
                    raise LocalClusterError(f"{name} ({ip}): {err} (see {node.log})") from None
        raise AssertionError("unreachable")

    def add_node(self, ip: str, cpus: float | None = None, timeout_s: float = 180.0) -> NodeProcess:
        """Start a worker node named ``ip`` (127.0.0.2 …; see the module doc for its address) joining the head."""
        if self.head is None:
            raise LocalClusterError("start the head first")
        if not ip.startswith("127.") or ip == HEAD_IP:
            raise LocalClusterError(
                f"worker node address must be a loopback address other than {HEAD_IP}, got {ip}"
            )
        if ip in self.nodes:
            raise LocalClusterError(f"a node at {ip} is already running (pid {self.nodes[ip].pid})")
        name = node_name(ip)
        cpus = self.worker_cpus if cpus is None else cpus
        resources = {name: 1.0}
        args = [
            f"--address={self.address}",
            *self._node_ports(ip),
            f"--num-cpus={cpus:g}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={self.object_store_memory}",
            f"--temp-dir={self.root / name}",
            "--disable-usage-stats",
        ]
        launcher = [sys.executable, "-c", _WORKER_LAUNCHER]
        node = self._start_with_retries(name, ip, args, launcher, cpus, resources, timeout_s)
        self.nodes[ip] = node
        return node

    def kill_node(self, ip: str) -> list[int]:
        """SIGKILL every process of the worker node at ``ip`` (its raylet and its workers); returns their pids."""
        node = self.nodes.pop(ip)
        pids = kill_node(node.pid)
        _reap(node.pid)
        Path(self.root, f"{node.name}.json").unlink(missing_ok=True)
        return pids

    def remove_node(self, ip: str) -> None:
        """Stop the worker node at ``ip`` gracefully."""
        node = self.nodes.pop(ip)
        stop_node(node.pid)
        Path(self.root, f"{node.name}.json").unlink(missing_ok=True)

    def pids(self) -> list[int]:
        """Every process of the cluster right now."""
        roots = [n.pid for n in self.nodes.values()] + ([self.head.pid] if self.head else [])
        return [p for r in roots for p in node_pids(r)]

    def stop(self) -> None:
        """Stop worker nodes, then the head, by the pids that started them; nothing of the cluster is left."""
        errors = []
        for ip in list(self.nodes):
            try:
                self.remove_node(ip)
            except LocalClusterError as err:
                errors.append(str(err))
        if self.head is not None:
            try:
                stop_node(self.head.pid)
            except LocalClusterError as err:
                errors.append(str(err))
            Path(self.root, "head.json").unlink(missing_ok=True)
            self.head = None
        if errors:
            raise LocalClusterError("; ".join(errors))

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- command line (cluster/local/nodes.sh) ---------------------------------------------------------------------
def _attach(state_dir: Path, address: str, auth_mode: str, token_path: str | None) -> LocalRayCluster:
    """A cluster object for worker nodes joining a head someone else started (``cluster/local/up.sh``)."""
    cluster = LocalRayCluster(state_dir, worker_ips=(), auth_mode=auth_mode)
    cluster.token_path = token_path if auth_mode == "token" else None
    cluster.gcs_port = int(address.rsplit(":", 1)[1])
    cluster.head = NodeProcess("head", HEAD_IP, -1, "", "", 0)  # not ours: never stopped from here
    for f in sorted(state_dir.glob("node_*.json")):
        node = NodeProcess(**json.loads(f.read_text()))
        if _alive([node.pid]):
            cluster.nodes[node.ip] = node
        else:
            f.unlink()
    return cluster


def main(argv: list[str] | None = None) -> int:
    """``python -m neurolm.runtime.local_cluster {add,remove,kill,list}``: worker nodes for a head on 127.0.0.1."""
    parser = argparse.ArgumentParser(prog="python -m neurolm.runtime.local_cluster", description=main.__doc__)
    parser.add_argument("action", choices=["add", "remove", "kill", "list"])
    parser.add_argument("--address", required=True, help="the head's GCS address, 127.0.0.1:<port>")
    parser.add_argument("--state-dir", required=True, help="where node temp dirs, logs and pid files go")
    parser.add_argument("--ip", action="append", default=[], help="node name(s), loopback addresses, e.g. 127.0.0.2")
    parser.add_argument("--cpus", type=float, default=1.0, help="logical CPUs of each added node")
    parser.add_argument("--object-store-memory", type=int, default=400 * 2**20)
    parser.add_argument("--auth-mode", default=os.environ.get("RAY_AUTH_MODE", "disabled"),
                        choices=["token", "disabled"])  # fmt: skip
    parser.add_argument("--token-path", default=os.environ.get("RAY_AUTH_TOKEN_PATH")
                        or str(Path.home() / ".ray" / "auth_token"))  # fmt: skip
    args = parser.parse_args(argv)
    if not args.address.startswith(f"{HEAD_IP}:"):
        print(f"--address: the head must be on {HEAD_IP}, got {args.address!r}", file=sys.stderr)
        return 2
    bad = [ip for ip in args.ip if not ip.startswith("127.") or ip == HEAD_IP]
    if bad:
        print(f"--ip: worker nodes need loopback addresses other than {HEAD_IP}, got {bad}", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    cluster = _attach(state_dir, args.address, args.auth_mode, args.token_path)
    cluster.object_store_memory = args.object_store_memory
    if args.action == "list":
        print(json.dumps([asdict(n) for n in cluster.nodes.values()], indent=1))
        return 0
    ips = args.ip or (list(cluster.nodes) if args.action != "add" else [])
    if args.action == "add" and not ips:
        print("add: give at least one --ip", file=sys.stderr)
        return 2
    for ip in ips:
        if args.action == "add":
            if ip in cluster.nodes:
                print(f"{ip}: already running (pid {cluster.nodes[ip].pid})", file=sys.stderr)
                continue
            node = cluster.add_node(ip, cpus=args.cpus)
            print(
                f"{ip}: joined {args.address} (pid {node.pid}, {args.cpus:g} CPUs, resource {node.name}: 1)"
            )
        elif ip not in cluster.nodes:
            print(f"{ip}: no node of ours there", file=sys.stderr)
        elif args.action == "remove":
            cluster.remove_node(ip)
            print(f"{ip}: stopped")
        else:
            print(f"{ip}: killed {len(cluster.kill_node(ip))} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
