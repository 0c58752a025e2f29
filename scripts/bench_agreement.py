#!/usr/bin/python3
"""Time to agreement: N mws-node processes on loopback vs torch.distributed all_reduce (gloo).

For each N, the same N random f32 models (--params parameters each, written once) are
averaged twice in the same run:
  * mws: N mws-node processes (encrypted) join through one seed, once with push-sum and once
    in exact mode (--algorithms); the clock runs from the launch of the first process until
    every node's estimate (GET /export) is within --tolerance relative error
    (max |error| / max |mean|) of the exact mean (numpy, f64). Polling costs the nodes CPU and
    counts against mws. In exact mode the observer polls the small GET /status until every
    node has completed an epoch, then checks every export once; the clock stops at the status
    poll that saw it (if the exports are not yet within tolerance, the first epoch began before
    every node had joined, and polling exports goes on as for push-sum).
  * gloo: N python3 processes load the same files, init_process_group("gloo") and all_reduce
    (SUM, then / N); the clock runs from the launch until the last one holds its result, which
    each checks against the same tolerance. Not encrypted.
Also peak RSS (VmHWM) of every mws node divided by the model size. Prints a table; --json writes
the numbers.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mwsmesh  # noqa: E402

WORKER = r"""
import sys, time, numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[6])
import mwsmesh
rank, world, port, model, exact_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
x = torch.from_numpy(mwsmesh.read_safetensors(model)["w"].astype(np.float32))
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
dist.all_reduce(x, op=dist.ReduceOp.SUM)
x /= world
done = time.time()
exact = np.load(exact_path)
err = float(np.max(np.abs(x.numpy().astype(np.float64) - exact)) / np.max(np.abs(exact)))
print(f"{done} {err}", flush=True)
dist.destroy_process_group()
"""


def peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_epoch(nodes, deadline_s, period_s=0.05):
    """Seconds until every node's /status reports a completed epoch, or None."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if all(json.loads(n.get("/status"))["epochs_completed"] >= 1 for n in nodes):
            return time.monotonic()
        time.sleep(period_s)
    return None


def run_mws(binary, directory, models, exact, tolerance, deadline, extra):
    start = time.monotonic()
    nodes = mwsmesh.start_mesh(binary, directory, models, extra)
    try:
        seconds = None
        if "exact" in extra:
            done = wait_epoch(nodes, deadline)
            worst = max(mwsmesh.relative_error(n.estimate(), exact) for n in nodes)
            if done is not None and worst < tolerance:
                seconds = done - start
        if seconds is None:
            waited, worst = mwsmesh.wait_agreement(nodes, exact, tolerance, deadline,
                                                   period_s=0.2, cheap=True)
            seconds = time.monotonic() - start if waited is not None else None
        elapsed = seconds
        rss = [peak_rss_bytes(n.proc.pid) for n in nodes]
    finally:
        for n in nodes:
            n.stop()
    return elapsed, worst, rss


def run_gloo(directory, models, exact, tolerance):
    exact_path = os.path.join(directory, "exact.npy")
    mwsmesh.np.save(exact_path, exact["w"])
    worker = os.path.join(directory, "worker.py")
    with open(worker, "w") as f:
        f.write(WORKER)
    port = mwsmesh.free_ports(1)[0]
    here = os.path.dirname(os.path.abspath(__file__))
    launch = time.time()
    procs = [subprocess.Popen(["/usr/bin/python3", worker, str(r), str(len(models)), str(port), m,
                               exact_path, here], stdout=subprocess.PIPE, text=True)
             for r, m in enumerate(models)]
    outs = [p.communicate(timeout=600)[0].split() for p in procs]
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError("a gloo worker failed")
    done = max(float(o[0]) for o in outs)
    worst = max(float(o[1]) for o in outs)
    if worst >= tolerance:
        raise RuntimeError(f"gloo's result is off by {worst}")
    return done - launch, worst


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="build-release/apps/mws-node/mws-node")
    p.add_argument("--nodes", type=int, nargs="+", default=[4, 8])
    p.add_argument("--params", type=int, default=10_000_000)
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--deadline", type=float, default=300.0)
    p.add_argument("--algorithms", nargs="+", default=["push-sum", "exact"],
                   choices=["push-sum", "exact"])
    p.add_argument("--epoch-s", type=float, default=1.0, help="exact mode: --epoch-s of the nodes")
    p.add_argument("--json")
    args = p.parse_args()
    model_bytes = 4 * args.params
    rows = []
    for n in args.nodes:
        directory = tempfile.mkdtemp(prefix="mws-agreement-")
        try:
            models, exact = mwsmesh.random_models(directory, n, {"w": (args.params,)}, seed=n)
            gloo_s, gloo_err = run_gloo(directory, models, exact, args.tolerance)
            for algorithm in args.algorithms:
                extra = ("--algorithm", algorithm, "--epoch-s", str(args.epoch_s))
                mws_s, mws_err, rss = run_mws(args.binary, directory, models, exact,
                                              args.tolerance, args.deadline, extra)
                row = {"nodes": n, "params": args.params, "algorithm": algorithm,
                       "gloo_s": gloo_s, "mws_s": mws_s, "mws_error": mws_err,
                       "ratio": (mws_s / gloo_s) if mws_s else None,
                       "peak_rss_over_model": max(rss) / model_bytes}
                rows.append(row)
                ratio = f"{row['ratio']:.1f}x" if mws_s else "did not agree"
                mws_text = f"{mws_s:7.2f}" if mws_s else "   n/a"
                print(f"{n} nodes, {args.params} f32 params: gloo all_reduce {gloo_s:6.2f} s | "
                      f"mws {algorithm:8} {mws_text} s ({ratio} gloo) | "
                      f"peak RSS {row['peak_rss_over_model']:.2f}x model", flush=True)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                       "tolerance": args.tolerance, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
