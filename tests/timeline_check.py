#!/usr/bin/env python3
"""--timeline FILE: valid Trace Event Format JSON (chrome://tracing, Perfetto) with one process per
rank and, per training step, the expected phases inside the step's span: one process; mirrored x2
(local reduce); multi-worker under mpirun -np 2 (every bucket's all-reduce on the all-reduce thread,
from hand-off to completion, and the wait for them); checkpoint snapshots; a bad FILE refused."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testdata import make_dataset  # noqa: E402

TANDEM = os.path.abspath(sys.argv[1])
MPIRUN = shutil.which("mpirun")
MPI = [MPIRUN, "--oversubscribe", "--allow-run-as-root", "--mca", "btl_vader_single_copy_mechanism", "none"]
failures = []
PHASES = ("data", "forward", "backward", "optimizer", "callbacks")


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(name + ": " + detail)


def run(cmd, expect_ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if (r.returncode == 0) != expect_ok:
        failures.append(f"{' '.join(cmd[-12:])}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


def load(path, name):
    try:
        trace = json.load(open(path))
    except (OSError, ValueError) as e:
        check(f"{name}: the timeline is valid JSON", False, str(e))
        return None
    events = trace.get("traceEvents", [])
    ok = all(e.get("ph") in ("X", "M") and isinstance(e.get("pid"), int) for e in events) and all(
        isinstance(e.get("ts"), int) and e["ts"] >= 0 and isinstance(e.get("dur"), int) and e["dur"] >= 0
        and isinstance(e.get("tid"), int) for e in events if e["ph"] == "X")
    check(f"{name}: valid Trace Event Format (X events with pid, tid, ts, dur; M metadata)", ok and bool(events))
    return events


def check_steps(events, name, ranks, steps, extra=()):
    pids = sorted({e["pid"] for e in events})
    check(f"{name}: one process per rank", pids == list(range(ranks)), str(pids))
    labels = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    check(f"{name}: processes named by rank", all(labels.get(r, "").startswith(f"rank {r} ") for r in range(ranks)),
          str(labels))
    for r in range(ranks):
        mine = [e for e in events if e["pid"] == r and e["ph"] == "X"]
        spans = sorted((e for e in mine if e["name"] == "step"), key=lambda e: e["ts"])
        check(f"{name}: rank {r} has {steps} step spans, args.step 0..{steps - 1}",
              [e["args"]["step"] for e in spans] == list(range(steps)), str([e.get("args") for e in spans][:5]))
        counts = Counter(e["name"] for e in mine)
        for phase in PHASES + tuple(extra):
            check(f"{name}: rank {r} has one '{phase}' per step", counts[phase] == steps, f"{counts[phase]} vs {steps}")
        # Every phase of the training thread lies inside one step's span.
        tid = spans[0]["tid"] if spans else -1
        inside = all(any(s["ts"] <= e["ts"] and e["ts"] + e["dur"] <= s["ts"] + s["dur"] for s in spans)
                     for e in mine if e["tid"] == tid and e["name"] in PHASES + tuple(extra))
        check(f"{name}: rank {r}'s phases lie inside their step", inside)
        order = [e["name"] for e in sorted(mine, key=lambda e: (e["ts"], -e["dur"])) if e["tid"] == tid
                 and e["name"] in ("step", "data", "forward", "backward", "optimizer")][:5]
        check(f"{name}: rank {r}'s first step runs step > data > forward > backward > optimizer",
              order == ["step", "data", "forward", "backward", "optimizer"], str(order))


tmp = tempfile.mkdtemp(prefix="tandem-timeline-")
try:
    data = make_dataset(os.path.join(tmp, "data"), 576, 64)
    # 512 training samples in batches of 32: 16 steps an epoch.
    base = ["train", "--data", data, "--validation-size", "64", "--threads", "1", "--batch-size", "32"]

    path = os.path.join(tmp, "one.json")
    out = os.path.join(tmp, "run")
    run([TANDEM] + base + ["--epochs", "2", "--timeline", path, "--output", out, "--checkpoint-every", "8"])
    events = load(path, "one process")
    if events:
        check_steps(events, "one process", 1, 32)
        snaps = [e for e in events if e["name"] == "checkpoint snapshot"]
        check("one process: a checkpoint snapshot every 8 steps", len(snaps) == 4, str(len(snaps)))

    path = os.path.join(tmp, "mirrored.json")
    run([TANDEM] + base + ["--epochs", "1", "--strategy", "mirrored", "--devices", "cpu:0,cpu:1", "--timeline", path])
    events = load(path, "mirrored x2")
    if events:
        # Two replicas in one process: their data, forward and backward each twice per step.
        counts = Counter(e["name"] for e in events)
        check("mirrored x2: one local reduce per step, data/forward/backward per replica",
              counts["local reduce"] == 16 and counts["forward"] == 32 and counts["backward"] == 32, str(counts))

    if MPIRUN:
        path = os.path.join(tmp, "mpi.json")
        r = run(MPI + ["-np", "2", TANDEM] + base + ["--epochs", "1", "--strategy", "multi-worker", "--model", "cnn",
                                                    "--bucket-mb", "0.01", "--timeline", path])
        m = re.search(r"(\d+) gradient buckets", r.stdout)
        buckets = int(m.group(1)) if m else 0
        check("mpi -np 2: the job names its gradient buckets", buckets > 1, r.stdout[-300:])
        events = load(path, "mpi -np 2")
        if events:
            check_steps(events, "mpi -np 2", 2, 16, extra=("allreduce wait",))
            for rank in (0, 1):
                per_step = defaultdict(list)
                threads = {e["tid"]: e["args"]["name"] for e in events if e["pid"] == rank and e["name"] == "thread_name"}
                mine = [e for e in events if e["pid"] == rank and e["name"] == "allreduce bucket"]
                steps = sorted((e for e in events if e["pid"] == rank and e["name"] == "step"), key=lambda e: e["ts"])
                for e in mine:
                    owner = [s["args"]["step"] for s in steps if s["ts"] <= e["ts"] <= s["ts"] + s["dur"]]
                    per_step[owner[0] if owner else -1].append(e["args"]["bucket"])
                check(f"mpi -np 2: rank {rank} reduces buckets 0..{buckets - 1} in every step, in order",
                      sorted(per_step) == list(range(16)) and all(v == list(range(buckets)) for v in per_step.values()),
                      str(dict(list(per_step.items())[:3])))
                check(f"mpi -np 2: rank {rank}'s buckets on its all-reduce thread",
                      any(threads.get(e["tid"]) == "allreduce" for e in mine), str(threads))
    else:
        print("SKIP: mpirun not found: the multi-worker timeline is not checked")

    r = run([TANDEM] + base + ["--epochs", "1", "--timeline", os.path.join(tmp, "missing", "t.json")], expect_ok=False)
    check("--timeline in a missing directory: exit 2 naming --timeline", r.returncode == 2 and "--timeline" in r.stderr,
          f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("the timeline holds every rank's steps and phases")
