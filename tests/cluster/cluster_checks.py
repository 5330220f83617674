#!/usr/bin/env python3
"""Multi-host checks on a cluster of network-namespace hosts (ctest label `cluster`; tests/cluster/
cluster.sh builds it): mpirun starts ranks on two hosts through an rsh agent, MPI's TCP transport
crosses a real (virtual) network between them, shared memory stays inside a host, and Tandem finds
the nodes itself (MPI_COMM_TYPE_SHARED; no TANDEM_RANKS_PER_NODE).

  equivalence  2 hosts x 1 rank and 2 hosts x 2 ranks (the two-level all-reduce, chosen by itself)
               with --batch-invariant 8 give one process's weights bit for bit (max_abs_diff 0) for
               the mlp with Adam and the cnn with SGD; without it the mlp within max_rel_diff 1e-4;
  faults       kill -9 of a rank on host 2 ends the job within 60 s with no rank left on any host;
               host 2's link taken down mid-epoch: the watchdog names the unreachable rank and the job
               ends within --collective-timeout + 30 s on both hosts; the same command line, run
               again, resumes from the last committed checkpoint and ends bit-identical to an
               uninterrupted run;
  agreement    a host whose copy of a data file differs is refused at start-up, naming the host, its
               ranks and the file.

Where namespaces cannot be made (not root, no CAP_NET_ADMIN), every check reports skipped (77).

  slurm        a real Slurm (munged, slurmctld, two slurmd) on the hosts: `srun --mpi=pmix -N2 -n4`
               equals one process bit for bit (--batch-invariant), srun without PMIx is refused with
               the hint, and examples/slurm/train.sbatch submitted with `sbatch --wait` completes with
               the same weights.

usage: cluster_checks.py TANDEM [equivalence|faults|agreement|slurm|gloo ...]
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from testdata import make_dataset  # noqa: E402
from cluster import Cluster, Refused, run  # noqa: E402

TANDEM = os.path.abspath(sys.argv[1])
WHICH = sys.argv[2:] or ["equivalence", "faults", "agreement", "slurm", "gloo"]
failures = []


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


if "slurm" in WHICH:
    for tool in ("munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo", "runuser"):
        if not shutil.which(tool):
            skip(f"{tool} not found (apt-get install slurmd slurmctld slurm-client munge)")
if os.geteuid() != 0:
    skip("the cluster tests need root to create network namespaces")
if not shutil.which("mpirun"):
    skip("mpirun not found (apt-get install openmpi-bin)")
for tool in ("ip", "nsenter", "unshare", "ping"):
    if not shutil.which(tool):
        skip(f"{tool} not found (apt-get install iproute2 util-linux iputils-ping)")


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name + ": " + detail)


def compare(a, b, key):
    r = run([TANDEM, "inspect", a, "--compare", b, "--json"])
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:]
    return json.loads(r.stdout)["compare"][key], ""


slurm_daemons = []  # pid files of the daemons to stop


def slurm_check(cluster, tmp, base):
    """A real Slurm on the namespace hosts: munged (one, in the machine's namespace, serving all hosts
    through its socket), slurmctld on h1, slurmd on h1 and h2."""
    import pwd
    S = os.path.join(tmp, "slurm")
    for d in ("munge", "state", "log", "spool/h1", "spool/h2", "tmpfs/h1", "tmpfs/h2"):
        os.makedirs(os.path.join(S, d), exist_ok=True)
    munge = pwd.getpwnam("munge")
    key = os.path.join(S, "munge", "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o600)
    for path in (key, os.path.join(S, "munge")):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    os.chmod(os.path.join(S, "munge"), 0o755)  # munged refuses a socket directory that is not 755
    os.chmod(tmp, 0o755)
    m = os.path.join(S, "munge")
    r = run(["runuser", "-u", "munge", "--", "munged", f"--socket={m}/munge.socket", f"--key-file={key}",
             f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
    check("slurm: munged starts", r.returncode == 0, r.stderr.strip()[-300:])
    slurm_daemons.append(f"{m}/munged.pid")
    conf = os.path.join(S, "slurm.conf")
    with open(conf, "w") as f:
        f.write(f"""ClusterName=tandemtest
SlurmctldHost=h1(10.77.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={m}/munge.socket
CredType=cred/munge
StateSaveLocation={S}/state
SlurmdSpoolDir={S}/spool/%n
TmpFS={S}/tmpfs/%n
SlurmctldPidFile={S}/slurmctld.pid
SlurmdPidFile={S}/slurmd.%n.pid
SlurmctldLogFile={S}/log/slurmctld.log
SlurmdLogFile={S}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=h1 NodeAddr=10.77.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
NodeName=h2 NodeAddr=10.77.0.2 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=h[1-2] Default=YES MaxTime=10 State=UP OverSubscribe=YES
""")
    env = {"SLURM_CONF": conf, "OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "vader,tcp,self",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "OMPI_MCA_btl_tcp_if_include": "10.77.0.0/24",
           "OMPI_MCA_oob_tcp_if_include": "10.77.0.0/24"}
    slurm_daemons.extend([f"{S}/slurmctld.pid", f"{S}/slurmd.h1.pid", f"{S}/slurmd.h2.pid"])
    for host, daemon in (("h1", "slurmctld"), ("h1", "slurmd"), ("h2", "slurmd")):
        r = run([cluster.inhost, host, daemon], env=env, timeout=60)
        check(f"slurm: {daemon} starts on {host}", r.returncode == 0, r.stderr.strip()[-300:])
    idle = ""
    for _ in range(100):
        idle = run([cluster.inhost, "h1", "sinfo", "-h", "-o", "%T %D"], env=env).stdout.strip()
        if idle == "idle 2":
            break
        time.sleep(0.2)
    check("slurm: both nodes idle", idle == "idle 2", idle)
    srun = [cluster.inhost, "h1", "srun", "--immediate=30", "-N2"]
    r = run(srun + ["-n2", "-l", "hostname"], env=env, timeout=120)
    check("slurm: srun -N2 runs a task on each host", sorted(r.stdout.split("\n")[:2]) == ["0: h1", "1: h2"],
          r.stdout.strip() + r.stderr.strip()[-300:])

    args = base + ["--model", "mlp", "--epochs", "1", "--batch-size", "64", "--optimizer", "adam",
                   "--batch-invariant", "8"]
    single = os.path.join(tmp, "slurm-single")
    r = run([TANDEM] + args + ["--output", single])
    check("slurm: one process trains", r.returncode == 0, r.stderr.strip()[-300:])
    out = os.path.join(tmp, "slurm-srun")
    r = run(srun + ["--mpi=pmix", "-n4", "--ntasks-per-node=2", TANDEM] + args +
            ["--strategy", "multi-worker", "--output", out], env=env, timeout=300)
    check("slurm: srun --mpi=pmix -N2 -n4 trains (2 per node, two-level all-reduce)",
          r.returncode == 0 and "mpi-hierarchical" in r.stdout and "2 per node" in r.stdout,
          f"status {r.returncode}: " + r.stderr.strip()[-300:])
    diff, err = compare(os.path.join(out, "model", "1"), os.path.join(single, "model", "1"), "max_abs_diff")
    check(f"slurm: srun --mpi=pmix -N2 -n4 equals one process bit for bit (max_abs_diff {diff})", diff == 0, err)

    r = run(srun + ["-n2", TANDEM] + args + ["--strategy", "multi-worker"], env=env, timeout=120)
    check("slurm: srun without --mpi=pmix is refused with the hint",
          r.returncode != 0 and "without PMIx" in r.stderr and "srun --mpi=pmix" in r.stderr,
          f"status {r.returncode}: " + r.stderr.strip()[-300:])

    # The example job script, as a user submits it.
    script = os.path.join(HERE, "..", "..", "examples", "slurm", "train.sbatch")
    out = os.path.join(tmp, "slurm-sbatch")
    log = os.path.join(tmp, "sbatch.log")
    r = run([cluster.inhost, "h1", "sbatch", "--wait", "-N2", "--ntasks-per-node=2", "--time=5",
             f"--output={log}", f"--chdir={tmp}", script] + args[1:],
            env=dict(env, TANDEM=TANDEM, OUTPUT=out), timeout=300)
    text = open(log).read() if os.path.exists(log) else ""
    check("slurm: sbatch examples/slurm/train.sbatch runs to completion",
          r.returncode == 0 and os.path.isdir(os.path.join(out, "model", "1")),
          f"status {r.returncode}: " + (r.stderr + text).strip()[-400:])
    diff, err = compare(os.path.join(out, "model", "1"), os.path.join(single, "model", "1"), "max_abs_diff")
    check(f"slurm: the sbatch run equals one process bit for bit (max_abs_diff {diff})", diff == 0, err)


def start_workers(cluster, args, envs, hosts, log):
    """Workers started by hand, without mpirun: rank r on hosts[r] with envs[r] added."""
    procs = []
    for r, (host, extra) in enumerate(zip(hosts, envs)):
        e = dict(os.environ, **extra)
        procs.append(subprocess.Popen([cluster.inhost, host, TANDEM] + args, stdout=open(f"{log}.{r}.out", "w"),
                                      stderr=open(f"{log}.{r}.err", "w"), env=e))
    return procs


def wait_workers(procs, log, timeout):
    """Waits for every worker (killing what is left at the timeout); returns (statuses, seconds, stderr of rank 0
    and of all, stdout of rank 0)."""
    start = time.time()
    for p in procs:
        try:
            p.wait(timeout=max(1, timeout - (time.time() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    took = time.time() - start
    errs = [open(f"{log}.{r}.err").read() for r in range(len(procs))]
    return [p.returncode for p in procs], took, errs, open(f"{log}.0.out").read()


def tf_configs(addresses, cluster_of=None):
    cl = {"worker": addresses}
    return [{"TF_CONFIG": json.dumps({"cluster": cluster_of or cl, "task": {"type": "worker", "index": i}})}
            for i in range(len(addresses))]


def torchrun_vars(master, size):
    return [{"MASTER_ADDR": master, "MASTER_PORT": "29500", "RANK": str(r), "WORLD_SIZE": str(size),
             "LOCAL_RANK": str(r % 2)} for r in range(size)]


def gloo_check(cluster, tmp, base, out_dir):
    """Issue 20: jobs launched without mpirun, by TF_CONFIG or torchrun's variables, over Gloo."""
    hosts4 = ["h1", "h1", "h2", "h2"]
    addresses = ["h1:2222", "h1:2223", "h2:2222", "h2:2223"]
    cases = [("TF_CONFIG", "mlp", "adam", ["--batch-invariant", "8"], "max_abs_diff", 0.0),
             ("TF_CONFIG", "cnn", "sgd", ["--batch-invariant", "8"], "max_abs_diff", 0.0),
             ("torchrun", "mlp", "adam", ["--batch-invariant", "8"], "max_abs_diff", 0.0),
             ("torchrun", "mlp", "sgd", ["--check-replicas", "3"], "max_rel_diff", 1e-4)]
    singles = {}
    for launch, model, opt, extra, key, limit in cases:
        args = base + ["--model", model, "--epochs", "1", "--batch-size", "64", "--optimizer", opt] + extra
        name = f"gloo {launch} {model}/{opt} {' '.join(extra)}".rstrip()
        single = singles.get(" ".join(args))
        if not single:
            single = out_dir(name + " single")
            r = run([TANDEM] + args + ["--output", single])
            check(f"{name}: one process trains", r.returncode == 0, r.stderr.strip()[-300:])
            singles[" ".join(args)] = single
        out = out_dir(name)
        envs = tf_configs(addresses) if launch == "TF_CONFIG" else torchrun_vars("h1", 4)
        procs = start_workers(cluster, args + ["--strategy", "multi-worker", "--output", out], envs, hosts4, out)
        codes, took, errs, out0 = wait_workers(procs, out, 600)
        check(f"{name}: 4 workers started by hand on 2 hosts train over Gloo, 2 per node ({took:.0f} s)",
              codes == [0, 0, 0, 0] and f"launched by {launch}" in out0 and "gloo" in out0 and "2 per node" in out0,
              f"status {codes}: {out0.strip()[:300]} {errs[0].strip()[-300:]}")
        diff, err = compare(os.path.join(out, "model", "1"), os.path.join(single, "model", "1"), key)
        check(f"{name}: equals one process ({key} {diff}, limit {limit:g})", diff is not None and diff <= limit, err)

    mlp = base + ["--model", "mlp", "--epochs", "1000", "--batch-size", "8", "--strategy", "multi-worker",
                  "--collective-timeout", "8"]
    # A worker that never starts: the others stop at start-up, the missing one named.
    out = out_dir("gloo missing")
    procs = start_workers(cluster, mlp + ["--output", out], tf_configs(addresses)[:3], hosts4[:3], out)
    codes, took, errs, _ = wait_workers(procs, out, 60)
    check(f"gloo: a worker that never starts stops the others at start-up, named ({took:.0f} s)",
          all(c not in (0, None) for c in codes) and "never reached the rendezvous" in errs[0] and
          "worker 3 (h2:2223)" in errs[0] and all("tandem" in e for e in errs) and took < 40,
          f"status {codes}: {errs[0].strip()[-300:]}")
    # A worker started with another cluster: every rank stops at start-up, exit 2, the worker named.
    out = out_dir("gloo other config")
    envs = tf_configs(addresses)
    envs[3] = tf_configs(addresses[:3] + ["h2:2224"])[3]
    procs = start_workers(cluster, mlp + ["--output", out], envs, hosts4, out)
    codes, took, errs, _ = wait_workers(procs, out, 60)
    check(f"gloo: a worker with another TF_CONFIG stops every rank at start-up, named ({took:.0f} s)",
          codes == [2, 2, 2, 2] and "worker 3 (h2:2223) on host h2 was started with another TF_CONFIG" in errs[0]
          and all("hint:" in e for e in errs), f"status {codes}: {errs[0].strip()[-300:]} | {errs[3].strip()[-200:]}")
    # kill -9 of a worker on h2 mid-run: every other worker ends within the collective timeout.
    out = out_dir("gloo kill")
    procs = start_workers(cluster, mlp + ["--output", out], torchrun_vars("h1", 4), hosts4, out)
    victim, start = None, time.time()
    while time.time() - start < 60 and victim is None and all(p.poll() is None for p in procs):
        time.sleep(0.5)
        if len(cluster.tandem_pids("h1")) == 2 and len(cluster.tandem_pids("h2")) == 2:
            time.sleep(2)
            victim = max(cluster.tandem_pids("h2"))
            os.kill(victim, signal.SIGKILL)
    codes, took, errs, _ = wait_workers(procs, out, 60)
    check(f"gloo: kill -9 of a worker on h2 ends every worker non-zero within --collective-timeout ({took:.0f} s)",
          victim is not None and all(c != 0 for c in codes) and took <= 8 + 5 and "is gone" in errs[0],
          f"status {codes}: {errs[0].strip()[-300:]}")
    time.sleep(1)
    left = cluster.tandem_pids("h1") + cluster.tandem_pids("h2")
    check("gloo: no worker left on any host after the kill", not left, f"left: {left}")

    # h2's link down mid-run: the watchdog names the unreachable rank; the same launch resumes and
    # ends bit-identical to an uninterrupted run.
    timeout_s = 8
    args = base + ["--model", "mlp", "--epochs", "6", "--batch-size", "16", "--optimizer", "adam",
                   "--batch-invariant", "8", "--checkpoint-every", "8"]
    ref = out_dir("gloo partition reference")
    r = run([TANDEM] + args + ["--output", ref])
    check("gloo partition: the uninterrupted reference trains", r.returncode == 0, r.stderr.strip()[-300:])
    out = out_dir("gloo partition")
    job = args + ["--strategy", "multi-worker", "--collective-timeout", str(timeout_s), "--resume", out]
    envs = tf_configs(["h1:2222", "h2:2222"])
    procs = start_workers(cluster, job, envs, ["h1", "h2"], out)
    ckpts = os.path.join(out, "checkpoints")
    start, cut = time.time(), None
    while time.time() - start < 120 and all(p.poll() is None for p in procs) and cut is None:
        time.sleep(0.2)
        if os.path.isdir(ckpts) and len([n for n in os.listdir(ckpts) if n.startswith("ckpt-")]) >= 2:
            cut = time.time()
            cluster.link("h2", "down")
    codes, _, errs, _ = wait_workers(procs, out, timeout_s + 60)
    took = time.time() - cut if cut else -1
    check("gloo partition: h2's link went down mid-run", cut is not None, "no checkpoint was committed first")
    check(f"gloo partition: every worker ends non-zero within --collective-timeout + 30 s ({took:.0f} s)",
          cut is not None and all(c not in (0, None, -9) for c in codes) and took <= timeout_s + 30, f"status {codes}")
    check("gloo partition: the watchdog names the unreachable rank and its host",
          "unreachable: rank(s) 1 (h2) sent no heartbeat" in errs[0], errs[0].strip()[-400:])
    time.sleep(1)
    left = cluster.tandem_pids("h1") + cluster.tandem_pids("h2")
    check("gloo partition: no worker left on any host", not left, f"left: {left}")
    cluster.link("h2", "up")
    procs = start_workers(cluster, job, envs, ["h1", "h2"], out + "-again")
    codes, _, errs, out0 = wait_workers(procs, out + "-again", 600)
    check("gloo partition: the same launch resumes and finishes", codes == [0, 0] and "resum" in (out0 + errs[0]).lower(),
          f"status {codes}: " + errs[0].strip()[-300:])
    diff, err = compare(os.path.join(out, "model", "1"), os.path.join(ref, "model", "1"), "max_abs_diff")
    check(f"gloo partition: the resumed run equals the uninterrupted one bit for bit (max_abs_diff {diff})",
          diff == 0, err)


tmp = tempfile.mkdtemp(prefix="tandem-cluster-")
cluster = None
try:
    try:
        cluster = Cluster(tmp, 2)
    except Refused as e:
        skip(str(e))
    print(f"cluster up: hosts h1, h2 in namespaces {cluster.prefix}h1, {cluster.prefix}h2", flush=True)
    data = make_dataset(os.path.join(tmp, "data"), 576, 64)
    base = ["train", "--data", data, "--validation-size", "64", "--threads", "1", "--seed", "11"]
    layouts = {"2 hosts x 1 rank": (2, "h1,h2", "1 per node"), "2 hosts x 2 ranks": (4, "h1:2,h2:2", "2 per node")}

    def out_dir(label):
        return os.path.join(tmp, "".join(c if c.isalnum() else "-" for c in label))

    if "equivalence" in WHICH:
        # One sgemm kernel family for every process, the single one included (see tests/mpi/
        # mpi_checks.py): the check without --batch-invariant is about the strategy, not about
        # OpenBLAS's blockings. The ranks inherit it (the agent starts them from mpirun's environment).
        if "OPENBLAS_CORETYPE" not in os.environ and "avx2" in open("/proc/cpuinfo").read():
            os.environ["OPENBLAS_CORETYPE"] = "Haswell"
        cases = [("mlp", "adam", ["--batch-invariant", "8"], "max_abs_diff", 0.0),
                 ("cnn", "sgd", ["--batch-invariant", "8"], "max_abs_diff", 0.0),
                 ("mlp", "sgd", [], "max_rel_diff", 1e-4)]
        for model, opt, extra, key, limit in cases:
            args = base + ["--model", model, "--epochs", "1", "--batch-size", "64", "--optimizer", opt] + extra
            name = f"{model}/{opt}{' --batch-invariant 8' if extra else ''}"
            single = out_dir(name + " single")
            r = run([TANDEM] + args + ["--output", single])
            check(f"{name}: one process trains", r.returncode == 0, r.stderr.strip()[-300:])
            for label, (np, hosts, per_node) in layouts.items():
                out = out_dir(name + label)
                r = run(cluster.mpirun(np, hosts, [TANDEM] + args + ["--strategy", "multi-worker", "--output", out]),
                        timeout=600)
                hier = "mpi-hierarchical" in r.stdout
                ok = r.returncode == 0 and per_node in r.stdout and hier == (np == 4)
                check(f"{name}: {label} trains ({per_node}{', two-level all-reduce' if np == 4 else ''})", ok,
                      f"status {r.returncode}: " + (r.stdout.strip()[:200] + r.stderr.strip()[-300:]))
                diff, err = compare(os.path.join(out, "model", "1"), os.path.join(single, "model", "1"), key)
                check(f"{name}: {label} equals one process ({key} {diff}, limit {limit:g})",
                      diff is not None and diff <= limit, err)

    if "faults" in WHICH:
        # kill -9 of a rank on host 2, mid-epoch.
        out = out_dir("kill")
        cmd = cluster.mpirun(4, "h1:2,h2:2", [TANDEM] + base + ["--model", "mlp", "--epochs", "1000", "--batch-size",
                                                                 "8", "--strategy", "multi-worker", "--output", out])
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        victim, start = None, time.time()
        while time.time() - start < 60 and victim is None and p.poll() is None:
            time.sleep(0.5)
            if len(cluster.tandem_pids("h1")) == 2 and len(cluster.tandem_pids("h2")) == 2:
                time.sleep(2)
                victim = cluster.tandem_pids("h2")[-1]
                os.kill(victim, signal.SIGKILL)
                killed = time.time()
        try:
            p.wait(timeout=60)
            ended = time.time() - killed if victim else -1
            check("kill -9 of a rank on h2 ends the job non-zero within 60 s",
                  victim is not None and p.returncode != 0, f"status {p.returncode} after {ended:.0f} s")
        except subprocess.TimeoutExpired:
            p.kill()
            check("kill -9 of a rank on h2 ends the job non-zero within 60 s", False, "still running after 60 s")
        time.sleep(1)
        left = cluster.tandem_pids("h1") + cluster.tandem_pids("h2")
        check("no rank left on any host after the kill", not left, f"left: {left}")

        # h2's link down mid-epoch, then the same command line again: it resumes and ends as an
        # uninterrupted run does, bit for bit (--batch-invariant).
        timeout_s = 8
        args = base + ["--model", "mlp", "--epochs", "6", "--batch-size", "16", "--optimizer", "adam",
                       "--batch-invariant", "8", "--checkpoint-every", "8"]
        ref = out_dir("partition reference")
        r = run([TANDEM] + args + ["--output", ref])
        check("partition: the uninterrupted reference trains", r.returncode == 0, r.stderr.strip()[-300:])
        out = out_dir("partition")
        cmd = cluster.mpirun(2, "h1,h2", [TANDEM] + args + ["--strategy", "multi-worker", "--collective-timeout",
                                                             str(timeout_s), "--resume", out])
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        ckpts = os.path.join(out, "checkpoints")
        start, cut = time.time(), None
        while time.time() - start < 120 and p.poll() is None and cut is None:
            time.sleep(0.2)
            if os.path.isdir(ckpts) and len([n for n in os.listdir(ckpts) if n.startswith("ckpt-")]) >= 2:
                cut = time.time()
                cluster.link("h2", "down")
        try:
            _, err = p.communicate(timeout=timeout_s + 60)
            took = time.time() - cut if cut else -1
            check("partition: h2's link went down mid-run", cut is not None, "no checkpoint was committed before the job ended")
            check(f"partition: the job ends non-zero within --collective-timeout + 30 s ({took:.0f} s)",
                  cut is not None and p.returncode != 0 and took <= timeout_s + 30, f"status {p.returncode}")
            check("partition: the watchdog names the unreachable rank and its host",
                  "unreachable: rank(s) 1 (h2) sent no heartbeat" in err, err.strip()[-400:])
        except subprocess.TimeoutExpired:
            p.kill()
            check(f"partition: the job ends within --collective-timeout + 30 s", False, "still running")
        time.sleep(1)
        left = cluster.tandem_pids("h1") + cluster.tandem_pids("h2")
        check("partition: no rank left on any host", not left, f"left: {left}")
        cluster.link("h2", "up")
        r = run(cmd, timeout=600)
        check("partition: the same command line resumes and finishes", r.returncode == 0 and
              "resum" in (r.stdout + r.stderr).lower(), f"status {r.returncode}: " + r.stderr.strip()[-300:])
        diff, err = compare(os.path.join(out, "model", "1"), os.path.join(ref, "model", "1"), "max_abs_diff")
        check(f"partition: the resumed run equals the uninterrupted one bit for bit (max_abs_diff {diff})",
              diff == 0, err)

    if "agreement" in WHICH:
        # h2 sees another file at the same path (its own disk): refused before training.
        other = make_dataset(os.path.join(tmp, "other-data"), 576, 64, seed=8)
        target = os.path.join(data, "train-images-idx3-ubyte.gz")
        cluster.bind("h2", os.path.join(other, "train-images-idx3-ubyte.gz"), target)
        start = time.time()
        r = run(cluster.mpirun(4, "h1:2,h2:2", [TANDEM] + base + ["--model", "mlp", "--epochs", "1",
                                                                   "--strategy", "multi-worker"]), timeout=120)
        cluster.bind("h2", None, None)
        took = time.time() - start
        want = f"the input file {target} differs between ranks: host h2 (rank(s) 2, 3) read different contents " \
               "from rank 0 on host h1"
        check(f"a host with another copy of a data file is refused at start-up ({took:.0f} s)",
              r.returncode == 2 and want in r.stderr and "hint:" in r.stderr and took < 60,
              f"status {r.returncode}: " + r.stderr.strip()[-400:])
    if "slurm" in WHICH:
        slurm_check(cluster, tmp, base)
    if "gloo" in WHICH:
        gloo_check(cluster, tmp, base, out_dir)
finally:
    if slurm_daemons:
        for pidfile in slurm_daemons:
            try:
                os.kill(int(open(pidfile).read().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
    if cluster:
        cluster.down()
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("all cluster checks passed")
