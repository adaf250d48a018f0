#!/usr/bin/env python3
"""The shim from Python, waiting for the write lock, with either driver:

    test_python.py apsw EXT      the SQLite that the PyPI package apsw bundles (3.54, built with
                                 SQLITE_ENABLE_SETLK_TIMEOUT): SQLite tells the VFS its busy
                                 timeout and takes the write lock before it reads
    test_python.py sqlite3 EXT   the standard library's module on the system libsqlite3 (3.40.1
                                 on Debian): the wait is tshm_wait_ms on the URI, and a waiter
                                 handed the lock after a commit retries through its busy handler

(EXT: libtshm_sqlite.so.) Exits 0 with a note when the driver is missing or this Python cannot
load extensions. Processes are forked; the writer that holds the lock is told when to commit
once the waiter is seen queued in the sidecar (the waiters bit of the writer role word), never
after a sleep.
"""

import os
import signal
import struct
import sys
import threading
import time

DRIVER = sys.argv[1] if len(sys.argv) == 3 else ""
try:
    if DRIVER == "apsw":
        import apsw
    elif DRIVER == "sqlite3":
        import sqlite3

        if not hasattr(sqlite3.Connection, "enable_load_extension"):
            print(f"test_python sqlite3: {sys.executable} cannot load extensions: skipped")
            sys.exit(0)
    else:
        sys.exit("usage: test_python.py apsw|sqlite3 EXT")
except ImportError:
    print(f"test_python: {DRIVER} is not installed for {sys.executable}: skipped")
    sys.exit(0)


class Busy(Exception):
    pass


class Conn:
    """One connection through the shim; `wait_ms`: how long the write lock (and the busy
    handler) may wait."""

    def __init__(self, path, wait_ms=0):
        if DRIVER == "apsw":
            self.c = apsw.Connection(path, vfs="tshm")
            if wait_ms:
                self.c.set_busy_timeout(wait_ms)
        else:
            uri = f"file:{path}?vfs=tshm" + (f"&tshm_wait_ms={wait_ms}" if wait_ms else "")
            self.c = sqlite3.connect(uri, uri=True, timeout=wait_ms / 1000, isolation_level=None)

    def execute(self, sql, args=()):
        try:
            return self.c.execute(sql, args).fetchall()
        except Exception as e:
            if "locked" in str(e) or "busy" in str(e).lower():
                raise Busy(str(e)) from e
            raise

    def close(self):
        self.c.close()

failed = passed = 0


def check(cond, what):
    global failed, passed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}", file=sys.stderr)


def fresh(path):
    for sfx in ("", "-wal", "-shm", "-tshm"):
        try:
            os.unlink(path + sfx)
        except FileNotFoundError:
            pass
    db = Conn(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(x)")
    db.close()


def queued(path):
    """Whether a connection waits for the write lock now: an instance record with a writer
    ticket (shared-memory roles; header: instances offset at byte 40, high-water mark at 632;
    record: 128 bytes, ticket at +32), or the writer waiter count (u32 at byte 200; byte-lock
    roles). Not the role word's waiters bit: it outlives a waiter that gave up."""
    try:
        with open(path + "-tshm", "rb") as f:
            head = f.read(636)
            if len(head) < 636:
                return False
            if struct.unpack_from("<I", head, 200)[0] != 0:
                return True
            inst, hwm = struct.unpack_from("<Q", head, 40)[0], struct.unpack_from("<I", head, 632)[0]
            for i in range(min(hwm, 64)):
                f.seek(inst + 128 * i + 32)
                t = f.read(8)
                if len(t) == 8 and struct.unpack("<Q", t)[0] != 0:
                    return True
    except OSError:
        pass
    return False


def holder(path, value):
    """A child holding the write lock in an open transaction; returns (pid, commit_fd)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            c = Conn(path)
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO t VALUES(?)", (value,))
            os.write(ready_w, b"r")
            if os.read(go_r, 1) == b"c":
                c.execute("COMMIT")
            os._exit(0)
        except BaseException as e:
            print(f"holder: {e}", file=sys.stderr)
            os._exit(1)
    os.close(ready_w)
    os.close(go_r)
    check(os.read(ready_r, 1) == b"r", "the holder took the write lock")
    os.close(ready_r)
    return pid, go_w


def when_queued(path, then):
    """A thread that runs then() once a waiter is queued (10 s at most; a failure, not a hang)."""

    def run():
        end = time.monotonic() + 10
        while not queued(path) and time.monotonic() < end:
            time.sleep(0)
        check(queued(path), "the waiter queued for the write lock in the sidecar")
        then()

    t = threading.Thread(target=run)
    t.start()
    return t


def handed_over(path):
    fresh(path)
    pid, go = holder(path, 1)
    b = Conn(path, 10000)
    t = when_queued(path, lambda: os.write(go, b"c"))
    b.execute("BEGIN IMMEDIATE")  # blocks in the shim until the holder commits
    b.execute("INSERT INTO t VALUES(2)")
    b.execute("COMMIT")
    t.join()
    check(os.waitpid(pid, 0)[1] == 0, "the holder committed")
    check(b.execute("SELECT count(*) FROM t")[0][0] == 2, "both transactions are there")
    b.close()


def holder_killed(path):
    fresh(path)
    pid, go = holder(path, 99)
    b = Conn(path, 10000)
    t = when_queued(path, lambda: os.kill(pid, signal.SIGKILL))
    b.execute("BEGIN IMMEDIATE")  # the dead holder's lock is taken over within a wait slice
    b.execute("INSERT INTO t VALUES(3)")
    b.execute("COMMIT")
    t.join()
    os.waitpid(pid, 0)
    os.close(go)
    check(b.execute("SELECT count(*) FROM t WHERE x = 99")[0][0] == 0, "the killed transaction left nothing")
    check(b.execute("SELECT count(*) FROM t")[0][0] == 1, "the waiter's transaction is there")
    check(b.execute("PRAGMA integrity_check")[0][0] == "ok", "integrity after the kill")
    b.close()


def bounded(path):
    fresh(path)
    pid, go = holder(path, 1)
    b = Conn(path, 100)
    try:
        b.execute("BEGIN IMMEDIATE")
        check(False, "BEGIN IMMEDIATE behind a holder that never commits is busy")
    except Busy:
        check(True, "")
    b.close()
    os.write(go, b"c")
    check(os.waitpid(pid, 0)[1] == 0, "the holder committed after all")


def main():
    signal.alarm(120)
    ext = sys.argv[2]
    if DRIVER == "apsw":
        m = apsw.Connection(":memory:")
        m.enable_load_extension(True)
        m.load_extension(ext)
        setlk = "ENABLE_SETLK_TIMEOUT" in apsw.compile_options
        version = f"{apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()}{', SETLK_TIMEOUT' if setlk else ''})"
    else:
        m = sqlite3.connect(":memory:")
        m.enable_load_extension(True)
        m.load_extension(ext[:-3] if ext.endswith(".so") else ext)
        options = [r[0] for r in m.execute("PRAGMA compile_options")]
        setlk = "ENABLE_SETLK_TIMEOUT" in options
        version = f"{sqlite3.sqlite_version} (the sqlite3 module of {sys.executable}{', SETLK_TIMEOUT' if setlk else ''})"
    base = os.environ.get("TSHM_TEST_DIR", "/tmp") + f"/tshm-python-{os.getpid()}"
    os.makedirs(base, exist_ok=True)
    print(f"  SQLite {version}")
    for name, fn in (("handed over at commit", handed_over), ("past a killed holder", holder_killed),
                     ("bounded by the busy timeout", bounded)):
        t0 = time.monotonic()
        fn(f"{base}/{fn.__name__}.db")
        print(f"  the write lock {name}: {(time.monotonic() - t0) * 1e3:.0f} ms")
    print(f"test_python {DRIVER}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
