#!/usr/bin/python3
"""Plot mws-sim convergence runs.

Reads the JSON (or CSV) files that `mws-sim --json FILE` / `--csv FILE` write and draws one
panel per metric, one line per run, into a PNG. Uses Debian's python3-matplotlib
(run with /usr/bin/python3).

  mws-sim -t ring --json ring.json; mws-sim -t torus --json torus.json
  /usr/bin/python3 scripts/plot_convergence.py ring.json torus.json -o rings.png \
      --metrics distance_rms max_rel_error --x round_mean --theory

--theory draws the predicted decay d0 * slem^round (dashed) for runs that report a predicted
contraction (sync and batched runs), so measured and predicted rates can be compared by eye.
"""
import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "distance_rms": "consensus distance (RMS)",
    "max_rel_error": "max relative error vs exact mean",
    "mass_drift_x": "mass drift of x (relative)",
    "mass_drift_w": "mass drift of w (relative)",
    "loss": "loss at the mean model",
    "round_gap": "max round gap between neighbours",
    "messages": "messages sent",
    "bytes": "bytes sent",
    "round_mean": "rounds (mean over nodes)",
    "step": "step",
    "time_us": "virtual time (us)",
}
LOG_METRICS = {"distance_rms", "max_rel_error", "mass_drift_x", "mass_drift_w"}


def load(path):
    """Returns (summary dict, columns dict name -> list of floats)."""
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".csv"):
                rows = list(csv.DictReader(f))
                if not rows:
                    raise ValueError("no rows")
                cols = {k: [float(r[k]) for r in rows] for k in rows[0]}
                return {"label": os.path.basename(path)}, cols
            doc = json.load(f)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"plot_convergence: {path}: {e}")
    names = doc.get("columns")
    series = doc.get("series")
    if not isinstance(names, list) or not isinstance(series, list):
        sys.exit(f"plot_convergence: {path}: not an mws-sim JSON file (no columns/series)")
    cols = {n: [float("nan") if row[i] is None else float(row[i]) for row in series]
            for i, n in enumerate(names)}
    return doc, cols


def label_of(doc, path, override):
    if override:
        return override
    if "algorithm" not in doc:
        return doc.get("label", os.path.basename(path))
    return f"{doc['algorithm']} / {doc['topology']} (n={doc['nodes']})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="mws-sim --json or --csv outputs")
    ap.add_argument("-o", "--output", required=True, help="PNG file to write")
    ap.add_argument("--metrics", nargs="+", default=["distance_rms"],
                    help="columns to plot, one panel each (default: distance_rms)")
    ap.add_argument("--x", default="round_mean", help="x axis column (round_mean, step, time_us)")
    ap.add_argument("--labels", nargs="*", default=[], help="legend labels, one per file")
    ap.add_argument("--title", default="", help="figure title")
    ap.add_argument("--theory", action="store_true", help="dashed d0*slem^x for sync runs")
    args = ap.parse_args()

    runs = [(p, *load(p)) for p in args.files]
    fig, axes = plt.subplots(1, len(args.metrics), figsize=(6.4 * len(args.metrics), 4.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], args.metrics):
        for k, (path, doc, cols) in enumerate(runs):
            if metric not in cols or args.x not in cols:
                sys.exit(f"plot_convergence: {path}: no column '{metric}' or '{args.x}'")
            xs, ys = cols[args.x], cols[metric]
            if metric in LOG_METRICS:
                pts = [(x, y) for x, y in zip(xs, ys) if y > 0]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            lab = label_of(doc, path, args.labels[k] if k < len(args.labels) else "")
            line, = ax.plot(xs, ys, label=lab, linewidth=1.4)
            slem = doc.get("predicted_contraction") or 0
            if (args.theory and metric == "distance_rms" and slem > 0 and
                    args.x == "round_mean" and ys):
                # Anchored after a burn-in (a fifth of the run), like mws-sim's measured rate.
                x0, y0 = xs[len(xs) // 5], ys[len(ys) // 5]
                ax.plot(xs, [y0 * slem ** (x - x0) for x in xs], linestyle="--",
                        color=line.get_color(), linewidth=0.9,
                        label=f"theory slem={slem:.4f}")
        if metric in LOG_METRICS:
            ax.set_yscale("log")
        ax.set_xlabel(LABELS.get(args.x, args.x))
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"plot_convergence: wrote {args.output}")


if __name__ == "__main__":
    main()
