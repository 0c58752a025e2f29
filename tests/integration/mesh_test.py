#!/usr/bin/python3
"""Integration tests of mws-node: real processes on 127.0.0.1, driven through scripts/mwsmesh.py.

    /usr/bin/python3 tests/integration/mesh_test.py --binary build/apps/mws-node/mws-node [-v] [Test.name]

Every test works in its own temporary directory on ports the kernel says are free, kills every
process it started (also when it fails), and asserts on behaviour only: deadlines are generous
(DEADLINE_S) because the same tests run under ASan on two cores, and no test measures speed.
A failing test prints the tail of each node's log and keeps its directory for inspection.
Exit status 77 (CTest's SKIP_RETURN_CODE) when numpy is missing.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))
try:
    import numpy as np
    import mwsmesh
except ImportError as e:  # Debian's python3-numpy is a test dependency, not a build one
    print(f"skipping the mws-node integration tests: {e}", file=sys.stderr)
    sys.exit(77)

BINARY = os.environ.get("MWS_NODE", os.path.join(REPO, "build/apps/mws-node/mws-node"))
DEADLINE_S = 60.0     # for anything a healthy node does in a few seconds
TOLERANCE = 1e-5      # relative error that counts as "the exact mean" (the export is float32)
POLL_S = 0.2
VERBOSE = False       # -v: also print each test's notes as it runs
LOG_TAIL_LINES = 25

# Small but not trivial: three tensors, 4,362 parameters.
SMALL = {"layer1.weight": (64, 64), "layer1.bias": (64,), "layer2.weight": (3, 64, 1)}
# Large enough that each share takes a while to build, send and fold in (4 MiB).
LARGE = {"embed.weight": (1024, 960), "head.weight": (256, 256)}


def parse_events(text):
    """The JSON lines of a node log; anything else (sanitizer reports) is skipped."""
    events = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            events.append(e)
    return events


def tail(text, lines=LOG_TAIL_LINES):
    return "\n".join(text.splitlines()[-lines:])


class MeshTestCase(unittest.TestCase):
    """A temporary directory, node bookkeeping, cleanup and diagnostics for one test."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix=f"mws-it-{self._testMethodName}-")
        self.nodes = []      # every mwsmesh.Node this test started, in start order
        self.ended = set()   # ids of the nodes this test stopped or killed on purpose
        self.sockets = []    # raw client sockets this test opened
        self.notes = []      # what happened when, printed with the logs on failure
        self.started = time.monotonic()
        self.addCleanup(self._stop_everything)

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        problems_before = len(result.failures) + len(result.errors)
        super().run(result)
        failed = len(result.failures) + len(result.errors) > problems_before
        directory = getattr(self, "dir", None)
        if failed and directory:
            sys.stderr.write(self.diagnostics())
            sys.stderr.write(f"\n(the test's files are kept in {directory})\n")
        elif directory:
            shutil.rmtree(directory, ignore_errors=True)
        return result

    def _stop_everything(self):
        for s in self.sockets:
            s.close()
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
                n.killed_by_cleanup = True
            if n.proc is not None:
                n.log.close()

    def note(self, text):
        line = f"t={time.monotonic() - self.started:6.1f} s  {text}"
        self.notes.append(line)
        if VERBOSE:
            print(f"\n    {line}", end="", file=sys.stderr, flush=True)

    def diagnostics(self):
        out = [f"\n===== {self.id()} =====", *self.notes,
               f"----- node logs (last {LOG_TAIL_LINES} lines each) -----"]
        for i, n in enumerate(self.nodes):
            if n.proc is None:
                state = "never started"
            elif getattr(n, "killed_by_cleanup", False):
                state = "running until the cleanup"
            else:
                state = f"exit {n.proc.poll()}"
            out.append(f"--- node {i} {n.address} ({state}) {n.dir}/node.log")
            try:
                out.append(tail(n.log_text()))
            except OSError as e:
                out.append(f"(no log: {e})")
        return "\n".join(out) + "\n"

    # --- starting nodes ---

    def models(self, count, shapes, seed):
        return mwsmesh.random_models(self.dir, count, shapes, seed)

    def start(self, node):
        self.ended.discard(id(node))
        node.start()
        node.wait_http(DEADLINE_S)

    def new_node(self, name, model, seeds=(), extra=()):
        """Starts one node (registered for cleanup before it can fail) and waits for its HTTP."""
        port, http_port = mwsmesh.free_ports(2)
        n = mwsmesh.Node(BINARY, os.path.join(self.dir, name), port, http_port, model,
                         seeds, list(extra))
        self.nodes.append(n)
        self.start(n)
        return n

    def start_mesh(self, models, extra=(), prefix="node"):
        """Node 0 is the seed; the others join through it (like mwsmesh.start_mesh, but every
        process is registered for cleanup even when a later one fails to start)."""
        nodes = [self.new_node(f"{prefix}-0", models[0], extra=extra)]
        for i, model in enumerate(models[1:], start=1):
            nodes.append(self.new_node(f"{prefix}-{i}", model, [nodes[0].address], extra))
        return nodes

    # --- observing ---

    def wait_until(self, what, predicate, deadline_s=DEADLINE_S, poll_s=POLL_S):
        """Polls predicate() until it is true; HTTP errors count as 'not yet'."""
        end = time.monotonic() + deadline_s
        last_error = None
        while time.monotonic() < end:
            self.assert_none_crashed()
            try:
                if predicate():
                    self.note(what)
                    return
            except (OSError, ValueError) as e:
                last_error = e
            time.sleep(poll_s)
        self.note(f"gave up waiting for: {what}")
        self.note_statuses()
        self.fail(f"not within {deadline_s:g} s: {what}"
                  + (f" (last error: {last_error})" if last_error else ""))

    def note_statuses(self):
        """Every running node's /status, for the diagnostics of a failure."""
        for i, n in enumerate(self.nodes):
            if n.proc is None or n.proc.poll() is not None:
                continue
            try:
                self.note(f"node {i} status: {json.dumps(n.status(), separators=(',', ':'))}")
            except (OSError, ValueError) as e:
                self.note(f"node {i} status: unavailable ({e})")

    def assert_none_crashed(self):
        for i, n in enumerate(self.nodes):
            if id(n) not in self.ended and n.proc is not None and n.proc.poll() is not None:
                self.ended.add(id(n))
                self.fail(f"node {i} ({n.address}) exited by itself with {n.proc.returncode}")

    def wait_members(self, nodes, count, deadline_s=DEADLINE_S):
        self.wait_until(f"every node sees members_alive == {count}",
                        lambda: all(n.status()["members_alive"] == count for n in nodes),
                        deadline_s)

    def assert_agreement(self, nodes, target, what):
        """Every node's estimate within TOLERANCE of target (or, target None, of each other)."""
        self.assert_none_crashed()
        try:
            seconds, worst = mwsmesh.wait_agreement(nodes, target, TOLERANCE, DEADLINE_S)
        except OSError:
            self.assert_none_crashed()  # a clearer message when a node died
            raise
        self.note(f"{what}: worst relative error {worst:.2e}"
                  + (f" after {seconds:.1f} s" if seconds is not None else ""))
        self.assertIsNotNone(seconds, f"{what}: worst relative error still {worst:.3e} "
                             f"after {DEADLINE_S:g} s (tolerance {TOLERANCE:g})")
        return [n.estimate() for n in nodes]

    def events(self, node, name=None, since=0):
        text = node.log_text()[since:]
        return [e for e in parse_events(text) if name is None or e.get("event") == name]

    def stop_all(self, nodes):
        """SIGTERM to each in turn; their exit codes (-9: killed after DEADLINE_S)."""
        self.assert_none_crashed()
        self.ended.update(id(n) for n in nodes)
        return [n.stop(timeout=DEADLINE_S) for n in nodes]

    def kill(self, node):
        self.ended.add(id(node))
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        node.log.close()


class MeshTest(MeshTestCase):
    def test_eight_nodes_joining_through_one_seed_reach_the_exact_mean_and_stop_cleanly(self):
        paths, exact = self.models(8, SMALL, seed=11)
        nodes = self.start_mesh(paths)
        self.wait_members(nodes, 8)
        self.assert_agreement(nodes, exact, "8 nodes vs the exact mean of their files")
        codes = self.stop_all(nodes)
        self.assertEqual(codes, [0] * 8, "exit codes after SIGTERM")
        for i, n in enumerate(nodes):
            self.assertTrue(self.events(n, "node_stopping"), f"node {i} logged no node_stopping")

    def test_ten_nodes_started_before_their_seed_all_join_it(self):
        """The joiners find nobody at first and re-dial; ten members on one address (loopback)
        stay within the listener's per-address connection limit."""
        paths, exact = self.models(10, SMALL, seed=14)
        port, http_port = mwsmesh.free_ports(2)
        seed_address = f"127.0.0.1:{port}"
        joiners = [self.new_node(f"joiner-{i}", p, [seed_address]) for i, p in
                   enumerate(paths[1:], start=1)]
        seed = mwsmesh.Node(BINARY, os.path.join(self.dir, "seed"), port, http_port, paths[0])
        self.nodes.append(seed)
        self.start(seed)
        nodes = [seed, *joiners]
        self.wait_members(nodes, 10)
        self.assert_agreement(nodes, exact, "10 nodes that started before their seed")
        self.assertEqual(self.stop_all(nodes), [0] * 10)

    def test_a_seed_given_by_host_name_is_resolved_and_joined(self):
        paths, exact = self.models(2, SMALL, seed=13)
        seed = self.new_node("seed", paths[0])
        port = seed.address.rsplit(":", 1)[1]
        joiner = self.new_node("joiner", paths[1], [f"localhost:{port}"])
        self.wait_members([seed, joiner], 2)
        self.assert_agreement([seed, joiner], exact, "2 nodes joined by host name")
        self.assertEqual(self.stop_all([seed, joiner]), [0, 0])

    def test_export_without_a_temporary_file_is_served_from_memory_with_a_warning(self):
        paths, _ = self.models(1, SMALL, seed=31)
        port, http_port = mwsmesh.free_ports(2)
        n = mwsmesh.Node(BINARY, os.path.join(self.dir, "alone"), port, http_port, paths[0])
        data = n.args.index("--data-dir")
        del n.args[data:data + 2]  # no data directory, and TMPDIR names none that exists
        n.env = dict(os.environ, TMPDIR=os.path.join(self.dir, "no-such-directory"))
        self.nodes.append(n)
        self.start(n)
        exported = n.estimate()
        original = mwsmesh.read_safetensors(paths[0])
        self.assertEqual(sorted(exported), sorted(original))
        for k in original:
            self.assertTrue(np.array_equal(exported[k], original[k]), k)
        warnings = self.events(n, "export_in_memory")
        self.assertEqual(len(warnings), 1, "one warning, naming why")
        self.assertIn("no-such-directory", warnings[0].get("why", ""))
        self.assertEqual(self.stop_all([n]), [0])

    def test_survivors_of_a_kill_9_agree_and_the_restarted_node_resumes_and_rejoins(self):
        paths, exact = self.models(5, LARGE, seed=12)
        # Slow ticks: the mesh needs dozens of them to agree, so the victim, the last to join,
        # dies a few exchanges after its first (each share is 4 MiB: some are in flight).
        nodes = self.start_mesh(paths, extra=["--checkpoint-s", "0.5", "--tick-ms", "200"])
        victim = nodes[-1]
        survivors = nodes[:-1]
        checkpoints = os.path.join(victim.dir, "data")
        self.wait_until("the victim exchanges shares and wrote a checkpoint", lambda: (
            has_exchanged(victim.status(), os.path.getsize(paths[-1])) and any(
                f.startswith("checkpoint-") for f in os.listdir(checkpoints))), poll_s=0.02)
        before_kill = relative_error_or_none(victim, exact)
        self.kill(victim)
        self.note(f"killed the victim (-9), {before_kill:.2e} away from the mean")

        self.wait_members(survivors, 4)
        estimates = self.assert_agreement(survivors, None, "the 4 survivors with each other")
        if before_kill is not None and before_kill > 1e-2:
            # The victim's mass left with it: the survivors' common value is not the mean.
            self.assertGreater(mwsmesh.relative_error(estimates[0], exact), 1e-4,
                               "survivors reached the original mean although the victim was "
                               f"killed {before_kill:.2e} away from it")

        self.note("the survivors' common value is %.2e away from the original mean"
                  % mwsmesh.relative_error(estimates[0], exact))

        newest = max(f for f in os.listdir(checkpoints)
                     if f.startswith("checkpoint-") and f.endswith(".safetensors"))
        log_offset = len(victim.log_text())
        self.start(victim)  # the same arguments: same key, same data directory
        resumed = self.events(victim, "resumed", since=log_offset)
        self.assertEqual(len(resumed), 1, "the restarted node did not log 'resumed' once")
        self.assertEqual(os.path.basename(resumed[0].get("checkpoint", "")), newest,
                         "the restarted node did not resume its newest checkpoint")
        self.wait_members(nodes, 5)
        self.assert_agreement(nodes, None, "all 5 nodes after the restart")
        self.assertEqual(self.stop_all(nodes), [0] * 5, "exit codes after SIGTERM")


class ExactModeTest(MeshTestCase):
    """--algorithm exact: epochs over the live membership; each that completes leaves every
    node on the exact mean, bit for bit."""

    EXTRA = ["--algorithm", "exact", "--epoch-s", "0.5"]

    def wait_identical(self, nodes, target, what):
        """Every node's export equal, bit for bit, and (target given) within TOLERANCE of it."""
        def check():
            estimates = [n.estimate() for n in nodes]
            if any(e is None for e in estimates):
                return False
            same = all(all(np.array_equal(e[k].view(np.uint32), estimates[0][k].view(np.uint32))
                           for k in e) for e in estimates)
            return same and (target is None
                             or mwsmesh.relative_error(estimates[0], target) < TOLERANCE)
        self.wait_until(what, check)
        return nodes[0].estimate()

    def test_eight_nodes_hold_the_same_bits_on_the_exact_mean(self):
        paths, exact = self.models(8, SMALL, seed=21)
        nodes = self.start_mesh(paths, extra=self.EXTRA)
        self.wait_members(nodes, 8)
        self.wait_identical(nodes, exact, "8 exact-mode nodes identical, on the exact mean")
        self.assertTrue(all(n.status()["epochs_completed"] >= 1 for n in nodes))
        self.assertEqual(self.stop_all(nodes), [0] * 8, "exit codes after SIGTERM")

    def test_survivors_of_a_kill_9_mid_epoch_agree_bit_for_bit(self):
        paths, exact = self.models(5, LARGE, seed=22)
        nodes = self.start_mesh(paths, extra=self.EXTRA)
        victim, survivors = nodes[-1], nodes[:-1]
        self.wait_members(nodes, 5)
        self.wait_until("every node completed an epoch",
                        lambda: all(n.status()["epochs_completed"] >= 1 for n in nodes))
        # Epochs of 4 MiB values follow each other every 0.5 s: the kill lands in one.
        self.kill(victim)
        self.note("killed a member (-9)")
        self.wait_members(survivors, 4)
        completed = [n.status()["epochs_completed"] for n in survivors]
        self.wait_until("every survivor completed an epoch without the victim", lambda: all(
            n.status()["epochs_completed"] > c for n, c in zip(survivors, completed)))
        common = self.wait_identical(survivors, None, "the 4 survivors identical")
        self.note("the survivors' common value is %.2e away from the original mean"
                  % mwsmesh.relative_error(common, exact))
        self.assertEqual(self.stop_all(survivors), [0] * 4, "exit codes after SIGTERM")


def has_exchanged(status, model_bytes):
    """At least one averaging share (a whole model) each way; membership messages are small."""
    return status["bytes_sent"] >= model_bytes and status["bytes_received"] >= model_bytes


def relative_error_or_none(node, exact):
    try:
        return mwsmesh.relative_error(node.estimate(), exact)
    except OSError:
        return None


class AdmissionTest(MeshTestCase):
    """Nodes without the mesh's credentials never become members."""

    def check_intruder_stays_out(self, mesh, mesh_exact, intruder, intruder_model, why_text):
        seed = mesh[0]
        self.wait_until("the seed refused the intruder's handshake", lambda: any(
            e.get("reason") == "handshake" and why_text in e.get("why", "")
            for e in self.events(seed, "peer_refused")))
        self.assertGreaterEqual(seed.status()["peers_refused"], 1)
        self.wait_members(mesh, len(mesh))
        # The intruder keeps dialling; for a while after the first refusal nothing changes.
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for i, n in enumerate(mesh):
                self.assertEqual(n.status()["members_alive"], len(mesh), f"mesh node {i}")
            s = intruder.status()
            self.assertEqual((s["members_alive"], s["peers_connected"]), (1, 0),
                             "the intruder sees someone")
            time.sleep(POLL_S)
        self.assertIsNone(intruder.proc.poll(), "the intruder exited")
        # Nothing of the intruder was averaged in, and nothing of the mesh reached it.
        self.assert_agreement(mesh, mesh_exact, "the mesh vs the exact mean of its own files")
        own = mwsmesh.read_safetensors(intruder_model)
        self.assertLess(mwsmesh.relative_error(intruder.estimate(), own), 1e-7,
                        "the intruder's estimate moved")
        self.assertEqual(self.stop_all(mesh + [intruder]), [0] * (len(mesh) + 1))

    def psk(self, name):
        path = os.path.join(self.dir, name)
        subprocess.run([BINARY, "psk", path], check=True, timeout=DEADLINE_S)
        return path

    def test_a_node_with_another_pre_shared_key_never_gets_in(self):
        paths, _ = self.models(4, SMALL, seed=13)
        mesh = self.start_mesh(paths[:3], extra=["--psk-file", self.psk("mesh.psk")])
        intruder = self.new_node("intruder", paths[3], [mesh[0].address],
                                 ["--psk-file", self.psk("other.psk")])
        self.check_intruder_stays_out(mesh, mean_of(paths[:3]), intruder, paths[3],
                                      "pre-shared key")

    def test_a_node_without_the_pre_shared_key_never_gets_in(self):
        paths, _ = self.models(4, SMALL, seed=14)
        mesh = self.start_mesh(paths[:3], extra=["--psk-file", self.psk("mesh.psk")])
        intruder = self.new_node("intruder", paths[3], [mesh[0].address])
        self.check_intruder_stays_out(mesh, mean_of(paths[:3]), intruder, paths[3],
                                      "pre-shared key")

    def test_a_node_whose_key_is_not_on_the_allowlist_never_gets_in(self):
        paths, _ = self.models(4, SMALL, seed=15)
        # The members' keys exist before they start, so that each can be given the list.
        allowlist = os.path.join(self.dir, "allowlist.txt")
        with open(allowlist, "w") as f:
            f.write("# the mesh's members\n")
            for i in range(3):
                os.makedirs(os.path.join(self.dir, f"node-{i}"))
                f.write(public_key(os.path.join(self.dir, f"node-{i}", "node.key")) + "\n")
        # The intruder even holds the mesh's pre-shared key: only the allowlist keeps it out.
        psk = self.psk("mesh.psk")
        mesh = self.start_mesh(paths[:3], extra=["--psk-file", psk, "--allowlist", allowlist])
        intruder = self.new_node("intruder", paths[3], [mesh[0].address], ["--psk-file", psk])
        self.check_intruder_stays_out(mesh, mean_of(paths[:3]), intruder, paths[3], "allowlist")


def mean_of(paths):
    models = [mwsmesh.read_safetensors(p) for p in paths]
    return {k: np.mean([m[k] for m in models], axis=0) for k in models[0]}


def public_key(key_file):
    """Creates key_file with `mws-node keygen` and returns its public key (64 hex digits)."""
    out = subprocess.run([BINARY, "keygen", "--key", key_file], check=True, timeout=DEADLINE_S,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("public key"):
            return line.split()[-1]
    raise AssertionError(f"no public key in keygen's output: {out!r}")


class GarbageTest(MeshTestCase):
    def connect(self, address, source="127.0.0.1"):
        host, port = address.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=DEADLINE_S,
                                     source_address=(source, 0))
        self.sockets.append(s)
        return s

    def send_and_close(self, address, data):
        s = self.connect(address)
        try:
            s.sendall(data)
        except OSError:
            pass  # the node may close first; that is its right
        s.close()

    def test_garbage_on_the_peer_port_disturbs_neither_averaging_nor_joining(self):
        paths, exact = self.models(5, SMALL, seed=16)
        nodes = self.start_mesh(paths[:4])
        target = nodes[0]  # the seed: the node everyone joins through
        rng = np.random.default_rng(16)
        # Half a handshake (the magic and 16 of msg1's 53 bytes), then silence: held open by
        # this test from a second loopback address, so it uses none of the mesh's own
        # per-address connection slots.
        stalled = [self.connect(target.address, source="127.0.0.2") for _ in range(2)]
        for s in stalled:
            s.sendall(b"MWS\x01\x01" + rng.bytes(11))
        self.send_and_close(target.address, rng.bytes(4096))              # random bytes
        self.send_and_close(target.address, rng.bytes(53))                # one msg1 of noise
        self.send_and_close(target.address, struct.pack("<I", 0xFFFFFFF0) + rng.bytes(60))
        self.send_and_close(target.address, struct.pack("<Q", 1 << 62) + b"{}")
        self.send_and_close(target.address, b"MWS\x01\x01" + rng.bytes(48))  # bad psk tag
        self.send_and_close(target.address, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        self.send_and_close(target.address, b"")                          # connect, close
        # A huge length prefix that then stalls, sent from the mesh's own address.
        held = self.connect(target.address)
        held.sendall(struct.pack("<I", 0xFFFFFFFF))

        self.wait_members(nodes, 4)
        self.assert_agreement(nodes, mean_of(paths[:4]), "the attacked mesh vs its exact mean")
        self.assertTrue(any(e.get("reason") == "handshake"
                            for e in self.events(target, "peer_refused")),
                        "the target logged no handshake refusal for the garbage")
        # It still takes new members: a fifth node joins through the attacked one.
        nodes.append(self.new_node("node-4", paths[4], [target.address]))
        self.wait_members(nodes, 5)
        self.assert_agreement(nodes, exact, "5 nodes (one joined after the garbage)")
        # The stalled half handshakes are not held forever.
        for s in stalled + [held]:
            s.settimeout(DEADLINE_S)
            try:
                self.assertEqual(s.recv(1024), b"", "the node answered half a handshake")
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail(f"a stalled half handshake was still open after {DEADLINE_S:g} s")
        self.note("the node closed every stalled half handshake")
        self.note("the target's refusals: " + "; ".join(sorted(set(
            e.get("why", "") for e in self.events(target, "peer_refused")))))
        self.assertIsNone(target.proc.poll())
        self.assertEqual(self.stop_all(nodes), [0] * 5, "exit codes after SIGTERM")


class OperatorInputTest(MeshTestCase):
    """Bad input: one line 'mws-node: ...' on stderr and exit status 2, before doing anything."""

    def run_node(self, *args, key=None, listen="127.0.0.1:0", timeout=DEADLINE_S):
        key = key or os.path.join(self.dir, "ok.key")
        argv = [BINARY, "run", "--key", key, "--listen", listen, *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"still running after {timeout:g} s: {argv}")

    def assert_refused(self, done, *expected_text, logs=False):
        """logs: the node ran for a while, so JSON log lines precede the message."""
        lines = done.stderr.splitlines()
        if logs:
            lines = [line for line in lines if not parse_events(line)]
        self.assertEqual(done.returncode, 2, f"exit status; stderr: {done.stderr!r}")
        self.assertEqual(len(lines), 1, f"expected one line on stderr, got {done.stderr!r}")
        self.assertTrue(lines[0].startswith("mws-node: "), lines[0])
        for text in expected_text:
            self.assertIn(text, lines[0])

    def path(self, name, content=None, mode=0o600):
        p = os.path.join(self.dir, name)
        if content is not None:
            with open(p, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
            os.chmod(p, mode)
        return p

    def test_bad_key_files(self):
        with self.subTest("wrong size"):
            key = self.path("short.key", os.urandom(10))
            self.assert_refused(self.run_node("--random-init", "10", key=key), "short.key")
        for what, at in [("flipped magic", 0), ("flipped key byte", -1)]:
            with self.subTest(what):
                key = self.path(f"flipped-{at}.key")
                public_key(key)
                with open(key, "r+b") as f:
                    data = bytearray(f.read())
                    data[at] ^= 1
                    f.seek(0)
                    f.write(data)
                self.assert_refused(self.run_node("--random-init", "10", key=key), key)
        with self.subTest("empty"):
            key = self.path("empty.key", b"")
            self.assert_refused(self.run_node("--random-init", "10", key=key), "empty.key")
        with self.subTest("mode 0644"):
            key = self.path("open.key")
            public_key(key)
            os.chmod(key, 0o644)
            self.assert_refused(self.run_node("--random-init", "10", key=key), "open.key")
        with self.subTest("a directory"):
            key = self.path("key.d")
            os.mkdir(key)
            self.assert_refused(self.run_node("--random-init", "10", key=key), "key.d")

    def test_listen_addresses_in_use_or_malformed(self):
        busy = socket.socket()
        self.sockets.append(busy)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = "127.0.0.1:%d" % busy.getsockname()[1]
        with self.subTest("peer port in use"):
            self.assert_refused(self.run_node("--random-init", "10", listen=address), address)
        with self.subTest("HTTP port in use"):
            self.assert_refused(self.run_node("--random-init", "10", "--http", address), address)
        with self.subTest("not host:port"):
            self.assert_refused(self.run_node("--random-init", "10", listen="nonsense"),
                                "nonsense")

    def test_bad_model_files(self):
        header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})
        f64 = json.dumps({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})
        cases = {
            "missing": None,
            "shorter than the header length": b"hello",
            "header not JSON": struct.pack("<Q", 10) + b'{"a": nope',
            "huge header length": struct.pack("<Q", 1 << 62) + b"{}",
            "data past the end": struct.pack("<Q", len(header)) + header.encode() + bytes(8),
            "unsupported dtype": struct.pack("<Q", len(f64)) + f64.encode() + bytes(16),
            "empty": b"",
        }
        for i, (what, content) in enumerate(cases.items()):
            with self.subTest(what):
                model = self.path(f"model-{i}.safetensors", content)
                self.assert_refused(self.run_node("--model", model), f"model-{i}.safetensors")
        with self.subTest("a directory"):
            model = self.path("dir.safetensors")
            os.mkdir(model)
            self.assert_refused(self.run_node("--model", model), "dir.safetensors")
        if os.geteuid() != 0:  # root reads mode-000 files anyway
            with self.subTest("unreadable"):
                model = self.path("locked.safetensors", b"\0" * 64, mode=0)
                self.assert_refused(self.run_node("--model", model), "locked.safetensors")

    def test_bad_seed_addresses(self):
        for seed in ["nocolon", "127.0.0.1:99999", "127.0.0.1:port", ":7400", "under_score:7400"]:
            with self.subTest(seed):
                self.assert_refused(self.run_node("--random-init", "10", "--seed", seed), seed)

    def test_bad_psk_and_allowlist_files(self):
        cases = {
            "not hex": ("nothex\n", 0o600),
            "63 digits": ("a" * 63 + "\n", 0o600),
            "65 digits": ("a" * 65 + "\n", 0o600),
            "mode 0644": ("a" * 64 + "\n", 0o644),
        }
        for i, (what, (content, mode)) in enumerate(cases.items()):
            with self.subTest("psk " + what):
                psk = self.path(f"mesh-{i}.psk", content, mode)
                self.assert_refused(self.run_node("--random-init", "10", "--psk-file", psk),
                                    f"mesh-{i}.psk")
        with self.subTest("psk missing"):
            self.assert_refused(self.run_node("--random-init", "10", "--psk-file",
                                              self.path("none.psk")), "none.psk")
        with self.subTest("allowlist not keys"):
            allow = self.path("allow.txt", "garbage\n")
            self.assert_refused(self.run_node("--random-init", "10", "--allowlist", allow),
                                "allow.txt")

    def test_bad_random_init_shapes(self):
        for spec in ["10x0", "abc", "w:3:f64", "w:-3", "w:3,w:4", "x"]:
            with self.subTest(spec):
                self.assert_refused(self.run_node("--random-init", spec))

    def test_a_joiner_with_another_model_exits_naming_the_tensor(self):
        seed_model = self.path("seed.safetensors")
        mwsmesh.write_safetensors(seed_model, {"encoder.weight": np.zeros((8, 4), np.float32),
                                               "encoder.bias": np.zeros(4, np.float32)})
        seed = self.new_node("seed", seed_model)
        variants = {
            "encoder.weight": {"encoder.weight": np.zeros((8, 5), np.float32),
                               "encoder.bias": np.zeros(4, np.float32)},
            "decoder.bias": {"encoder.weight": np.zeros((8, 4), np.float32),
                             "encoder.bias": np.zeros(4, np.float32),
                             "decoder.bias": np.zeros(4, np.float32)},
        }
        for name, tensors in variants.items():
            with self.subTest(name):
                model = self.path(f"other-{name}.safetensors")
                mwsmesh.write_safetensors(model, tensors)
                done = self.run_node("--model", model, "--seed", seed.address,
                                     key=os.path.join(self.dir, f"{name}.key"))
                self.assert_refused(done, name, logs=True)
        self.assertEqual(seed.status()["members_alive"], 1)
        self.assertEqual(self.stop_all([seed]), [0])

    def test_a_joiner_with_another_algorithm_exits_naming_both(self):
        paths, _ = mwsmesh.random_models(self.dir, 2, {"w": (4,)}, seed=3)
        seed = self.new_node("seed", paths[0])
        done = self.run_node("--model", paths[1], "--seed", seed.address, "--algorithm", "exact")
        self.assert_refused(done, "averages with push-sum, this node with exact", logs=True)
        self.assertEqual(seed.status()["members_alive"], 1)
        self.assertEqual(self.stop_all([seed]), [0])

    def test_device_cuda_without_a_usable_gpu_exits_saying_why(self):
        if os.path.exists("/dev/nvidia0"):
            self.skipTest("this machine has a GPU")
        done = self.run_node("--random-init", "10", "--device", "cuda")
        self.assert_refused(done, "--device cuda:", logs=True)

    def test_status_and_export_without_a_node_fail_with_a_message(self):
        port = mwsmesh.free_ports(1)[0]
        for argv in (["status"], ["export", "--out", self.path("out.safetensors")]):
            with self.subTest(argv[0]):
                done = subprocess.run([BINARY, *argv, "--http", f"127.0.0.1:{port}"],
                                      capture_output=True, text=True, timeout=DEADLINE_S)
                self.assertNotEqual(done.returncode, 0)
                self.assertTrue(done.stderr.startswith("mws-node: "), done.stderr)
                self.assertIn(str(port), done.stderr)
                self.assertFalse(os.path.exists(self.path("out.safetensors")))

    def test_command_line_usage_errors_exit_2_with_one_line(self):
        cases = {
            "unknown option": ["--random-init", "10", "--bogus"],
            "out of range": ["--random-init", "10", "--tick-ms", "0"],
            "not a number": ["--random-init", "10", "--checkpoint-s", "abc"],
            "exclusive options": ["--random-init", "10", "--model", "m.safetensors"],
            "unknown algorithm": ["--random-init", "10", "--algorithm", "gossip"],
            "epoch out of range": ["--random-init", "10", "--epoch-s", "0"],
        }
        for what, args in cases.items():
            with self.subTest(what):
                self.assert_refused(self.run_node(*args))


def main():
    global BINARY, VERBOSE
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--binary", default=BINARY)
    args, rest = p.parse_known_args()
    BINARY = os.path.abspath(args.binary)
    VERBOSE = "-v" in rest or "--verbose" in rest
    if not os.access(BINARY, os.X_OK):
        print(f"mesh_test.py: no mws-node at {BINARY} (give --binary)", file=sys.stderr)
        return 2
    program = unittest.main(argv=[sys.argv[0], *rest], exit=False)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
