"""Run local meshes of mws-node processes: start, export, compare, stop.

Shared by scripts/demo_mesh.py (the README's main job), the integration tests
(tests/integration/) and the time-to-agreement benchmark. Standard library plus numpy only
(Debian's python3-numpy); safetensors files are read and written here directly.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}


def write_safetensors(path, tensors):
    """tensors: {name: float32 numpy array}. Names are written sorted, like mws does."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path_or_bytes):
    data = path_or_bytes
    if not isinstance(data, (bytes, bytearray)):
        with open(data, "rb") as f:
            data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        begin, end = v["data_offsets"]
        a = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=DTYPES[v["dtype"]])
        out[name] = a.reshape(v["shape"]).astype(np.float64)
    return out


def free_ports(count):
    """Ports the kernel says are free now (bound and released)."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    """One mws-node process. Logs go to <dir>/node.log."""

    def __init__(self, binary, directory, port, http_port, model, seeds=(), extra=()):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.address = f"127.0.0.1:{port}"
        self.http = f"127.0.0.1:{http_port}"
        self.args = [binary, "run", "--key", os.path.join(directory, "node.key"),
                     "--listen", self.address, "--http", self.http, "--model", model,
                     "--data-dir", os.path.join(directory, "data"), *extra]
        for s in seeds:
            self.args += ["--seed", s]
        self.env = None  # the process's environment: None inherits ours
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "node.log"), "ab")
        # A session of its own: a signal to the node never reaches the caller, and a wrapper
        # (timeout, valgrind) and the node go down together.
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log,
                                     start_new_session=True, env=self.env)
        return self

    def get(self, path, timeout=5.0):
        with urllib.request.urlopen(f"http://{self.http}{path}", timeout=timeout) as r:
            return r.read()

    def status(self):
        return json.loads(self.get("/status"))

    def estimate(self):
        """The node's estimate, or None while it holds no share of the mass (HTTP 503: exact
        mode, between handing its share to a member that failed and the next epoch)."""
        try:
            return read_safetensors(self.get("/export", timeout=60))
        except urllib.error.HTTPError as e:
            if e.code == 503:
                return None
            raise

    def wait_http(self, deadline_s=30.0):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.address} exited with {self.proc.returncode}: "
                                   + self.log_text()[-2000:])
            try:
                self.get("/livez", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.address}: no HTTP answer within {deadline_s} s")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def log_text(self):
        with open(os.path.join(self.dir, "node.log"), "rb") as f:
            return f.read().decode(errors="replace")


def relative_error(estimate, exact):
    """max |estimate - exact| over every element, divided by max |exact|."""
    worst = max(np.max(np.abs(estimate[k] - exact[k])) for k in exact)
    scale = max(np.max(np.abs(exact[k])) for k in exact)
    return float(worst / scale)


def random_models(directory, count, shapes, seed):
    """Writes `count` random models ({name: shape}); returns (paths, exact mean)."""
    rng = np.random.default_rng(seed)
    paths, models = [], []
    for i in range(count):
        m = {name: rng.uniform(-1, 1, size=shape).astype(np.float32)
             for name, shape in shapes.items()}
        path = os.path.join(directory, f"model-{i}.safetensors")
        write_safetensors(path, m)
        paths.append(path)
        models.append(m)
    exact = {k: np.mean([m[k].astype(np.float64) for m in models], axis=0) for k in shapes}
    return paths, exact


def start_mesh(binary, directory, models, extra=()):
    """Node 0 is the seed; the others join through it. Returns the nodes, all answering HTTP."""
    ports = free_ports(2 * len(models))
    nodes = []
    for i, model in enumerate(models):
        seeds = [] if i == 0 else [nodes[0].address]
        n = Node(binary, os.path.join(directory, f"node-{i}"), ports[2 * i], ports[2 * i + 1],
                 model, seeds, extra).start()
        if i == 0:
            n.wait_http()
        nodes.append(n)
    for n in nodes:
        n.wait_http()
    return nodes


def wait_agreement(nodes, target, tolerance, deadline_s, progress=None, period_s=0.5,
                   cheap=False):
    """Polls every node's estimate until all are within `tolerance` of `target` (or, when
    target is None, of each other). Returns (seconds, worst error).

    cheap (target given): a poll stops at the first node still outside the tolerance, and the
    next poll starts from that node, so that observing a mesh that has not agreed yet costs one
    export per poll rather than one per node (an export is a whole model). Agreement is still
    declared only by a poll that found every node within the tolerance; the error reported
    meanwhile is that of the node that failed."""
    start = time.monotonic()
    worst = float("inf")
    first = 0
    while time.monotonic() - start < deadline_s:
        if cheap and target is not None:
            worst, first = _first_failure(nodes, target, tolerance, first)
        else:
            estimates = [n.estimate() for n in nodes]
            reference = target if target is not None else estimates[0]
            if reference is None or any(e is None for e in estimates):
                worst = float("inf")
            else:
                worst = max(relative_error(e, reference) for e in estimates)
        elapsed = time.monotonic() - start
        if progress:
            progress(elapsed, worst)
        if worst < tolerance:
            return elapsed, worst
        time.sleep(period_s)
    return None, worst


def _first_failure(nodes, target, tolerance, first):
    """(worst error, index) checking nodes from `first` on, stopping at the first outside
    `tolerance`; the worst over all of them when none is."""
    worst = 0.0
    for k in range(len(nodes)):
        i = (first + k) % len(nodes)
        e = nodes[i].estimate()
        error = float("inf") if e is None else relative_error(e, target)
        if not error < tolerance:
            return error, i
        worst = max(worst, error)
    return worst, first
