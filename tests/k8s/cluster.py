"""A real single-node Kubernetes cluster for the k8s tests, everything under one scratch directory.

etcd, kube-apiserver (127.0.0.1 only; RBAC, Node authorizer, NodeRestriction and PodSecurity
admission), kube-controller-manager and kube-scheduler, a containerd of its own (own root, state
and socket) and a kubelet that joins as ``system:node:<name>``. Pods get addresses from
``POD_SUBNET`` on the bridge ``BRIDGE``, whose gateway ``NODE_IP`` is created before anything
else: host processes that pods must reach (MLflow, the S3 API) bind to it. It is also the node's
InternalIP. kube-proxy (iptables mode) routes Service addresses, the ``kubernetes`` Service included
(the API server also listens on NODE_IP, so pods with a token reach the API as in any cluster), and
CoreDNS, a host process on NODE_IP, answers ``cluster.local`` names (the Dask operator's workers
find their scheduler by its Service name).

Teardown leaves nothing behind: pods are deleted through the API, remaining containers killed
through containerd, process groups ended, mounts under the scratch directory unmounted, the
bridge, network namespaces, iptables chains and cgroups this run added removed, and the kernel
settings the kubelet changes restored.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.k8s import pki

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = Path(__file__).with_name("build_binaries.sh")

NODE_NAME = "mlsteps-node"
BRIDGE = "mlk8s0"
#: Pod addresses; the bridge holds the gateway, NODE_IP, from the start of the run.
POD_SUBNET = "10.77.0.0/24"
NODE_IP = "10.77.0.1"
#: Cluster IPs of Services, routed by kube-proxy.
SERVICE_SUBNET = "10.78.0.0/24"
#: Cluster DNS: CoreDNS listens on the node's bridge address.
CLUSTER_DNS = NODE_IP
CLUSTER_DOMAIN = "cluster.local"


def list_watch_rbac(name: str, resources: dict[str, list[str]], subject: dict[str, str]) -> str:
    """A ClusterRole ``name`` that lists and watches ``resources`` (API group -> resources), bound to
    ``subject``: what a host component that only watches the API (CoreDNS, a NetworkPolicy enforcer) needs."""
    group = "rbac.authorization.k8s.io"
    role = {
        "apiVersion": f"{group}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": [api_group], "resources": names, "verbs": ["list", "watch"]}
            for api_group, names in resources.items()
        ],
    }
    binding = {
        "apiVersion": f"{group}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": name},
        "subjects": [subject],
    }
    return yaml.safe_dump_all([role, binding])


#: The sandbox image containerd's CRI uses; built locally (tests/k8s/images.py), never pulled.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
CNI_BIN = Path("/usr/lib/cni")
KERNEL_SETTINGS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
)
#: Label on an imported image: the Docker image ID it was imported from (to reuse it next run).
_DOCKER_ID_LABEL = "org.mlsteps.docker-id"
_DEBIAN_PACKAGES = {"etcd": "etcd-server", "containerd": "containerd", "runc": "runc", "nft": "nftables"}


class ClusterError(RuntimeError):
    """The cluster could not be started; the message names the component and ends with its log."""


class ImageStoreError(ClusterError):
    """containerd could not import an image into its store (e.g. the kept store is inconsistent)."""


# --- prerequisites ------------------------------------------------------------------------------


def binaries(build: bool = True) -> tuple[Path | None, str | None]:
    """The directory of kube-* binaries, kubectl and helm (built once into the cache when missing).

    Returns:
        (bin directory, None), or (None, a one-line reason why they are not available).
    """
    env = {**os.environ}
    if not build:
        env["ML_K8S_NO_BUILD"] = "1"
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, env=env, check=False, timeout=3600
    )
    if proc.returncode == 0:
        return Path(proc.stdout.strip().splitlines()[-1]), None
    last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return None, f"no Kubernetes binaries: {last.removeprefix('ERROR: ')}"


def host_reason() -> str | None:
    """A one-line reason why this machine cannot run the cluster, or None when it can."""
    if os.geteuid() != 0:
        return "the Kubernetes tests need root (kubelet, containerd, bridge networking)"
    missing = [
        name
        for name in ("etcd", "containerd", "runc", "ctr", "iptables", "ip", "nft")
        if not shutil.which(name)
    ]
    if missing or not (CNI_BIN / "bridge").exists():
        if shutil.which("apt-get") is None:
            return f"missing {', '.join(missing) or 'the CNI plugins'} and no apt-get to install them"
        packages = sorted(
            {_DEBIAN_PACKAGES.get(name, name) for name in missing if name != "ctr"} | {"containerd"}
        )
        packages += ["containernetworking-plugins"] if not (CNI_BIN / "bridge").exists() else []
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=900)
            if proc.returncode != 0:
                return f"`{' '.join(cmd)}` failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup: the kubelet needs cgroups"
    taken = _subnet_owner()
    if taken:
        return f"the pod subnet {POD_SUBNET} is already routed through {taken}; free it or change POD_SUBNET"
    return None


def _subnet_owner() -> str | None:
    routes = subprocess.run(["ip", "-j", "route"], capture_output=True, text=True, check=False).stdout
    subnet = ipaddress.ip_network(POD_SUBNET)
    for route in json.loads(routes or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == BRIDGE:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(subnet):
                return str(route.get("dev"))
    return None


def image_store() -> Path | None:
    """containerd's root (image content and unpacked layers), kept between runs like the binaries.

    Importing the 1.5 GB step image takes minutes, so it is imported once per image ID. Everything
    else (state, sockets, containers, logs) stays in the run's scratch directory. With
    ``ML_K8S_IMAGE_CACHE=""`` the root is in the scratch directory too.
    """
    value = os.environ.get("ML_K8S_IMAGE_CACHE")
    if value == "":
        return None
    if value:
        return Path(value)
    cache = os.environ.get("ML_K8S_CACHE") or Path.home() / ".cache" / "mlsteps" / "k8s"
    return Path(cache) / "containerd-root"


def reference(tag: str) -> str:
    """The reference containerd stores for a Docker tag (``mlsteps:0.1.0`` -> docker.io/library/...)."""
    name = tag.split(":")[0]
    if "/" not in name:
        return f"docker.io/library/{tag}"
    if "." not in name.split("/")[0] and ":" not in name.split("/")[0]:
        return f"docker.io/{tag}"
    return tag


def _ctr(
    socket_path: Path, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = ["ctr", "--address", str(socket_path), "--namespace", "k8s.io", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args[:3])} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes ----------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 10.0, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the process group, SIGKILL it after ``grace`` seconds."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Children that outlived the leader share its group: end them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def _wait(what: str, check: Callable[[], bool], timeout: float, process: _Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise ClusterError(
                f"{process.name} exited ({process.popen.returncode}) before {what}:\n{process.tail()}"
            )
        try:
            if check():
                return
        except (OSError, ssl.SSLError, subprocess.SubprocessError, ValueError):
            pass
        time.sleep(0.5)
    log = f":\n{process.tail()}" if process is not None else ""
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{log}")


# --- host state the run changes and restores ----------------------------------------------------


_IPTABLES_TABLES = ("filter", "nat", "mangle")


def _chains(tool: str) -> dict[str, set[str]]:
    chains: dict[str, set[str]] = {}
    if not shutil.which(tool):
        return chains
    for table in _IPTABLES_TABLES:
        out = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
        chains[table] = {line.split()[1] for line in out.splitlines() if line.startswith(("-N ", "-P "))}
    return chains


@dataclass
class _HostSnapshot:
    """What was there before the run, so that teardown removes exactly what the run added."""

    chains: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    netns: set[str] = field(default_factory=set)
    kernel: dict[str, str] = field(default_factory=dict)
    created_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def take(cls) -> _HostSnapshot:
        snap = cls(chains={tool: _chains(tool) for tool in ("iptables", "ip6tables")})
        snap.netns = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
        for name in KERNEL_SETTINGS:
            with contextlib.suppress(OSError):
                snap.kernel[name] = Path("/proc/sys", name).read_text().strip()
        snap.created_dirs = [
            Path(d) for d in ("/var/run/netns", "/var/log/containers") if not os.path.exists(d)
        ]
        return snap

    def restore(self, scratch: Path) -> list[str]:
        problems: list[str] = []
        for tool, before in self.chains.items():
            problems += _remove_new_chains(tool, before)
        if os.path.isdir("/var/run/netns"):
            for name in sorted(set(os.listdir("/var/run/netns")) - self.netns):
                if subprocess.run(
                    ["ip", "netns", "delete", name], capture_output=True, check=False
                ).returncode:
                    problems.append(f"network namespace {name} could not be deleted")
        for name, value in self.kernel.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(value)
        logs = Path("/var/log/containers")
        if logs.is_dir():
            for link in logs.iterdir():
                if link.is_symlink() and str(os.readlink(link)).startswith(str(scratch)):
                    link.unlink()
        for directory in self.created_dirs:
            with contextlib.suppress(OSError):
                directory.rmdir()
        return problems


def _remove_new_chains(tool: str, before: dict[str, set[str]]) -> list[str]:
    problems = []
    for table, chains in _chains(tool).items():
        # Only the CNI plugins' and the kubelet's: another engine (dockerd) may add its own meanwhile.
        new = {c for c in chains - before.get(table, set()) if c.startswith(("CNI-", "KUBE-"))}
        if not new:
            continue
        rules = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
        # Rules in chains that stay which jump to a chain that goes.
        for line in rules.splitlines():
            parts = shlex.split(line)
            if (
                parts[:1] == ["-A"]
                and parts[1] not in new
                and "-j" in parts
                and parts[parts.index("-j") + 1] in new
            ):
                subprocess.run([tool, "-t", table, "-D", *parts[1:]], capture_output=True, check=False)
        for chain in new:
            subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in new:
            if subprocess.run([tool, "-t", table, "-X", chain], capture_output=True, check=False).returncode:
                problems.append(f"{tool} chain {table}/{chain} could not be deleted")
    return problems


def _cgroup_hierarchies() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # v2: one hierarchy
        return [root]
    return [path for path in sorted(root.iterdir()) if path.is_dir() and not path.is_symlink()]


def _make_cgroup_root(name: str) -> None:
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):  # cpuset v1 children start empty
            if (path / setting).exists() and not (path / setting).read_text().strip():
                (path / setting).write_text((hierarchy / setting).read_text())


def _remove_cgroup_root(name: str) -> list[str]:
    problems = []
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda item: -len(item[0])):
            try:
                os.rmdir(dirpath)
            except OSError as err:
                problems.append(f"cgroup {dirpath}: {err.strerror}")
    return problems


def _mounts_under(*prefixes: str) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\(\d{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _unmount_all(*prefixes: str) -> list[str]:
    for _ in range(3):
        points = _mounts_under(*prefixes)
        if not points:
            return []
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return [f"still mounted: {point}" for point in _mounts_under(*prefixes)]


# --- the cluster --------------------------------------------------------------------------------


@dataclass
class Cluster:
    """A running cluster. ``server`` and ``ca_file`` are what a kubeconfig needs; ``admin_kubeconfig``
    is cluster-admin (system:masters), for the fixtures only."""

    scratch: Path
    bin_dir: Path
    server: str
    ca_file: Path
    admin_kubeconfig: Path
    containerd_socket: Path
    node_name: str = NODE_NAME
    #: The node's address on the pod bridge: pods reach host processes bound to it.
    host_ip: str = NODE_IP
    pod_subnet: str = POD_SUBNET
    processes: dict[str, _Process] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.scratch / "logs"

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl (admin unless ``kubeconfig`` names another identity)."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args[:4])} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> dict:
        return dict(json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout))

    def wait_for_pod(
        self,
        name: str,
        phases: tuple[str, ...],
        namespace: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 180,
    ) -> dict[str, Any]:
        """The pod once its phase is one of ``phases`` (and its IP is set, for ``Running``).

        Raises:
            ClusterError: It did not get there within ``timeout`` seconds.
        """
        where = ["-n", namespace] if namespace else []
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.kubectl_json("get", "pod", name, *where, kubeconfig=kubeconfig))
            phase, address = found.get("status", {}).get("phase"), found.get("status", {}).get("podIP")
            return phase in phases and (phase != "Running" or bool(address))

        _wait(f"pod {name} to reach {' or '.join(phases)}", reached, timeout)
        return found

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this cluster's containerd, in the CRI's ``k8s.io`` namespace."""
        return _ctr(self.containerd_socket, *args, check=check, timeout=timeout)

    def image_names(self) -> set[str]:
        """References of the images in containerd's k8s.io namespace (as the kubelet sees them)."""
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    def import_image(self, tag: str) -> bool:
        """Copy an image from the Docker engine into the node: ``docker save | ctr images import``.

        Returns:
            False when the node already held this very image (same Docker image ID), else True.
        """
        image_id = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if not image_id:
            raise ClusterError(f"the Docker engine has no image {tag} to import into the node")
        ref, label = reference(tag), f"{_DOCKER_ID_LABEL}={image_id}"
        for line in self.ctr("images", "list").stdout.splitlines()[1:]:
            fields = line.split()  # REF TYPE DIGEST SIZE PLATFORMS LABELS (k=v,k=v)
            if fields[:1] == [ref] and label in fields[-1].split(","):
                return False
        # One CI run's import of a rebuilt image failed with "parent snapshot ... does not exist", and
        # the same import passed when run again: likely containerd 1.6 collecting the replaced image's
        # snapshots during the unpack. So: once more, then (running_cluster) with an empty store.
        problem = self._docker_save_into_node(tag)
        if problem:
            print(f"\n{problem}; importing {tag} once more", file=sys.stderr)
            problem = self._docker_save_into_node(tag)
        if problem:
            raise ImageStoreError(problem)
        self.ctr("images", "label", ref, label)
        return True

    def _docker_save_into_node(self, tag: str) -> str | None:
        """``docker save tag | ctr images import -``; what went wrong with the import, or None.

        Raises:
            ClusterError: ``docker save`` itself failed.
        """
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        argv = [
            "ctr",
            "--address",
            str(self.containerd_socket),
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "-",
        ]
        imp = subprocess.run(
            argv, stdin=save.stdout, capture_output=True, text=True, timeout=1800, check=False
        )
        assert save.stdout is not None
        save.stdout.close()
        save_err = save.communicate(timeout=60)[1]
        if save.returncode:
            raise ClusterError(
                f"docker save {tag} failed: {(save_err or b'').decode(errors='replace').strip()}"
            )
        return f"importing image {tag} into the node failed: {imp.stderr.strip()}" if imp.returncode else None

    def write_kubeconfig(self, path: Path, user: dict, namespace: str = "default") -> Path:
        """A kubeconfig for this cluster with ``user`` (token or client certificate entries)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "mlsteps",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {"name": "mlsteps", "context": {"cluster": "mlsteps", "user": "user", "namespace": namespace}}
            ],
            "current-context": "mlsteps",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


class _Starter:
    """Starts the components one after the other; ``cleanup`` undoes whatever was started."""

    def __init__(self, bin_dir: Path, scratch: Path) -> None:
        self.bin_dir = bin_dir
        self.scratch = scratch
        self.snapshot = _HostSnapshot.take()
        self.cgroup_root = f"mlk8s-{scratch.name.rsplit('-', 1)[-1]}"
        self.containerd_root = image_store() or scratch / "containerd" / "root"
        self.socket_path = scratch / "containerd" / "containerd.sock"
        self.processes: dict[str, _Process] = {}
        self.cluster: Cluster | None = None
        for sub in ("logs", "pki", "etcd", "kubelet", "containerd", "cni/net.d", "cni/ipam", "pod-logs"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: Sequence[str]) -> _Process:
        log = self.scratch / "logs" / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = _Process(name, popen, log)
        self.processes[name] = proc
        return proc

    # -- steps ------------------------------------------------------------------------------------

    def bridge(self) -> None:
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        prefix = ipaddress.ip_network(POD_SUBNET).prefixlen
        for cmd in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise ClusterError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")

    def certificates(self) -> dict[str, pki.KeyPair]:
        ca = pki.Authority(self.scratch / "pki")
        return {
            "ca": ca.pair,
            "sa": pki.service_account_keys(self.scratch / "pki"),
            "apiserver": ca.issue(
                "apiserver",
                "kube-apiserver",
                server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
                server_ips=("127.0.0.1", NODE_IP, str(next(ipaddress.ip_network(SERVICE_SUBNET).hosts()))),
            ),
            "apiserver-kubelet": ca.issue(
                "apiserver-kubelet", "kube-apiserver-kubelet-client", organization="system:masters"
            ),
            "admin": ca.issue("admin", "mlsteps-admin", organization="system:masters"),
            "controller-manager": ca.issue("controller-manager", "system:kube-controller-manager"),
            "scheduler": ca.issue("scheduler", "system:kube-scheduler"),
            "kube-proxy": ca.issue("kube-proxy", "system:kube-proxy"),
            "coredns": ca.issue("coredns", "mlsteps-coredns"),
            "kubelet-client": ca.issue(
                "kubelet-client", f"system:node:{NODE_NAME}", organization="system:nodes"
            ),
            "kubelet-server": ca.issue(
                "kubelet-server", NODE_NAME, server_names=(NODE_NAME,), server_ips=(NODE_IP,)
            ),
        }

    def etcd(self) -> str:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        proc = self.spawn(
            "etcd",
            [
                "etcd",
                "--name=mlsteps",
                f"--data-dir={self.scratch / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=mlsteps=http://127.0.0.1:{peer}",
                "--logger=zap",
                "--log-level=warn",
            ],
        )
        _wait(
            "etcd health",
            lambda: b'"health":"true"' in urllib.request.urlopen(f"{url}/health", timeout=2).read(),
            60,
            proc,
        )
        return url

    def apiserver(self, certs: dict[str, pki.KeyPair], etcd_url: str) -> tuple[str, Path]:
        port = free_port()
        pk = self.scratch / "pki"
        proc = self.spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                # 127.0.0.1 for the host's clients, NODE_IP for pods (the kubernetes Service's
                # endpoint, which the API server keeps at NODE_IP:port).
                "--bind-address=0.0.0.0",
                f"--secure-port={port}",
                f"--advertise-address={NODE_IP}",
                f"--cert-dir={pk}",
                f"--tls-cert-file={certs['apiserver'].cert}",
                f"--tls-private-key-file={certs['apiserver'].key}",
                f"--client-ca-file={certs['ca'].cert}",
                f"--service-account-key-file={certs['sa'].cert}",
                f"--service-account-signing-key-file={certs['sa'].key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--api-audiences=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_SUBNET}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                # Privileged pods pass validation, so that PodSecurity admission is what refuses them.
                "--allow-privileged=true",
                f"--kubelet-client-certificate={certs['apiserver-kubelet'].cert}",
                f"--kubelet-client-key={certs['apiserver-kubelet'].key}",
                f"--kubelet-certificate-authority={certs['ca'].cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--v=1",
            ],
        )
        server = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(certs["ca"].cert))
        context.load_cert_chain(str(certs["admin"].cert), str(certs["admin"].key))

        def ready() -> bool:
            return urllib.request.urlopen(f"{server}/readyz", timeout=3, context=context).read() == b"ok"

        _wait("kube-apiserver /readyz", ready, 180, proc)
        return server, proc.log

    def kubeconfig(self, name: str, server: str, ca: Path, pair: pki.KeyPair) -> Path:
        cluster = Cluster(self.scratch, self.bin_dir, server, ca, Path(), Path())
        return cluster.write_kubeconfig(
            self.scratch / f"{name}.kubeconfig",
            {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
        )

    def controllers(self, server: str, certs: dict[str, pki.KeyPair]) -> None:
        ca = certs["ca"].cert
        manager_config = self.kubeconfig("controller-manager", server, ca, certs["controller-manager"])
        self.spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={manager_config}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs['sa'].key}",
                f"--root-ca-file={ca}",
                f"--cluster-signing-cert-file={ca}",
                f"--cluster-signing-key-file={certs['ca'].key}",
                "--v=1",
            ],
        )
        self.spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig('scheduler', server, ca, certs['scheduler'])}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def kube_proxy(self, server: str, certs: dict[str, pki.KeyPair]) -> None:
        """iptables mode; it leaves the host's conntrack and localnet settings as they are."""
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {
                "kubeconfig": str(
                    self.kubeconfig("kube-proxy", server, certs["ca"].cert, certs["kube-proxy"])
                )
            },
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "iptables": {"localhostNodePorts": False},
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (self.scratch / "kube-proxy.yaml").write_text(yaml.safe_dump(config))
        self.spawn(
            "kube-proxy",
            [str(self.bin_dir / "kube-proxy"), f"--config={self.scratch / 'kube-proxy.yaml'}", "--v=1"],
        )

    def coredns(self, cluster: Cluster, certs: dict[str, pki.KeyPair]) -> None:
        """The cluster DNS on CLUSTER_DNS:53, answering CLUSTER_DOMAIN from the API."""
        # CoreDNS reads Services and EndpointSlices with an identity of its own (its client certificate).
        rbac = list_watch_rbac(
            "mlsteps-coredns",
            {"": ["services", "namespaces"], "discovery.k8s.io": ["endpointslices"]},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mlsteps-coredns"},
        )
        cluster.kubectl("apply", "-f", "-", input=rbac)
        kubeconfig = self.kubeconfig("coredns", cluster.server, certs["ca"].cert, certs["coredns"])
        ready = free_port()
        (self.scratch / "Corefile").write_text(
            f"""{CLUSTER_DOMAIN}:53 {{
    bind {CLUSTER_DNS}
    ready 127.0.0.1:{ready}
    errors
    kubernetes {CLUSTER_DOMAIN} {{
        kubeconfig {kubeconfig}
    }}
}}
"""
        )
        proc = self.spawn("coredns", [str(self.bin_dir / "coredns"), "-conf", str(self.scratch / "Corefile")])
        _wait(
            "CoreDNS ready",
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{ready}/ready", timeout=2).status == 200,
            60,
            proc,
        )

    def containerd(self) -> Path:
        base = self.scratch / "containerd"
        socket_path = self.socket_path
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        cni = {
            "cniVersion": "1.0.0",
            "name": "mlsteps",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.scratch / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                # dockerd sets the FORWARD policy to DROP: this plugin lets pod traffic through.
                {"type": "firewall", "backend": "iptables"},
            ],
        }
        (self.scratch / "cni" / "net.d" / "10-mlsteps.conflist").write_text(json.dumps(cni, indent=2))
        config = f"""
version = 2
root = "{self.containerd_root}"
state = "{base / "state"}"
[grpc]
  address = "{socket_path}"
[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without it every sandbox fails here (root without CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc")}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.scratch / "cni" / "net.d"}"
    max_conf_num = 1
"""
        (base / "config.toml").write_text(config)
        proc = self.spawn(
            "containerd", ["containerd", "--config", str(base / "config.toml"), "--log-level", "warn"]
        )

        def answers() -> bool:
            cmd = ["ctr", "--address", str(socket_path), "version"]
            return subprocess.run(cmd, capture_output=True, check=False, timeout=10).returncode == 0

        _wait("containerd", answers, 60, proc)
        _remove_containers(socket_path)
        return socket_path

    def kubelet(self, server: str, certs: dict[str, pki.KeyPair], socket_path: Path) -> None:
        _make_cgroup_root(self.cgroup_root)
        resolv = self.scratch / "resolv.conf"
        # Names outside the cluster resolve nowhere (CoreDNS answers CLUSTER_DOMAIN only); pods
        # reach the host by NODE_IP.
        resolv.write_text(f"nameserver {CLUSTER_DNS}\noptions ndots:1\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(certs["ca"].cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(certs["kubelet-server"].cert),
            "tlsPrivateKeyFile": str(certs["kubelet-server"].key),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            # Kubernetes >= 1.35 refuses cgroup v1 without this; this machine has v1.
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{socket_path}",
            "resolvConf": str(resolv),
            "podLogsDir": str(self.scratch / "pod-logs"),
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [CLUSTER_DNS],
            "registerNode": True,
            "rotateCertificates": False,
            "serializeImagePulls": False,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            # No image garbage collection: nothing can pull here, so an image the kubelet removes
            # (at 85% disk use by default, counted over the whole shared disk) is gone for good.
            # It once removed the imported pause image mid-run, and no pod could start after that.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "5s",
        }
        (self.scratch / "kubelet.yaml").write_text(yaml.safe_dump(config))
        kubeconfig = self.kubeconfig("kubelet", server, certs["ca"].cert, certs["kubelet-client"])
        self.spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={self.scratch / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.scratch / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    # -- teardown ---------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Undo the run; the problems it could not fix, one line each (empty when all is clean)."""
        problems: list[str] = []
        cluster = self.cluster
        api_up = "kube-apiserver" in self.processes and self.processes["kube-apiserver"].popen.poll() is None
        kubelet_up = "kubelet" in self.processes and self.processes["kubelet"].popen.poll() is None
        if cluster is not None and api_up and kubelet_up:
            # The kubelet stops the sandboxes, which runs the CNI DEL of each pod.
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                cluster.kubectl(
                    "delete",
                    "pods",
                    "--all",
                    "--all-namespaces",
                    "--force",
                    "--grace-period=0",
                    "--wait=false",
                    timeout=30,
                )
                with contextlib.suppress(ClusterError):
                    _wait("pod sandboxes to stop", lambda: not _running_tasks(cluster.containerd_socket), 45)
        for name in ("kubelet", "kube-proxy", "coredns", "kube-scheduler", "kube-controller-manager"):
            if name in self.processes:
                self.processes[name].stop()
        if "containerd" in self.processes and self.processes["containerd"].popen.poll() is None:
            _remove_containers(self.socket_path)
        for name in ("containerd", "kube-apiserver", "etcd"):
            if name in self.processes:
                self.processes[name].stop()
        problems += _kill_strays(self.scratch)
        problems += _unmount_all(str(self.scratch), str(self.containerd_root))
        # The CRI's per-sandbox files in the kept root: nothing refers to them any more.
        for leftover in ("sandboxes", "containers"):
            shutil.rmtree(self.containerd_root / "io.containerd.grpc.v1.cri" / leftover, ignore_errors=True)
        problems += self.snapshot.restore(self.scratch)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        problems += _remove_cgroup_root(self.cgroup_root)
        return problems


def _running_tasks(socket_path: Path) -> list[str]:
    out = _ctr(socket_path, "tasks", "list", check=False, timeout=20).stdout.splitlines()[1:]
    return [line.split()[0] for line in out if line.split() and line.split()[-1] == "RUNNING"]


def _remove_containers(socket_path: Path) -> None:
    """Containers nobody else removes (left by the kubelet, or by an earlier run that crashed):
    killed and deleted with their snapshots through containerd (their shims then exit)."""
    for task in _ctr(socket_path, "tasks", "list", "--quiet", check=False, timeout=20).stdout.split():
        _ctr(socket_path, "tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=20)
    deadline = time.monotonic() + 20
    while _running_tasks(socket_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    for task in _ctr(socket_path, "tasks", "list", "--quiet", check=False, timeout=20).stdout.split():
        _ctr(socket_path, "tasks", "delete", "--force", task, check=False, timeout=20)
    for container in _ctr(
        socket_path, "containers", "list", "--quiet", check=False, timeout=20
    ).stdout.split():
        _ctr(socket_path, "containers", "delete", container, check=False, timeout=20)


def _kill_strays(scratch: Path) -> list[str]:
    """Processes still holding the scratch directory in their command line (shims): SIGKILL them."""
    mine = str(scratch)
    problems = []
    for _ in range(2):
        strays = []
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if mine in cmdline:
                strays.append((int(pid_dir.name), cmdline[:120]))
        for pid, _cmd in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not strays:
            return []
        time.sleep(1)
        problems = [f"process {pid} survived: {cmd}" for pid, cmd in strays if Path(f"/proc/{pid}").exists()]
    return problems


def _node_ready(cluster: Cluster) -> bool:
    proc = cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False, timeout=20)
    if proc.returncode:
        return False
    conditions = json.loads(proc.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


#: One test cluster per machine: they share the bridge, the pod subnet and the image store.
LOCK_FILE = Path("/run/lock/mlsteps-k8s-cluster.lock")


@contextlib.contextmanager
def _machine_lock(timeout: float) -> Iterator[None]:
    """Hold the machine's cluster lock, waiting up to ``timeout`` seconds for another run to end."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise ClusterError(
                        f"another test cluster still runs on this machine ({holder}) after {timeout:.0f} s: "
                        "wait for it to end or stop it"
                    ) from None
                time.sleep(2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_cluster(
    bin_dir: Path, images: Sequence[str] = (), scratch: Path | None = None
) -> Iterator[Cluster]:
    """Start the cluster from nothing, import ``images`` (Docker tags) into the node, yield it Ready.

    Only one runs per machine at a time: a second waits for the first (``ML_K8S_LOCK_TIMEOUT``
    seconds, default 3600).

    Raises:
        ClusterError: a component failed to start (the message ends with its log), or another
            cluster kept the machine past the timeout.
    """
    with _machine_lock(float(os.environ.get("ML_K8S_LOCK_TIMEOUT", "3600"))), contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(_running_cluster(bin_dir, images, scratch))
        except ImageStoreError as err:
            # The failed start is torn down by now. An image store kept from earlier runs can be left
            # inconsistent (once: "parent snapshot ... does not exist"): start again with an empty one.
            store = image_store()
            if store is None or _mounts_under(str(store)):
                raise
            print(
                f"\n{err}\nthe kept image store {store} is removed; starting again with an empty one",
                file=sys.stderr,
            )
            shutil.rmtree(store)
            cluster = stack.enter_context(_running_cluster(bin_dir, images, None))
        yield cluster


@contextlib.contextmanager
def _running_cluster(bin_dir: Path, images: Sequence[str], scratch: Path | None) -> Iterator[Cluster]:
    scratch = scratch or Path(tempfile.mkdtemp(prefix="mlk8s-"))
    starter = _Starter(bin_dir, scratch)
    started = False
    try:
        starter.bridge()
        certs = starter.certificates()
        etcd_url = starter.etcd()
        server, _log = starter.apiserver(certs, etcd_url)
        admin = starter.kubeconfig("admin", server, certs["ca"].cert, certs["admin"])
        starter.controllers(server, certs)
        socket_path = starter.containerd()
        cluster = Cluster(
            scratch, bin_dir, server, certs["ca"].cert, admin, socket_path, processes=starter.processes
        )
        starter.cluster = cluster
        starter.kube_proxy(server, certs)
        starter.coredns(cluster, certs)
        starter.kubelet(server, certs, socket_path)
        for tag in images:
            cluster.import_image(tag)
        _wait(f"node {NODE_NAME} Ready", lambda: _node_ready(cluster), 180, starter.processes["kubelet"])
        # The service-account controller is up once the default namespace has its account.
        _wait(
            "the default service account",
            lambda: (
                cluster.kubectl("get", "serviceaccount", "default", check=False, timeout=20).returncode == 0
            ),
            120,
            starter.processes["kube-controller-manager"],
        )
        yield cluster
        started = True
    finally:
        problems = starter.cleanup()
        # Never delete through a mount that would not come off (it could lead out of the scratch dir).
        if os.environ.get("ML_K8S_KEEP_SCRATCH") != "1" and not _mounts_under(str(scratch)):
            shutil.rmtree(scratch, ignore_errors=True)
        # After a failed start the start's own error is the one to see.
        if problems and started:
            raise ClusterError("teardown left things behind:\n" + "\n".join(problems))
