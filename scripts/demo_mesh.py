#!/usr/bin/python3
"""The README's main job: an 8-node encrypted mws mesh on 127.0.0.1.

Each node starts from its own random model; they join through one seed, average by push-sum
over authenticated, encrypted connections, and every node's estimate is checked against the
exact mean computed here, independently, with numpy. Exit status 0 only when every node is
within the tolerance and all shut down cleanly.
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mwsmesh  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--binary", default="build-release/apps/mws-node/mws-node")
    p.add_argument("--dir", default="out/demo-mesh")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--tolerance", type=float, default=1e-5)
    p.add_argument("--deadline", type=float, default=120.0)
    args = p.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    psk = os.path.join(args.dir, "mesh.psk")
    subprocess.run([args.binary, "psk", psk], check=True)
    shapes = {"layer1.weight": (256, 256), "layer1.bias": (256,), "layer2.weight": (10, 256)}
    models, exact = mwsmesh.random_models(args.dir, args.nodes, shapes, seed=2026)
    params = sum(int(mwsmesh.np.prod(s)) for s in shapes.values())
    print(f"{args.nodes} nodes, {params} parameters each, encrypted with a mesh key; "
          f"logs in {args.dir}/node-*/node.log")
    nodes = mwsmesh.start_mesh(args.binary, args.dir, models, extra=["--psk-file", psk])
    try:
        def progress(t, err):
            alive = min(n.status()["members_alive"] for n in nodes)
            print(f"  t={t:5.1f} s  members seen by every node: {alive}/{args.nodes}  "
                  f"worst relative error vs exact mean: {err:.2e}", flush=True)

        seconds, worst = mwsmesh.wait_agreement(nodes, exact, args.tolerance, args.deadline,
                                                progress)
    finally:
        codes = [n.stop() for n in nodes]
    if seconds is None:
        print(f"FAILED: worst relative error {worst:.2e} after {args.deadline} s")
        return 1
    if any(codes):
        print(f"FAILED: exit codes {codes}")
        return 1
    print(f"OK: all {args.nodes} nodes hold the exact mean (worst relative error {worst:.1e} "
          f"< {args.tolerance:g}) after {seconds:.1f} s; all stopped cleanly.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
