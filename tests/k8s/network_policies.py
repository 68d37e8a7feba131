"""NetworkPolicy enforcement for the test cluster: kube-network-policies, SIG Network's own
implementation (sigs.k8s.io/kube-network-policies), run beside the node as its DaemonSet runs it.

The bridge CNI enforces no NetworkPolicy. kube-network-policies does, on any CNI: its nftables rules
hand the first packet of every new pod connection to an NFQUEUE, and its controller accepts or drops
it by the policies that select the two pods (watched through the API). It runs here as a host
process, in the host's network namespace as its DaemonSet's ``hostNetwork`` pod does, and in a mount
namespace of its own, where the token of its ServiceAccount (the ClusterRole of its install.yaml)
sits at the path client-go's in-cluster config reads; the host's filesystem is not touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tests.k8s.cluster import Cluster, ClusterError, _Process, _wait, free_port, list_watch_rbac

BINARY = "kube-network-policies"
#: Its nftables table (family inet): present from the controller's first sync, removed on SIGINT.
TABLE = "kube-network-policies"
#: The queue of its install.yaml (its default, 100, is left to anything else on the host).
QUEUE_ID = 98
ACCOUNT = "kube-network-policies"
#: Its ServiceAccount, and the rights of its install.yaml's ClusterRole.
RBAC = "---\n".join(
    [
        f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {ACCOUNT}, namespace: kube-system}}\n",
        list_watch_rbac(
            ACCOUNT,
            {"": ["pods", "namespaces"], "networking.k8s.io": ["networkpolicies"]},
            {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": "kube-system"},
        ),
    ]
)
#: Mounts a private /run (so /var/run) in the new mount namespace, puts the in-cluster credentials
#: where client-go looks, and becomes the controller. $1 credentials dir, $2 binary, then its flags.
IN_CLUSTER = """set -eu
mount -t tmpfs -o size=1m,mode=0755 mlsteps-netpol /run
account=/var/run/secrets/kubernetes.io/serviceaccount
mkdir -p "$account" && cp "$1/token" "$1/ca.crt" "$1/namespace" "$account/"
binary=$2; shift 2
exec "$binary" "$@"
"""


def table_present() -> bool:
    """Whether the controller's nftables table is installed on the host."""
    done = subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def enforcing(cluster: Cluster, timeout: float = 60) -> Iterator[Path]:
    """NetworkPolicies enforced while the block runs; yields the controller's log.

    Fail-open: a packet the controller cannot decide (it is stopping) is accepted, so that a test
    that dies here cannot cut the network of the tests after it; the table is removed on the way out.

    Raises:
        ClusterError: The binary is not built, ``nft`` is missing, or the controller did not install
            its rules within ``timeout`` seconds.
    """
    binary = cluster.bin_dir / BINARY
    if not binary.exists() or shutil.which("nft") is None:
        raise ClusterError(f"{binary} or nft is missing: run tests/k8s/build_binaries.sh, install nftables")
    cluster.kubectl("apply", "-f", "-", input=RBAC)
    credentials = cluster.scratch / "netpol-account"
    credentials.mkdir(exist_ok=True)
    token = cluster.kubectl("create", "token", ACCOUNT, "-n", "kube-system", "--duration", "2h").stdout
    (credentials / "token").write_text(token.strip())
    (credentials / "namespace").write_text("kube-system")
    shutil.copy(cluster.ca_file, credentials / "ca.crt")
    server = urlsplit(cluster.server)
    env = {
        **os.environ,
        "KUBERNETES_SERVICE_HOST": str(server.hostname),
        "KUBERNETES_SERVICE_PORT": str(server.port or 443),
    }
    flags = [
        f"--hostname-override={cluster.node_name}",
        f"--nfqueue-id={QUEUE_ID}",
        f"--metrics-bind-address=127.0.0.1:{free_port()}",
        "--fail-open",
        "--netfilter-bug-1766-fix=false",  # a fix for kernels before 6.12 that costs a DNS hook
        "--v=2",
    ]
    log = cluster.logs / f"{BINARY}.log"
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_CLUSTER, "netpol"]
    with log.open("ab") as out:
        popen = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [*argv, str(credentials), str(binary), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    process = _Process(BINARY, popen, log)
    try:
        _wait(f"{BINARY} to install its nftables table", table_present, timeout, process)
        yield log
    finally:
        process.stop(grace=20, signum=signal.SIGINT)  # its handler removes its table
        if table_present():  # it did not clean up: never leave packets queued to nobody
            subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True, check=False)
