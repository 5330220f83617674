"""A cluster of network-namespace hosts for tests and benchmarks (cluster.sh does the work): bring it
up, run commands on a host, start mpirun across hosts, shape or cut links, take it down again."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "cluster.sh")


class Refused(Exception):
    """The machine will not make network namespaces (not root, no CAP_NET_ADMIN)."""


def run(cmd, timeout=600, env=None):
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    e.update(env or {})
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired as t:
        out = t.stdout.decode() if isinstance(t.stdout, bytes) else (t.stdout or "")
        return subprocess.CompletedProcess(cmd, -9, out, f"timed out after {timeout} s: {' '.join(cmd)[:200]}")


class Cluster:
    def __init__(self, root, hosts):
        self.dir = os.path.join(root, "cluster")
        r = run(["sh", CLUSTER, "up", self.dir, str(hosts), str(os.getpid())], timeout=60)
        if r.returncode != 0:
            raise Refused("network namespaces refused: " + r.stderr.strip()[-200:])
        self.prefix = open(os.path.join(self.dir, "prefix")).read().strip()
        self.inhost = os.path.join(self.dir, "inhost")

    def down(self):
        run(["sh", CLUSTER, "down", self.dir], timeout=60)

    def mpirun(self, np, hosts, cmd, extra=()):
        """mpirun started on h1: shared memory inside a host, TCP between hosts on the cluster's
        network only, OOB keepalives that notice a dead host in seconds."""
        opts = ["--mca", "plm_rsh_agent", os.path.join(self.dir, "agent"), "--mca", "pml", "ob1",
                "--mca", "btl", "vader,tcp,self", "--mca", "btl_vader_single_copy_mechanism", "none",
                "--mca", "btl_tcp_if_include", "10.77.0.0/24", "--mca", "oob_tcp_if_include", "10.77.0.0/24",
                "--mca", "btl_tcp_links", "2", "--bind-to", "none",
                "--mca", "oob_tcp_keepalive_time", "5", "--mca", "oob_tcp_keepalive_intvl", "2",
                "--mca", "oob_tcp_keepalive_probes", "3"]
        return [self.inhost, "h1", "mpirun"] + opts + list(extra) + ["-np", str(np), "--host", hosts] + cmd

    def tandem_pids(self, host):
        r = run(["ip", "netns", "pids", self.prefix + host])
        pids = []
        for p in r.stdout.split():
            try:
                exe = os.readlink(f"/proc/{p}/exe")
            except OSError:
                continue
            if os.path.basename(exe) == "tandem":
                pids.append(int(p))
        return pids

    def shape(self, rate=None, burst=None):
        """tbf-shape every host's link to `rate` (e.g. "1gbit", burst "1mb"); no rate: unshaped."""
        args = [rate, burst] if rate else []
        return run(["sh", CLUSTER, "shape", self.dir] + args).returncode == 0

    def link(self, host, state):
        return run(["sh", CLUSTER, "link", self.dir, host, state]).returncode == 0

    def bind(self, host, source, target):
        with open(os.path.join(self.dir, f"binds.{host}"), "w") as f:
            f.write(f"{source} {target}\n" if source else "")
