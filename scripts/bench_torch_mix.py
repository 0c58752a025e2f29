#!/usr/bin/env python3
"""The torch side of `mws-bench mix`: the same k-way weighted sum, written the way a torch user
would write it without temporaries (out = a0*x0, then out += a_k*x_k in place), on the CPU.

Usage: bench_torch_mix.py [--repeats N] DTYPE:MIB:K ...
Prints JSON {"results": [{"dtype", "mib", "k", "seconds", "gbps"}, ...]} in argument order,
where gbps counts k reads + 1 write, like mws-bench.
"""
import argparse
import json
import statistics
import sys
import time

import torch

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def seconds_per_call(fn, repeats):
    fn()
    t0 = time.perf_counter()
    fn()
    probe = max(time.perf_counter() - t0, 1e-7)
    calls = int(min(max(0.05 / probe, 1), 1000))
    sample = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sample.append((time.perf_counter() - t0) / calls)
    return statistics.median(sample)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("configs", nargs="+")
    args = parser.parse_args()
    results = []
    cache = {}
    for config in args.configs:
        name, mib, k = config.split(":")
        mib, k = int(mib), int(k)
        dtype = DTYPES[name]
        numel = (mib << 20) // torch.tensor([], dtype=dtype).element_size()
        key = (name, mib)
        if key not in cache:
            cache.clear()  # one size at a time keeps memory bounded
            cache[key] = [torch.rand(numel).to(dtype) for _ in range(8)], torch.empty(numel, dtype=dtype)
        xs, out = cache[key]
        while len(xs) < k:
            xs.append(torch.rand(numel).to(dtype))
        a = [1.0 / k] * k

        def weighted_sum():
            torch.mul(xs[0], a[0], out=out)
            for j in range(1, k):
                out.add_(xs[j], alpha=a[j])

        s = seconds_per_call(weighted_sum, args.repeats)
        results.append({"dtype": name, "mib": mib, "k": k, "seconds": s,
                        "gbps": (k + 1) * (mib << 20) / s / 1e9})
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
               "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
