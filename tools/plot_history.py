#!/usr/bin/env python3
"""Plots of a `tandem train` run, as Keras users plot theirs with pandas and matplotlib.

  tools/plot_history.py RUN_DIR -o curves.png
      the learning curves from RUN_DIR/history.json (--output DIR of `tandem train`): loss and
      accuracy per epoch, training and validation, as pd.DataFrame(history.history).plot() draws them
  tools/plot_history.py --timeline FILE.json -o phases.png [--steps FIRST:LAST]
      the step phases of a --timeline trace per rank: every thread of every rank as one row, each
      phase a bar from its start to its end, over a few steps (default: the three after the first)
"""
import argparse
import json
import os
import sys


def fail(message, hint):
    print(f"plot_history.py: {message}\n  hint: {hint}", file=sys.stderr)
    sys.exit(2)


def load_json(path, what, hint):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        fail(f"{path} does not exist", hint)
    except (OSError, ValueError) as e:
        fail(f"{path} is not a readable {what}: {e}", hint)


def plot_curves(run_dir, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    history = load_json(os.path.join(run_dir, "history.json"), "history.json",
                        "give the --output DIR of a finished `tandem train`")
    if not isinstance(history, dict) or not history.get("loss"):
        fail(f"{run_dir}/history.json holds no per-epoch loss", "give the --output DIR of a finished `tandem train`")
    columns = [k for k in ("loss", "val_loss", "accuracy", "val_accuracy") if k in history]
    frame = pd.DataFrame({k: history[k] for k in columns})
    frame.index = range(1, len(frame) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        cols = [c for c in (metric, "val_" + metric) if c in frame]
        frame[cols].plot(ax=ax, grid=True, style=["b-o", "r--s"][:len(cols)], xlabel="Epoch", ylabel=metric)
        ax.set_title(metric)
    if "learning_rate" in history:
        lr = axes[0].twinx()
        lr.plot(frame.index, history["learning_rate"], "g:", label="learning_rate")
        lr.set_ylabel("learning rate", color="g")
        lr.tick_params(axis="y", colors="g")
    fig.suptitle(f"tandem train: {os.path.basename(os.path.normpath(run_dir))}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}: {', '.join(columns)} over {len(frame)} epochs")


PHASE_COLORS = {"data": "#8c564b", "forward": "#1f77b4", "backward": "#ff7f0e", "local reduce": "#bcbd22",
                "allreduce wait": "#d62728", "allreduce bucket": "#9467bd", "optimizer": "#2ca02c",
                "state sync": "#e377c2", "callbacks": "#7f7f7f", "checkpoint snapshot": "#17becf",
                "host update": "#2ca02c"}


def plot_timeline(path, out, steps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    trace = load_json(path, "trace", "give the FILE written by `tandem train --timeline FILE`")
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list) or not any(e.get("name") == "step" for e in events if isinstance(e, dict)):
        fail(f"{path} holds no training steps", "give the FILE written by `tandem train --timeline FILE`")
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    ranks = sorted({e["pid"] for e in events if e.get("ph") == "X"})
    # The window: steps FIRST..LAST of rank 0 (by args.step).
    spans = sorted((e for e in events if e.get("name") == "step" and e["pid"] == ranks[0]), key=lambda e: e["ts"])
    first, last = steps if steps else (min(1, len(spans) - 1), min(3, len(spans) - 1))
    window = [s for s in spans if first <= s["args"]["step"] <= last] or spans[:1]
    t0, t1 = window[0]["ts"], window[-1]["ts"] + window[-1]["dur"]
    rows = sorted({(e["pid"], e["tid"]) for e in events if e.get("ph") == "X" and e["name"] != "step"})
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(rows) + 1.6))
    for y, (pid, tid) in enumerate(rows):
        for e in events:
            if e.get("ph") != "X" or e["pid"] != pid or e["tid"] != tid or e["name"] == "step":
                continue
            if e["ts"] + e["dur"] < t0 or e["ts"] > t1:
                continue
            ax.broken_barh([((e["ts"] - t0) / 1000, max(e["dur"], 1) / 1000)], (y - 0.35, 0.7),
                           color=PHASE_COLORS.get(e["name"], "#333333"), edgecolor="white", linewidth=0.3)
    for s in window:
        ax.axvline((s["ts"] - t0) / 1000, color="black", linewidth=0.6, linestyle=":")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"rank {pid} {names.get((pid, tid), f'thread {tid}')}" for pid, tid in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"ms from the start of step {window[0]['args']['step']} (dotted: step starts)")
    shown = sorted({e["name"] for e in events if e.get("ph") == "X" and e["name"] in PHASE_COLORS})
    ax.legend(handles=[Patch(color=PHASE_COLORS[n], label=n) for n in shown], loc="upper center",
              bbox_to_anchor=(0.5, -0.25 if len(rows) < 4 else -0.12), ncol=min(6, len(shown)), fontsize=8)
    ax.set_title(f"tandem train --timeline: steps {window[0]['args']['step']}-{window[-1]['args']['step']}, "
                 f"{len(ranks)} rank(s)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}: {len(rows)} threads over {len(ranks)} rank(s), steps "
          f"{window[0]['args']['step']}-{window[-1]['args']['step']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="the --output DIR of `tandem train`")
    p.add_argument("--timeline", help="a `tandem train --timeline` FILE instead")
    p.add_argument("--steps", help="FIRST:LAST steps of the timeline to draw")
    p.add_argument("-o", "--output", required=True, help="the PNG (or SVG, PDF) to write")
    a = p.parse_args()
    if bool(a.run_dir) == bool(a.timeline):
        fail("give RUN_DIR or --timeline FILE (one of them)", "e.g. tools/plot_history.py runs/mlp -o curves.png")
    steps = None
    if a.steps:
        try:
            steps = tuple(int(x) for x in a.steps.split(":"))
            assert len(steps) == 2 and 0 <= steps[0] <= steps[1]
        except (ValueError, AssertionError):
            fail(f"--steps must be FIRST:LAST, got '{a.steps}'", "e.g. --steps 10:12")
    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as e:
        fail(f"{e.name} is not installed", "pip install -r tools/requirements.txt (matplotlib, pandas)")
    if a.timeline:
        plot_timeline(a.timeline, a.output, steps)
    else:
        plot_curves(a.run_dir, a.output)


if __name__ == "__main__":
    main()
