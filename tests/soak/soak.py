#!/usr/bin/python3
"""Load and soak client: many connections, many requests in flight, every
byte read checked against a model of the disk.

Runs on whichever libnbd.so.0 the dynamic loader gives Python's `nbd`
module (Debian's python3-libnbd): Debian's libnbd, or ours when
LD_LIBRARY_PATH points at our build. --expect-libnbd makes the run fail
unless that file is the one mapped into this process.

The model is a bytearray as large as the export, all zeros at the start
(the server must serve a fresh memory disk). A write updates the model
when the server acknowledges it. To make the expected value of every read
exact, the scheduler never has two overlapping requests in flight where
one of them changes data: no read overlaps an in-flight write or zero,
and no write or zero overlaps any in-flight request. Requests run
through the AIO calls (aio_pread, aio_pwrite, aio_zero, aio_flush) with
completion callbacks, driven by one poll loop over every connection.

Output: progress lines, then one "SOAK-RESULT key=value ..." line and
"SOAK-OK LABEL" when nothing failed. Exit status 0 only then.

SOAK_CORRUPT_MODEL=1 flips a byte of the model during the run and reads
it back: the run must then fail, which proves that reads are verified.
"""

import argparse
import faulthandler
import math
import os
import random
import select
import shutil
import subprocess
import sys
import threading
import time

import nbd

SECTOR = 512
# Latency histogram: bucket i holds latencies in [GROWTH^i, GROWTH^(i+1)) us.
GROWTH = 1.02
LOG_GROWTH = math.log(GROWTH)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--socket", required=True, help="server's Unix socket")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--depth", type=int, default=64, help="requests in flight per connection")
    p.add_argument("--label", default="soak")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--server-pid", type=int, default=None, help="sample this process's RSS")
    p.add_argument("--rss-interval", type=float, default=None, help="seconds between progress/RSS lines")
    p.add_argument("--stall-seconds", type=float, default=30,
                   help="fail when requests are in flight and none completes for this long")
    p.add_argument("--max-rss-mib", type=int, default=None,
                   help="fail when the server or this client exceeds this resident size "
                        "(default: twice the export plus 512 MiB)")
    p.add_argument("--tls-psk", default=None, help="PSK key file: connect with TLS required")
    p.add_argument("--tls-user", default="alice")
    p.add_argument("--expect-libnbd", default=None,
                   help="fail unless this file is the libnbd.so mapped into the process")
    return p.parse_args()


def mapped_libnbd():
    """The libnbd.so files mapped into this process, by real path."""
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "/libnbd.so" in fields[5]:
                found.add(os.path.realpath(fields[5]))
    return sorted(found)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Histogram:
    def __init__(self):
        self.counts = {}
        self.n = 0
        self.max_us = 0.0

    def add(self, us):
        us = max(us, 1.0)
        i = int(math.log(us) / LOG_GROWTH)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.n += 1
        if us > self.max_us:
            self.max_us = us

    def percentile(self, q):
        if self.n == 0:
            return 0.0
        want = math.ceil(q * self.n)
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= want:
                # The bucket's upper bound: never reports less than the truth.
                return min(GROWTH ** (i + 1), self.max_us)
        return self.max_us


class Soak:
    def __init__(self, args):
        self.args = args
        seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.seed = seed
        self.rng = random.Random(seed)
        self.errors = []
        self.ops = {"read": 0, "write": 0, "zero": 0, "flush": 0}
        self.bytes_read = 0
        self.bytes_written = 0
        self.hist = Histogram()
        self.in_flight = 0
        self.last_completion = time.monotonic()
        self.corrupt = os.environ.get("SOAK_CORRUPT_MODEL") == "1"
        self.corrupted_at = None
        self.forced_read = None

    # ------------------------------------------------------------ setup
    def connect(self):
        a = self.args
        self.handles = []
        for i in range(a.connections):
            h = nbd.NBD()
            h.set_handle_name(f"{a.label}-{i}")
            if a.tls_psk:
                h.set_tls(nbd.TLS_REQUIRE)
                h.set_tls_psk_file(a.tls_psk)
                h.set_tls_username(a.tls_user)
            h.connect_unix(a.socket)
            if a.tls_psk and not h.get_tls_negotiated():
                raise SystemExit(f"{a.label}: connection {i}: TLS was not negotiated")
            self.handles.append(h)
        h0 = self.handles[0]
        self.size = h0.get_size()
        self.can_zero = h0.can_zero()
        self.can_flush = h0.can_flush()
        self.nsect = (self.size + SECTOR - 1) // SECTOR
        self.model = bytearray(self.size)
        # Requests in flight per sector: writes (and zeroes) and reads.
        self.wbusy = bytearray(self.nsect)
        self.rbusy = [0] * self.nsect

    # ------------------------------------------------------------ scheduling
    def pick_range(self):
        """A random byte range: mostly small sector-aligned requests, some
        large ones, some at arbitrary byte offsets."""
        r = self.rng.random()
        if r < 0.25:
            length = self.rng.randint(1, 65536)
            off = self.rng.randrange(0, self.size - length + 1)
        else:
            nsec = self.rng.randint(1, 8) if r < 0.85 else self.rng.randint(9, 256)
            length = min(nsec * SECTOR, self.size)
            off = self.rng.randrange(0, (self.size - length) // SECTOR + 1) * SECTOR
        return off, length

    def sectors(self, off, length):
        return off // SECTOR, (off + length + SECTOR - 1) // SECTOR

    def read_ok(self, a, b):
        return not any(self.wbusy[a:b])

    def write_ok(self, a, b):
        return not any(self.wbusy[a:b]) and not any(self.rbusy[a:b])

    def issue(self, h):
        """Issue one request on h; False if none could be placed."""
        if self.forced_read is not None:
            off, length = self.forced_read
            a, b = self.sectors(off, length)
            if self.read_ok(a, b):
                self.forced_read = None
                self.start_read(h, off, length, a, b)
                return True
        r = self.rng.random()
        if r < 0.01 and self.can_flush:
            self.start_flush(h)
            return True
        for _ in range(4):
            off, length = self.pick_range()
            a, b = self.sectors(off, length)
            if r < 0.50:
                if self.read_ok(a, b):
                    self.start_read(h, off, length, a, b)
                    return True
            elif self.write_ok(a, b):
                if r < 0.54 and self.can_zero:
                    self.start_zero(h, off, length, a, b)
                else:
                    self.start_write(h, off, length, a, b)
                return True
        return False

    def start_read(self, h, off, length, a, b):
        for s in range(a, b):
            self.rbusy[s] += 1
        # A bytearray, not an nbd.Buffer: python3-libnbd 1.14 never frees
        # an nbd.Buffer passed to an AIO call (whichever libnbd.so runs
        # under it), which at 10,000 requests/s exhausts memory in
        # minutes. A bytearray is released when the command retires.
        buf = bytearray(length)
        t0 = time.monotonic()

        def done(err):
            self.finish(t0)
            for s in range(a, b):
                self.rbusy[s] -= 1
            if err.value != 0:
                self.fail(f"read {length}@{off}: error {err.value} ({os.strerror(err.value)})")
                return 1
            got = buf
            want = self.model[off:off + length]
            if got != want:
                i = next(i for i in range(length) if got[i] != want[i])
                self.fail(f"MISMATCH read {length}@{off}: byte {off + i} is "
                          f"{got[i]:#04x}, the model says {want[i]:#04x}")
            self.ops["read"] += 1
            self.bytes_read += length
            return 1

        h.aio_pread(buf, off, completion=done)
        self.in_flight += 1

    def start_write(self, h, off, length, a, b):
        for s in range(a, b):
            self.wbusy[s] = 1
        data = self.rng.randbytes(length)
        buf = bytearray(data)  # not an nbd.Buffer: see start_read
        t0 = time.monotonic()

        def done(err):
            self.finish(t0)
            self.wbusy[a:b] = bytes(b - a)
            if err.value != 0:
                self.fail(f"write {length}@{off}: error {err.value} ({os.strerror(err.value)})")
                return 1
            self.model[off:off + length] = data
            self.ops["write"] += 1
            self.bytes_written += length
            return 1

        h.aio_pwrite(buf, off, completion=done)
        self.in_flight += 1

    def start_zero(self, h, off, length, a, b):
        for s in range(a, b):
            self.wbusy[s] = 1
        t0 = time.monotonic()

        def done(err):
            self.finish(t0)
            self.wbusy[a:b] = bytes(b - a)
            if err.value != 0:
                self.fail(f"zero {length}@{off}: error {err.value} ({os.strerror(err.value)})")
                return 1
            self.model[off:off + length] = bytes(length)
            self.ops["zero"] += 1
            return 1

        h.aio_zero(length, off, completion=done)
        self.in_flight += 1

    def start_flush(self, h):
        t0 = time.monotonic()

        def done(err):
            self.finish(t0)
            if err.value != 0:
                self.fail(f"flush: error {err.value} ({os.strerror(err.value)})")
            else:
                self.ops["flush"] += 1
            return 1

        h.aio_flush(completion=done)
        self.in_flight += 1

    def finish(self, t0):
        now = time.monotonic()
        self.in_flight -= 1
        self.last_completion = now
        self.hist.add((now - t0) * 1e6)

    def fail(self, msg):
        if len(self.errors) < 20:
            print(f"{self.args.label}: ERROR {msg}", flush=True)
        self.errors.append(msg)

    def corrupt_model(self):
        """Flip one byte of the model where no write is in flight, and
        read it back next: the read must then be reported as a mismatch."""
        for _ in range(1000):
            off = self.rng.randrange(0, self.size)
            a, b = self.sectors(off, 1)
            if self.read_ok(a, b):
                self.model[off] ^= 0x5A
                self.forced_read = (off, 1)
                self.corrupted_at = off
                print(f"{self.args.label}: SOAK_CORRUPT_MODEL: corrupted the model at byte {off}",
                      flush=True)
                return

    # ------------------------------------------------------------ poll loop
    def pump(self, timeout_ms):
        """One round of poll over every connection, and the notifications."""
        self.watch.beat = time.monotonic()
        p = select.poll()
        by_fd = {}
        for h in self.handles:
            d = h.aio_get_direction()
            ev = 0
            if d & nbd.AIO_DIRECTION_READ:
                ev |= select.POLLIN
            if d & nbd.AIO_DIRECTION_WRITE:
                ev |= select.POLLOUT
            if ev:
                fd = h.aio_get_fd()
                p.register(fd, ev)
                by_fd[fd] = h
        for fd, rev in p.poll(timeout_ms):
            h = by_fd[fd]
            if rev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                h.aio_notify_read()
            elif rev & select.POLLOUT:
                h.aio_notify_write()

    def check_stall(self):
        if self.in_flight > 0 and time.monotonic() - self.last_completion > self.args.stall_seconds:
            self.fail(f"watchdog: {self.in_flight} requests in flight and none completed "
                      f"for {self.args.stall_seconds:.0f} s")
            return True
        return False

    def run(self):
        a = self.args
        interval = a.rss_interval or max(1.0, min(10.0, a.seconds / 6))
        self.rss = []
        self.client_rss_start = rss_kib(os.getpid())
        start = time.monotonic()
        self.sample_rss(0.0)
        next_report = start + interval
        deadline = start + a.seconds
        corrupt_time = start + min(1.0, a.seconds / 4)
        ops_at_last, last_report = 0, start
        while not self.errors:
            now = time.monotonic()
            if now >= deadline:
                break
            if self.corrupt and self.corrupted_at is None and now >= corrupt_time:
                self.corrupt_model()
            for h in self.handles:
                while h.aio_in_flight() < a.depth and self.issue(h):
                    pass
            # Reported below: how full the queues are after a refill.
            filled = self.in_flight
            self.pump(1000)
            if self.check_stall():
                break
            if now >= next_report:
                total = sum(self.ops.values())
                self.sample_rss(now - start)
                if self.over_memory_limit():
                    break
                rss = f", server RSS {self.rss[-1][1]} KiB" if self.rss and self.rss[-1][1] else ""
                rss += f", client RSS {rss_kib(os.getpid())} KiB"
                print(f"{a.label}: t={now - start:5.0f}s ops={total} "
                      f"({(total - ops_at_last) / (now - last_report):.0f}/s), "
                      f"in flight {filled}{rss}", flush=True)
                ops_at_last, last_report = total, now
                # One line per interval, even after a loop that ran late.
                while next_report <= now:
                    next_report += interval
        self.elapsed = time.monotonic() - start
        # Drain what is in flight, under the same stall watchdog.
        while self.in_flight > 0 and not self.check_stall():
            self.pump(1000)
        self.sample_rss(time.monotonic() - start)
        if not self.errors:
            self.verify_whole_disk()
        # A clean disconnect only after a clean run: nbd_shutdown waits
        # for the requests still in flight, which after a stall may never
        # come back.
        if not self.errors:
            for h in self.handles:
                self.watch.beat = time.monotonic()
                try:
                    h.shutdown()
                except nbd.Error as e:
                    self.fail(f"shutdown: {e}")
        # The handles close (nbd_close) when the last reference goes.
        self.handles = []

    def over_memory_limit(self):
        """Memory must stay bounded over a run: a server or client whose
        resident size keeps growing fails it (and never takes the machine
        down with it)."""
        limit = self.args.max_rss_mib or (2 * self.size >> 20) + 512
        for who, kib in (("server", self.rss[-1][1] if self.rss else None),
                         ("client", rss_kib(os.getpid()))):
            if kib is not None and kib > limit << 10:
                self.fail(f"{who} resident memory {kib >> 10} MiB is over the limit of {limit} MiB")
                return True
        return False

    def sample_rss(self, t):
        if self.args.server_pid:
            self.rss.append((t, rss_kib(self.args.server_pid)))

    def verify_whole_disk(self):
        """Read the whole export back (sync calls) and compare with the model."""
        h = self.handles[-1]
        chunk = 4 << 20
        for off in range(0, self.size, chunk):
            self.watch.beat = time.monotonic()
            n = min(chunk, self.size - off)
            got = h.pread(n, off)
            if got != self.model[off:off + n]:
                i = next(i for i in range(n) if got[i] != self.model[off + i])
                self.fail(f"MISMATCH final read-back: byte {off + i} is {got[i]:#04x}, "
                          f"the model says {self.model[off + i]:#04x}")
                return

    def report(self):
        a = self.args
        total = sum(self.ops.values())
        rss = [kib for _, kib in self.rss if kib is not None]
        fields = {
            "label": a.label,
            "libnbd": self.version,
            "tls": "psk" if a.tls_psk else "off",
            "connections": a.connections,
            "depth": a.depth,
            "seconds": f"{self.elapsed:.1f}",
            "ops": total,
            "ops_per_s": f"{total / max(self.elapsed, 1e-9):.0f}",
            "reads": self.ops["read"],
            "writes": self.ops["write"],
            "zeroes": self.ops["zero"],
            "flushes": self.ops["flush"],
            "MiB_read": self.bytes_read >> 20,
            "MiB_written": self.bytes_written >> 20,
            "errors": len(self.errors),
            "p50_us": f"{self.hist.percentile(0.50):.0f}",
            "p99_us": f"{self.hist.percentile(0.99):.0f}",
            "max_us": f"{self.hist.max_us:.0f}",
            "seed": self.seed,
        }
        if rss:
            fields.update(rss_start_kib=rss[0], rss_end_kib=rss[-1], rss_max_kib=max(rss))
        # The client's own memory: a library that never frees what a
        # request holds (buffers, callbacks) shows here first.
        fields.update(client_rss_start_kib=self.client_rss_start, client_rss_end_kib=rss_kib(os.getpid()))
        print("SOAK-RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
        if rss and len(self.rss) > 2:
            print(f"{a.label}: server RSS over time (s:KiB): "
                  + " ".join(f"{t:.0f}:{kib}" for t, kib in self.rss if kib is not None), flush=True)


class StuckWatch(threading.Thread):
    """Ends the run when the main loop has not come round for
    `limit` seconds: it is then stuck inside a libnbd call (the Python
    binding releases the GIL in them, so this thread still runs), where
    the in-loop stall check cannot see it. Prints where the main thread
    is (its system call, and gdb's backtrace when gdb is installed)
    before exiting with status 3."""

    def __init__(self, label, limit):
        super().__init__(daemon=True)
        self.label, self.limit = label, limit
        self.beat = time.monotonic()

    def run(self):
        while True:
            time.sleep(1)
            stuck = time.monotonic() - self.beat
            if stuck > self.limit:
                self.report(stuck)
                os._exit(3)

    def report(self, stuck):
        pid = os.getpid()
        print(f"{self.label}: ERROR watchdog: the main loop has been inside one libnbd "
              f"call for {stuck:.0f} s", flush=True)
        for name in ("syscall", "wchan"):
            try:
                with open(f"/proc/{pid}/task/{pid}/{name}") as f:
                    print(f"{self.label}: main thread {name}: {f.read().strip()}", flush=True)
            except OSError:
                pass
        gdb = shutil.which("gdb")
        if gdb:
            try:
                bt = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                                    capture_output=True, text=True, timeout=60).stdout
                print("\n".join(line for line in bt.splitlines() if line.startswith(("#", "Thread"))),
                      flush=True)
            except (OSError, subprocess.TimeoutExpired):
                pass


def main():
    args = parse_args()
    # The watchdog of last resort: a thread that dumps the stacks and ends
    # the process even when the main thread is stuck inside libnbd.
    faulthandler.dump_traceback_later(args.seconds + 2 * args.stall_seconds + 60, exit=True)

    libs = mapped_libnbd()
    version = nbd.NBD().get_version()
    print(f"{args.label}: libnbd {version} loaded from {', '.join(libs) or '(none found)'}",
          flush=True)
    if args.expect_libnbd and libs != [os.path.realpath(args.expect_libnbd)]:
        print(f"{args.label}: FAILED: expected libnbd {os.path.realpath(args.expect_libnbd)}",
              flush=True)
        return 1

    soak = Soak(args)
    soak.version = version
    soak.watch = StuckWatch(args.label, args.stall_seconds)
    soak.watch.start()
    try:
        soak.connect()
    except nbd.Error as e:
        print(f"{args.label}: FAILED: connect: {e}", flush=True)
        return 1
    print(f"{args.label}: {args.connections} connections x {args.depth} in flight, "
          f"export {soak.size >> 20} MiB, {args.seconds:.0f} s, seed {soak.seed}", flush=True)
    try:
        soak.run()
    except nbd.Error as e:
        soak.fail(f"libnbd: {e}")
        soak.elapsed = getattr(soak, "elapsed", 0.0)
    soak.report()
    if soak.errors:
        print(f"{args.label}: FAILED with {len(soak.errors)} error(s); first: {soak.errors[0]}",
              flush=True)
        return 1
    print(f"SOAK-OK {args.label}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
