#!/usr/bin/env python3
"""Exact resume after kill -9 (ctest label `cpu`): a run with frequent checkpoints is killed at
random moments (some while a checkpoint is being written: TANDEM_TEST_CHECKPOINT_DELAY_MS widens
that window), resumed with --resume until it finishes, and its final weights digest must equal an
uninterrupted run's bit for bit. Also: resuming a finished run does nothing, resuming with a
different batch size or seed is refused, and a corrupted checkpoint is an error naming the file.

usage: crash_resume.py TANDEM [TRIALS]"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testdata import make_dataset  # noqa: E402

TANDEM = os.path.abspath(sys.argv[1])
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
failures = []


def digest(out):
    versions = sorted(int(v) for v in os.listdir(os.path.join(out, "model")) if v.isdigit())
    r = subprocess.run([TANDEM, "inspect", os.path.join(out, "model", str(versions[-1])), "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["digest"]


tmp = tempfile.mkdtemp(prefix="tandem-crash-")
try:
    data = make_dataset(os.path.join(tmp, "data"), 2112, 64)
    args = ["train", "--data", data, "--model", "mlp", "--epochs", "3", "--batch-size", "16", "--threads", "1",
            "--validation-size", "64", "--seed", "5", "--checkpoint-every", "9", "--keep-checkpoints", "2"]
    ref = os.path.join(tmp, "ref")
    t0 = time.time()
    subprocess.run([TANDEM] + args + ["--output", ref], check=True, stdout=subprocess.DEVNULL)
    duration = time.time() - t0
    ref_digest = digest(ref)
    print(f"uninterrupted run: {duration:.2f} s, digest {ref_digest}")

    rng = random.Random(int(os.environ.get("TANDEM_TEST_SEED", time.time())))
    exact = 0
    for trial in range(TRIALS):
        out = os.path.join(tmp, f"run{trial}")
        env = dict(os.environ)
        if trial % 2:
            env["TANDEM_TEST_CHECKPOINT_DELAY_MS"] = "20"
        kills = 0
        first = True
        while True:
            cmd = [TANDEM] + args + (["--output", out] if first else ["--resume", out])
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
            if kills < 2:
                time.sleep(rng.uniform(0.05, duration * (1.5 if trial % 2 else 0.9)))
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    kills += 1
            _, err = p.communicate(timeout=300)
            first = False
            if p.returncode == 0:
                break
            if p.returncode != -signal.SIGKILL:
                failures.append(f"trial {trial}: a resume failed with status {p.returncode}: {err.strip()[-300:]}")
                break
        if p.returncode == 0:
            d = digest(out)
            ok = d == ref_digest
            exact += ok
            print(f"trial {trial:2d}: {kills} kill(s), {'exact' if ok else 'DIFFERENT ' + d}", flush=True)
            if not ok:
                failures.append(f"trial {trial}: digest {d} after resume, expected {ref_digest}")
    print(f"{exact}/{TRIALS} exact resumes")

    # A run killed before it created its directory is restarted by the same --resume command:
    # a missing directory starts from the beginning and ends with the uninterrupted digest.
    fresh = os.path.join(tmp, "never-started")
    r = subprocess.run([TANDEM] + args + ["--resume", fresh], capture_output=True, text=True)
    if r.returncode != 0 or "starting from the beginning" not in r.stdout or digest(fresh) != ref_digest:
        failures.append(f"resume of a missing directory: status {r.returncode}: {r.stderr.strip()[-300:]}")

    # The same command again on the finished run (a job script resubmitted): nothing is trained or
    # written, no second model version.
    before = {f: open(os.path.join(fresh, f)).read() for f in ("metrics.json", "history.json")}
    r = subprocess.run([TANDEM] + args + ["--resume", fresh], capture_output=True, text=True)
    after = {f: open(os.path.join(fresh, f)).read() for f in before}
    if r.returncode != 0 or "already finished its 3 epochs" not in r.stdout or "Epoch" in r.stdout or \
            sorted(os.listdir(os.path.join(fresh, "model"))) != ["1"] or after != before:
        failures.append(f"resume of a finished run: status {r.returncode}, versions "
                        f"{sorted(os.listdir(os.path.join(fresh, 'model')))}: {r.stdout.strip()[-300:]}")

    # A resumed run must keep the original's arguments (only --epochs may grow).
    r = subprocess.run([TANDEM] + [a if a != "16" else "32" for a in args] + ["--resume", ref],
                       capture_output=True, text=True)
    if r.returncode != 2 or "batch_size was 16, now 32" not in r.stderr:
        failures.append("resume with another batch size: " + r.stderr.strip())
    more = [a if a != "3" else "4" for a in args]
    r = subprocess.run([TANDEM] + more + ["--resume", ref], capture_output=True, text=True)
    if r.returncode != 0 or "resuming from" not in r.stdout or "Epoch 4/4" not in r.stdout:
        failures.append("resume with more epochs failed: " + r.stderr.strip()[-300:])
    ckpts = os.path.join(ref, "checkpoints")
    latest = open(os.path.join(ckpts, "latest")).read().strip()
    tensors = os.path.join(ckpts, latest, "tensors.tdw")
    raw = bytearray(open(tensors, "rb").read())
    raw[len(raw) // 2] ^= 0x04
    open(tensors, "wb").write(bytes(raw))
    r = subprocess.run([TANDEM] + more + ["--resume", ref], capture_output=True, text=True)
    if r.returncode != 2 or "tensors.tdw" not in r.stderr or "checksum" not in r.stderr:
        failures.append(f"corrupted checkpoint: status {r.returncode}: {r.stderr.strip()[-300:]}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("all resumes exact")
