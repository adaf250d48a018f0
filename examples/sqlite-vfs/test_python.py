#!/usr/bin/env python3
"""The shim from Python, with either driver:

    test_python.py apsw EXT      the SQLite that the PyPI package apsw bundles (3.54, built with
                                 SQLITE_ENABLE_SETLK_TIMEOUT): SQLite tells the VFS its busy
                                 timeout and takes the write lock before it reads
    test_python.py sqlite3 EXT   the standard library's module on the system libsqlite3 (3.40.1
                                 on Debian): the wait is tshm_wait_ms on the URI, and a waiter
                                 handed the lock after a commit retries through its busy handler

(EXT: libtshm_sqlite.so.) Exits 0 with a note when the driver is missing or this Python cannot
load extensions.

The tests: waiting for the write lock (handed over at commit, past a killed holder, bounded by
the busy timeout); writer and reader processes with checkpoints of every mode; a writer killed
with its pages in the WAL; stock SQLite kept out; mode=ro readers; and SQLite's contract, each
scenario run on stock SQLite and through the shim with the same outcome (locking_mode=EXCLUSIVE,
journal_mode switches, wal_autocheckpoint, journal_size_limit, VACUUM INTO, the backup API, immutable=1).

Processes are forked and report through pipes; a crash is a SIGKILL. Nothing waits for a sleep:
the writer that holds the lock is told when to commit once the waiter is seen queued in the
sidecar, and every other step waits for a byte on a pipe or for a child's exit.
"""

import os
import pickle
import shutil
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


BUSY, LOCKED, READONLY, PROTOCOL = 5, 6, 8, 15  # SQLite's primary result codes
READONLY_RECOVERY, READONLY_CANTINIT = 264, 1288  # extended codes of SQLITE_READONLY


class DbError(Exception):
    """A SQLite error; `code` is the extended result code, `primary` its low byte."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.primary = code & 0xFF


class Busy(DbError):
    """SQLITE_BUSY or SQLITE_LOCKED."""


def result_code(e):
    """The extended result code of a driver's exception, or None when it is not SQLite's."""
    if DRIVER == "apsw":
        return getattr(e, "extendedresult", None) or getattr(e, "result", None)
    return getattr(e, "sqlite_errorcode", None)


open_conns = 0  # connections open in this process: a fork must not carry one into a child


class Conn:
    """One connection: through the shim, or through `vfs` ("unix": stock SQLite); `wait_ms`: how
    long the write lock (and the busy handler) may wait; `readonly`: opened read-only (mode=ro);
    `immutable`: opened with immutable=1 (read-only, no locks)."""

    def __init__(self, path, wait_ms=0, vfs="tshm", readonly=False, immutable=False):
        global open_conns
        params = ("&mode=ro" if readonly else "") + ("&immutable=1" if immutable else "")
        try:
            if DRIVER == "apsw":
                if params:
                    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
                    self.c = apsw.Connection(f"file:{path}?{params[1:]}", flags=flags, vfs=vfs)
                else:
                    self.c = apsw.Connection(path, vfs=vfs)
                if wait_ms:
                    self.c.set_busy_timeout(wait_ms)
            else:
                uri = f"file:{path}?vfs={vfs}" + params
                if wait_ms and vfs == "tshm":
                    uri += f"&tshm_wait_ms={wait_ms}"
                self.c = sqlite3.connect(uri, uri=True, timeout=wait_ms / 1000, isolation_level=None)
        except Exception as e:
            raise as_db_error(e) from e
        open_conns += 1

    def execute(self, sql, args=()):
        try:
            return self.c.execute(sql, args).fetchall()
        except Exception as e:
            raise as_db_error(e) from e

    def error(self, sql, args=()):
        """The result code `sql` fails with, None when it succeeds."""
        return failure(self.execute, sql, args)

    def rollback(self):
        try:
            self.execute("ROLLBACK")
        except DbError:
            pass  # no transaction was open

    def close(self):
        global open_conns
        self.c.close()
        open_conns -= 1


def db_error(code, msg):
    return (Busy if code & 0xFF in (BUSY, LOCKED) else DbError)(code, msg)


def as_db_error(e):
    code = result_code(e)
    return e if code is None else db_error(code, str(e))


def register_stock_fast():
    """Registers "unix-nosleep": stock SQLite's unix VFS whose xSleep returns at once. It runs the
    same locking and -shm code as "unix", but a WAL read that finds no usable wal-index gives up
    after its 100 retries in milliseconds instead of about 10 s of sleeps, whatever the busy
    timeout (as test_sqlite.c's stock_fast)."""
    global stock_fast
    if DRIVER == "apsw":

        class NoSleep(apsw.VFS):
            def __init__(self):
                super().__init__("unix-nosleep", "unix")

            def xSleep(self, microseconds):
                return microseconds

        stock_fast = NoSleep()
        return
    import ctypes

    lib = ctypes.CDLL("libsqlite3.so.0")  # the library the sqlite3 module is linked with
    lib.sqlite3_vfs_find.restype = ctypes.c_void_p
    lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
    lib.sqlite3_vfs_register.argtypes = [ctypes.c_void_p, ctypes.c_int]
    SLEEP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)

    class Vfs(ctypes.Structure):  # sqlite3_vfs, version 3: 3 ints, 3 pointers, 16 methods
        _fields_ = [("iVersion", ctypes.c_int), ("szOsFile", ctypes.c_int), ("mxPathname", ctypes.c_int),
                    ("pNext", ctypes.c_void_p), ("zName", ctypes.c_char_p), ("pAppData", ctypes.c_void_p)] + \
                   [(m, ctypes.c_void_p) for m in ("xOpen", "xDelete", "xAccess", "xFullPathname", "xDlOpen",
                                                   "xDlError", "xDlSym", "xDlClose", "xRandomness")] + \
                   [("xSleep", SLEEP)] + \
                   [(m, ctypes.c_void_p) for m in ("xCurrentTime", "xGetLastError", "xCurrentTimeInt64",
                                                   "xSetSystemCall", "xGetSystemCall", "xNextSystemCall")]

    unix = Vfs.from_address(lib.sqlite3_vfs_find(b"unix"))
    assert unix.iVersion == 3
    vfs = Vfs.from_buffer_copy(unix)
    vfs.pNext = None
    vfs.zName = b"unix-nosleep"
    vfs.xSleep = SLEEP(lambda v, microseconds: microseconds)
    lib.sqlite3_vfs_register(ctypes.byref(vfs), 0)
    stock_fast = vfs  # kept alive for as long as SQLite may call it


failed = passed = 0


def failure(fn, *args):
    """The result code fn(*args) fails with, None when it succeeds."""
    try:
        fn(*args)
        return None
    except DbError as e:
        return e.code


def check(cond, what):
    global failed, passed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}", file=sys.stderr)


def fresh(path, vfs="tshm"):
    for sfx in ("", "-wal", "-shm", "-tshm", "-journal"):
        try:
            os.unlink(path + sfx)
        except FileNotFoundError:
            pass
    db = Conn(path, vfs=vfs)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(x)")
    db.close()


# ------------------------------------------------------------------------------------------
# Child processes. A child is forked with no connection open in its parent (SQLite's unix VFS
# would hand the child the parent's file locks' bookkeeping) and first closes the pipe ends its
# parent keeps, so that a pipe's EOF reaches the child waiting for it. Children report through
# pipes and their exit status; only the parent counts checks.

kept = set()  # pipe ends this process keeps while its children run


def keep(fd):
    kept.add(fd)
    return fd


def release(fd):
    kept.discard(fd)
    os.close(fd)


def spawn(fn, *args, give=()):
    """Forks a child that runs fn(*args) and exits 0 when it returns, 1 when it raises; `give`:
    the pipe ends that are the child's, closed here once it has them."""
    if open_conns:
        raise RuntimeError("fork with a connection open")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in kept:
                os.close(fd)
            kept.clear()
            fn(*args)
            code = 0
        except BaseException as e:
            print(f"{fn.__name__}: {e!r}", file=sys.stderr)
        finally:
            os._exit(code)
    for fd in give:
        os.close(fd)
    return pid


def exited_ok(pid):
    return os.waitpid(pid, 0)[1] == 0


def send(fd, obj):
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<I", len(data)) + data)


def receive(fd):
    """The next object on fd; None at EOF."""
    head = read_exactly(fd, 4)
    return None if head is None else pickle.loads(read_exactly(fd, struct.unpack("<I", head)[0]))


def read_exactly(fd, n):
    buf = b""
    while len(buf) < n:
        more = os.read(fd, n - len(buf))
        if not more:
            return None
        buf += more
    return buf


def serve(req, rep, path, conn_args):
    """An actor's body: one connection, the parent's requests one at a time until "stop"."""
    try:
        c = Conn(path, **conn_args)
        send(rep, ("ok", None))
    except DbError as e:
        send(rep, ("err", e.code, str(e)))
        return
    while True:
        msg = receive(req)
        if msg is None or msg[0] == "stop":
            break
        try:
            if msg[0] == "sql":
                send(rep, ("ok", c.execute(msg[1], msg[2])))
            else:
                send(rep, ("ok", globals()[msg[1]](c, *msg[2])))
        except DbError as e:
            send(rep, ("err", e.code, str(e)))
    c.close()


class Actor:
    """A connection in a child process of its own (opened as Conn(path, **conn_args)), running the
    statements and functions the parent sends, one at a time."""

    def __init__(self, path, **conn_args):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.pid = spawn(serve, req_r, rep_w, path, conn_args, give=(req_r, rep_w))
        self.req, self.rep = keep(req_w), keep(rep_r)
        self.reply()

    def reply(self):
        r = receive(self.rep)
        if r is None:
            raise RuntimeError("the actor died")
        if r[0] == "err":
            raise db_error(r[1], r[2])
        return r[1]

    def run(self, sql, args=()):
        send(self.req, ("sql", sql, args))
        return self.reply()

    def call(self, fn, *args):
        """fn(connection, *args) in the actor; fn is a function of this module."""
        send(self.req, ("call", fn.__name__, args))
        return self.reply()

    def error(self, sql, args=()):
        """The result code `sql` fails with in the actor, None when it succeeds."""
        return failure(self.run, sql, args)

    def fails(self, fn, *args):
        """The result code fn(connection, *args) fails with in the actor, None when it succeeds."""
        return failure(self.call, fn, *args)

    def stop(self):
        """Closes the connection; whether the actor exited cleanly."""
        send(self.req, ("stop",))
        release(self.req)
        release(self.rep)
        return exited_ok(self.pid)


def contents(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def size(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return -1


def primary(code):
    return None if code is None else code & 0xFF


# ------------------------------------------------------------------------------------------
# The bank: ACCOUNTS accounts holding TOTAL between them, a counter of the transfers made, and a
# table of padding rows. Every transfer moves money and increments the counter in one write
# transaction, so every committed state has sum(bal) == TOTAL.

ACCOUNTS = 20
TOTAL = ACCOUNTS * 100


def bank(path, vfs="tshm", pad_rows=0):
    """A fresh WAL database holding the bank (and `pad_rows` rows of 3000 bytes)."""
    fresh(path, vfs)
    c = Conn(path, vfs=vfs)
    c.execute("PRAGMA synchronous=NORMAL")  # the WAL is synced at checkpoints, not at each commit
    c.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)")
    c.execute("CREATE TABLE meta(transfers INTEGER NOT NULL)")
    c.execute("CREATE TABLE pad(w INTEGER, b BLOB)")
    c.execute("BEGIN")
    c.execute("INSERT INTO meta VALUES(0)")
    for i in range(ACCOUNTS):
        c.execute("INSERT INTO acct VALUES(?, 100)", (i,))
    c.execute("COMMIT")
    pad_commits(c, 0, pad_rows)
    c.close()


def transfer(c, n):
    """Transfer number n (its accounts follow from n), retried while busy."""
    a = n % ACCOUNTS
    b = (a + 1 + n // ACCOUNTS % (ACCOUNTS - 1)) % ACCOUNTS
    for _ in range(200):
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("UPDATE acct SET bal = bal - 7 WHERE id = ?", (a,))
            c.execute("UPDATE acct SET bal = bal + 7 WHERE id = ?", (b,))
            c.execute("UPDATE meta SET transfers = transfers + 1")
            c.execute("COMMIT")
            return
        except Busy:
            c.rollback()
    raise DbError(BUSY, f"transfer {n}: busy 200 times")


def snapshot(c):
    """(sum of balances, transfers, sum again) in one read transaction."""
    c.execute("BEGIN")
    try:
        s = c.execute("SELECT sum(bal) FROM acct")[0][0]
        n = c.execute("SELECT transfers FROM meta")[0][0]
        again = c.execute("SELECT sum(bal) FROM acct")[0][0]
    finally:
        c.rollback()
    return s, n, again


def integrity(c):
    return c.execute("PRAGMA integrity_check")[0][0]


def pad_commits(c, first, n):
    """n commits of one 3000-byte row each: the same frames on every run."""
    for i in range(first, first + n):
        c.execute("INSERT INTO pad VALUES(?, zeroblob(3000))", (i,))


def writer(path, w, n, ack, go=None, stop=None, vfs="tshm"):
    """A writer process: after one byte on `go` (if given), up to n transfers, one byte on `ack`
    after each commit; it stops early once `stop` is readable."""
    if go is not None:
        os.read(go, 1)
    c = Conn(path, 5000, vfs)
    c.execute("PRAGMA synchronous=NORMAL")
    if stop is not None:
        os.set_blocking(stop, False)
    for i in range(n):
        if stop is not None:
            try:
                os.read(stop, 1)
                break  # a byte or EOF
            except BlockingIOError:
                pass
        transfer(c, w * 100003 + i)
        os.write(ack, b"c")
    c.close()


def acks(fd):
    """The bytes a writer sends until it exits."""
    n = 0
    while True:
        got = os.read(fd, 4096)
        if not got:
            return n
        n += len(got)


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


def reader(path, done, out):
    """A reader process: snapshots until `done` reports EOF, then one more; writes
    "reads bad busy last" to `out`. Bad: a sum other than TOTAL, or a counter going back."""
    c = Conn(path, 5000)
    os.set_blocking(done, False)
    reads = bad = busy = 0
    last = -1
    while True:
        try:
            finished = os.read(done, 1) == b""
        except BlockingIOError:
            finished = False
        try:
            s, n, again = snapshot(c)
        except Busy:
            busy += 1
            if busy > 1000:
                break
            continue
        bad += s != TOTAL or again != s or n < last
        last = n
        reads += 1
        if finished:
            break
    c.close()
    os.write(out, f"{reads} {bad} {busy} {last}".encode())


def consistency(path):
    """Three writer processes transfer money while two reader processes check every snapshot and
    the parent runs a PASSIVE, FULL, RESTART and TRUNCATE checkpoint: the total never changes,
    the counter equals the transfers the writers saw committed, the database is intact."""
    n = 300
    bank(path)
    done_r, done_w = os.pipe()
    keep(done_w)
    readers = []
    for _ in range(2):
        out_r, out_w = os.pipe()
        readers.append((spawn(reader, path, done_r, out_w, give=(out_w,)), keep(out_r)))
    os.close(done_r)
    writers = []
    for w in range(3):
        ack_r, ack_w = os.pipe()
        writers.append((spawn(writer, path, w, n, ack_w, give=(ack_w,)), keep(ack_r)))
    c = Conn(path, 5000)
    acked = 0
    for _, ack in writers:  # every writer has committed once: the checkpoints run among them
        acked += len(os.read(ack, 1))
    for mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
        row = c.execute(f"PRAGMA wal_checkpoint({mode})")
        check(len(row) == 1 and len(row[0]) == 3, f"wal_checkpoint({mode}) answers one row")
        blocked, log, done = row[0]
        check(mode == "PASSIVE" or blocked == 1 or log == done, f"wal_checkpoint({mode}) copied every frame: {row}")
    for pid, ack in writers:
        acked += acks(ack)
        release(ack)
        check(exited_ok(pid), "a writer made all its transfers")
    release(done_w)
    for pid, out in readers:
        reads, bad, busy, last = map(int, (os.read(out, 100) or b"0 1 0 0").split())
        release(out)
        check(exited_ok(pid), "a reader ran to the end")
        check(reads > 0 and bad == 0, f"a reader: {reads} snapshots, {bad} inconsistent")
        check(last == acked, f"a reader's last snapshot has every transfer: {last} of {acked}")
    check(acked == 3 * n, f"every transfer acknowledged: {acked}")
    check(c.execute("SELECT transfers FROM meta")[0][0] == acked, "the counter is the acknowledged transfers")
    check(c.execute("SELECT sum(bal) FROM acct")[0][0] == TOTAL, "the total is unchanged")
    check(integrity(c) == "ok", "integrity after the run")
    c.close()


def victim(path, ready):
    """A writer with a large transaction spilled into the WAL, waiting to be killed."""
    c = Conn(path, 5000)
    c.execute("PRAGMA cache_size=10")
    c.execute("BEGIN IMMEDIATE")
    for i in range(300):
        c.execute("INSERT INTO pad VALUES(99, randomblob(1000))")
    c.execute("UPDATE acct SET bal = 0 WHERE id = 1")
    os.write(ready, b"r")
    while True:
        signal.pause()


def crash(path):
    """A writer killed (SIGKILL) in a transaction whose pages are already in the WAL: a
    connection open across the kill and a new one see none of its rows, the database is intact,
    both can write; once all have closed, a reopen finds the same."""
    bank(path)
    ready_r, ready_w = os.pipe()
    pid = spawn(victim, path, ready_w, give=(ready_w,))
    check(os.read(ready_r, 1) == b"r", "the victim wrote its rows")
    os.close(ready_r)
    check(size(path + "-wal") > 200 * 1024, f"the victim's pages spilled into the WAL: {size(path + '-wal')} bytes")
    witness = Conn(path, 5000)
    check(witness.execute("SELECT count(*) FROM pad")[0][0] == 0, "uncommitted rows are not visible")
    os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    check(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the victim was killed")
    for made, c in enumerate((Conn(path, 5000), witness)):
        check(c.execute("SELECT count(*) FROM pad")[0][0] == 0, "the killed transaction left no row")
        check(snapshot(c) == (TOTAL, made, TOTAL), "the killed transaction left no balance")
        check(integrity(c) == "ok", "integrity after the kill")
        transfer(c, 1)
        c.close()
    c = Conn(path, 5000)
    check(snapshot(c) == (TOTAL, 2, TOTAL), "a reopen sees both transfers after the kill")
    check(c.execute("SELECT count(*) FROM pad")[0][0] == 0, "a reopen sees no row of the killed transaction")
    check(integrity(c) == "ok", "integrity after the reopen")
    transfer(c, 2)
    c.close()


def stock_kept_out(path):
    """Stock SQLite (the unix VFS, in another process, with a 100 ms busy timeout) can neither
    read nor write while a shim connection has the database open, and changes no byte of it;
    a shim connection refuses a database a stock connection has open; once both have gone,
    the data is intact. The stock side that arrives second runs "unix-nosleep" (see
    register_stock_fast): with "unix" it is refused the same way, after about 10 s of its own
    retries, whatever its busy timeout."""
    bank(path)
    files = (path, path + "-wal")
    shim = Actor(path)
    shim.run("SELECT count(*) FROM acct")
    before = [contents(f) for f in files]
    stock = Actor(path, vfs="unix-nosleep", wait_ms=100)
    t0 = time.monotonic()
    read = stock.error("SELECT count(*) FROM acct")
    write = stock.error("INSERT INTO acct VALUES(1000, 5)")
    ms = (time.monotonic() - t0) * 1e3
    check(stock.stop(), "the stock connection closed")
    check(primary(read) in (BUSY, PROTOCOL), f"stock SQLite's read is refused: {read}")
    check(primary(write) in (BUSY, PROTOCOL), f"stock SQLite's write is refused: {write}")
    check(ms < 2000, f"stock SQLite gave up without waiting out its retries: {ms:.0f} ms")
    check([contents(f) for f in files] == before, "stock SQLite changed no byte of the database or its WAL")
    check(shim.stop(), "the shim connection closed")
    stock = Actor(path, vfs="unix", wait_ms=100)
    stock.run("SELECT count(*) FROM acct")
    before = [contents(f) for f in files]
    c = Conn(path)
    read, write = c.error("SELECT count(*) FROM acct"), c.error("INSERT INTO acct VALUES(1001, 5)")
    c.close()
    check(primary(read) in (BUSY, PROTOCOL), f"a shim connection refuses to read beside stock SQLite: {read}")
    check(primary(write) in (BUSY, PROTOCOL), f"a shim connection refuses to write beside stock SQLite: {write}")
    check([contents(f) for f in files] == before, "the refused shim connection changed no byte")
    check(stock.stop(), "the stock connection closed")  # the last close: it may delete the WAL
    for vfs in ("tshm", "unix"):
        c = Conn(path, vfs=vfs)
        check(c.execute("SELECT count(*) FROM acct")[0][0] == ACCOUNTS, f"{vfs}: nothing was written meanwhile")
        check(integrity(c) == "ok", f"{vfs}: integrity once both have gone")
        c.close()


def ro_snapshot(c):
    """snapshot() on a read-only connection, retried on what stock SQLite's read-only connections
    also meet while a writer commits (see test_sqlite.c's ro_reader)."""
    for _ in range(10000):
        try:
            return snapshot(c)
        except DbError as e:
            if e.primary != BUSY and e.code not in (READONLY_RECOVERY, READONLY_CANTINIT):
                raise
    raise DbError(BUSY, "read-only snapshot: retried 10000 times")


def read_only(path):
    """A mode=ro connection reads while a writer in another process commits: its read
    transaction keeps its snapshot across a commit, the next one sees it, every snapshot of a
    running writer is consistent and the last has every transfer; its writes are refused."""
    n = 100
    bank(path)
    w = Actor(path, wait_ms=5000)
    go_r, go_w = os.pipe()
    ack_r, ack_w = os.pipe()
    free = spawn(writer, path, 7, n, ack_w, go_r, give=(ack_w, go_r))
    keep(go_w)
    keep(ack_r)
    ro = Conn(path, 5000, readonly=True)
    check(ro_snapshot(ro) == (TOTAL, 0, TOTAL), "the read-only connection reads the bank")
    ro.execute("BEGIN")
    before = ro.execute("SELECT transfers FROM meta")[0][0]
    w.call(transfer, 0)  # committed in another process during the read transaction
    during = ro.execute("SELECT transfers FROM meta")[0][0]
    ro.rollback()
    check(before == during == 0, f"a read transaction keeps its snapshot across a commit: {before}, {during}")
    check(ro_snapshot(ro) == (TOTAL, 1, TOTAL), "the next read transaction sees the commit")
    code = ro.error("UPDATE acct SET bal = 0")
    check(primary(code) == READONLY, f"a write through mode=ro is refused as read-only: {code}")
    check(w.stop(), "the writer closed")
    os.write(go_w, b"g")
    os.set_blocking(ack_r, False)
    snaps, acked, finished = [], 0, False
    while not finished:
        try:
            got = os.read(ack_r, 4096)
            finished = not got
            acked += len(got)
        except BlockingIOError:
            pass
        snaps.append(ro_snapshot(ro))
    check(exited_ok(free), "the free-running writer made its transfers")
    check(all(s == a == TOTAL for s, _, a in snaps), "every snapshot during the writes is consistent")
    counts = [t for _, t, _ in snaps]
    check(counts == sorted(counts), "the counter never goes back between read transactions")
    check(counts[-1] == 1 + n == 1 + acked, f"the last snapshot has every transfer: {counts[-1]}")
    check(primary(ro.error("INSERT INTO pad VALUES(1, 2)")) == READONLY, "still read-only after the writes")
    ro.close()
    release(go_w)
    release(ack_r)
    c = Conn(path)
    check(integrity(c) == "ok", "integrity after the read-only run")
    c.close()


# ------------------------------------------------------------------------------------------
# SQLite's contract. Each scenario runs once on stock SQLite (the unix VFS) and once through the
# shim, each in a fresh database, and returns what it observed: stock SQLite's observations
# must meet the scenario's expectations (so the scenario shows what it means to), and the
# shim's must be stock's, all of them.

expected_difference = {}  # scenario -> how the shim is known to differ from stock SQLite: KNOWN


def exclusive_mode(path, vfs, read_first):
    """PRAGMA locking_mode=EXCLUSIVE on a WAL database (set before the connection's first read,
    or after it when `read_first`): its first write is refused while another process has the
    database open, succeeds once it alone has it, and from then on it keeps the database: a
    connection of another process can neither read nor write until it closes, then sees all
    its rows."""
    bank(path, vfs)
    other = Actor(path, vfs=vfs, wait_ms=100)
    other.run("SELECT count(*) FROM acct")
    ex = Actor(path, vfs=vfs, wait_ms=100)
    if read_first:
        ex.run("SELECT count(*) FROM acct")
    obs = {"mode": ex.run("PRAGMA locking_mode=EXCLUSIVE")[0][0]}
    obs["write beside another connection"] = primary(ex.error("INSERT INTO pad VALUES(1, 1)"))
    obs["the other closes"] = other.stop()
    obs["first write alone"] = primary(ex.error("INSERT INTO pad VALUES(2, 2)"))
    obs["second write"] = primary(ex.error("INSERT INTO pad VALUES(3, 3)"))
    late = Actor(path, vfs=vfs, wait_ms=100)
    obs["another process reads"] = primary(late.error("SELECT count(*) FROM pad"))
    obs["another process writes"] = primary(late.error("INSERT INTO pad VALUES(4, 4)"))
    obs["rows it sees"] = ex.run("SELECT count(*) FROM pad")[0][0]
    obs["it closes"] = ex.stop()
    obs["WAL after its close"] = size(path + "-wal")
    obs["rows the other sees after the close"] = late.run("SELECT count(*) FROM pad")[0][0]
    obs["integrity"] = late.run("PRAGMA integrity_check")[0][0]
    obs["the other closes at the end"] = late.stop()
    return obs


EXCLUSIVE = {"mode": "exclusive", "write beside another connection": BUSY, "first write alone": None,
             "second write": None, "another process reads": BUSY, "another process writes": BUSY,
             "rows it sees": 2, "rows the other sees after the close": 2, "integrity": "ok"}


def journal_switch(path, vfs):
    """journal_mode WAL -> DELETE is refused (busy) while another process has the database
    open and succeeds once the connection alone has it; rollback-mode writes work from two
    processes; DELETE -> WAL works, and processes already there and new ones then use the WAL;
    every transfer is there, the database intact."""
    bank(path, vfs)
    a = Actor(path, vfs=vfs, wait_ms=100)
    b = Actor(path, vfs=vfs, wait_ms=100)
    a.run("SELECT count(*) FROM acct")
    b.run("SELECT count(*) FROM acct")
    obs = {"to DELETE beside another": primary(a.error("PRAGMA journal_mode=DELETE"))}
    obs["mode after the refusal"] = a.run("PRAGMA journal_mode")[0][0]
    obs["the other writes"] = primary(b.fails(transfer, 1))
    obs["the other closes"] = b.stop()
    obs["to DELETE alone"] = a.run("PRAGMA journal_mode=DELETE")[0][0]
    obs["WAL after the switch"] = size(path + "-wal")
    obs["rollback-mode write"] = primary(a.fails(transfer, 2))
    c = Actor(path, vfs=vfs, wait_ms=1000)
    obs["another process's rollback-mode write"] = primary(c.fails(transfer, 3))
    obs["its mode"] = c.run("PRAGMA journal_mode")[0][0]
    obs["back to WAL"] = a.run("PRAGMA journal_mode=WAL")[0][0]
    obs["WAL after the switch back"] = size(path + "-wal")
    obs["the open process writes"] = primary(c.fails(transfer, 4))
    obs["the open process's mode"] = c.run("PRAGMA journal_mode")[0][0]
    d = Actor(path, vfs=vfs, wait_ms=1000)
    obs["a new process writes"] = primary(d.fails(transfer, 5))
    obs["its mode too"] = d.run("PRAGMA journal_mode")[0][0]
    obs["snapshot"] = a.call(snapshot)
    obs["integrity"] = a.call(integrity)
    obs["all close"] = [x.stop() for x in (a, c, d)]
    return obs


JOURNAL = {"to DELETE beside another": BUSY, "mode after the refusal": "wal", "the other writes": None,
           "to DELETE alone": "delete", "WAL after the switch": -1, "rollback-mode write": None,
           "another process's rollback-mode write": None, "its mode": "delete", "back to WAL": "wal",
           "the open process writes": None, "the open process's mode": "wal", "a new process writes": None,
           "its mode too": "wal", "snapshot": (TOTAL, 5, TOTAL), "integrity": "ok"}


def autocheckpoint(path, vfs):
    """PRAGMA wal_autocheckpoint=20: after 60 commits the WAL holds fewer than 40 frames (it
    was checkpointed and restarted as it went), where with the pragma at 0 the same 60 commits
    leave them all; the -wal file sizes are stock's. Another process has the database open."""
    bank(path, vfs)
    other = Actor(path, vfs=vfs)
    other.run("SELECT count(*) FROM acct")
    a = Actor(path, vfs=vfs, wait_ms=1000)
    a.run("PRAGMA synchronous=NORMAL")
    obs = {"pragma": a.run("PRAGMA wal_autocheckpoint=20")[0][0]}
    a.call(pad_commits, 0, 60)
    obs["WAL bytes"] = size(path + "-wal")
    obs["frames left"] = a.run("PRAGMA wal_checkpoint(PASSIVE)")[0]
    a.run("PRAGMA wal_autocheckpoint=0")
    a.call(pad_commits, 60, 60)
    obs["WAL bytes without"] = size(path + "-wal")
    obs["frames without"] = a.run("PRAGMA wal_checkpoint(PASSIVE)")[0]
    obs["integrity"] = a.call(integrity)
    obs["all close"] = [x.stop() for x in (a, other)]
    return obs


AUTOCHECKPOINT = {"pragma": 20, "frames left": lambda r: r[0] == 0 and r[1] < 40 and r[1] == r[2],
                  "frames without": lambda r: r[0] == 0 and r[1] >= 100, "integrity": "ok"}


def size_limit(path, vfs):
    """PRAGMA journal_size_limit=16384: a WAL grown past it is cut to at most 16384 bytes at the
    first commit after a checkpoint that resets it (RESTART), with stock's sizes throughout."""
    bank(path, vfs)
    other = Actor(path, vfs=vfs)
    other.run("SELECT count(*) FROM acct")
    a = Actor(path, vfs=vfs, wait_ms=1000)
    a.run("PRAGMA synchronous=NORMAL")
    obs = {"pragma": a.run("PRAGMA journal_size_limit=16384")[0][0]}
    a.run("PRAGMA wal_autocheckpoint=0")
    a.call(pad_commits, 0, 40)
    obs["WAL bytes"] = size(path + "-wal")
    obs["restart"] = a.run("PRAGMA wal_checkpoint(RESTART)")[0]
    obs["WAL bytes after the checkpoint"] = size(path + "-wal")
    a.call(pad_commits, 40, 1)
    obs["WAL bytes after the next commit"] = size(path + "-wal")
    obs["rows"] = a.run("SELECT count(*) FROM pad")[0][0]
    obs["integrity"] = a.call(integrity)
    obs["all close"] = [x.stop() for x in (a, other)]
    return obs


SIZE_LIMIT = {"pragma": 16384, "WAL bytes": lambda n: n > 100000, "restart": lambda r: r[0] == 0 and r[1] == r[2],
              "WAL bytes after the next commit": lambda n: 0 < n <= 16384, "rows": 41, "integrity": "ok"}


def available(fd):
    """The bytes readable on fd now, without waiting."""
    os.set_blocking(fd, False)
    n = 0
    try:
        while True:
            got = os.read(fd, 4096)
            n += len(got)
            if not got:
                break
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
    return n


def vacuum_into(path, vfs):
    """VACUUM INTO while another process makes transfers: the copy opens (stock SQLite), is
    intact, and holds one snapshot: the total, and every transfer committed before it began,
    none that was not committed when it ended."""
    bank(path, vfs, pad_rows=150)
    copy = path + ".copy"  # a new file: the run's directory is its own
    ack_r, ack_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = spawn(writer, path, 3, 1000000, ack_w, None, stop_r, vfs, give=(ack_w, stop_r))
    keep(ack_r)
    keep(stop_w)
    c = Conn(path, 5000, vfs)
    before = len(os.read(ack_r, 1))  # it is writing
    before += available(ack_r)
    obs = {"vacuum": primary(c.error("VACUUM INTO ?", (copy,)))}
    os.write(stop_w, b"s")
    acked = before + acks(ack_r)
    obs["the writer stops"] = exited_ok(pid)
    release(ack_r)
    release(stop_w)
    obs["transfers"] = c.execute("SELECT transfers FROM meta")[0][0] == acked
    c.close()
    d = Conn(copy, vfs="unix")
    total, n, again = snapshot(d)
    obs["copy integrity"] = integrity(d)
    obs["copy consistent"] = total == again == TOTAL
    obs["copy's transfers"] = "between" if before <= n <= acked else f"{n} not in {before}..{acked}"
    obs["copy's rows"] = d.execute("SELECT count(*) FROM pad")[0][0]
    d.close()
    return obs


VACUUM = {"vacuum": None, "the writer stops": True, "transfers": True, "copy integrity": "ok",
          "copy consistent": True, "copy's transfers": "between", "copy's rows": 150}


def backup_copy(src, dst, during):
    """Backs src up into dst ten pages a step, calling during() after the first step; the pages
    left then."""
    left = []
    if DRIVER == "apsw":
        with dst.c.backup("main", src.c, "main") as b:
            b.step(10)
            left.append(b.remaining)
            during()
            while not b.done:
                b.step(10)
    else:

        def progress(status, remaining, total):
            if not left:
                left.append(remaining)
                during()

        src.c.backup(dst.c, pages=10, progress=progress)
    return left[0]


def backup(path, vfs):
    """The backup API, from a database another process writes to while the backup runs (after
    its first step): it completes, and the copy is intact and holds that transfer too (a backup
    restarts when another process changes its source)."""
    bank(path, vfs, pad_rows=100)
    copy = path + ".copy"  # a new file: the run's directory is its own
    w = Actor(path, vfs=vfs, wait_ms=5000)
    src = Conn(path, 5000, vfs)
    dst = Conn(copy, vfs="unix")
    obs = {"pages left at the write": backup_copy(src, dst, lambda: w.call(transfer, 0))}
    src.close()
    dst.close()
    obs["the writer closes"] = w.stop()
    d = Conn(copy, vfs="unix")
    obs["copy"] = snapshot(d)
    obs["copy integrity"] = integrity(d)
    obs["copy's rows"] = d.execute("SELECT count(*) FROM pad")[0][0]
    d.close()
    return obs


BACKUP = {"pages left at the write": lambda n: n > 0, "the writer closes": True, "copy": (TOTAL, 1, TOTAL),
          "copy integrity": "ok", "copy's rows": 100}


def immutable(path, vfs):
    """immutable=1: SQLite reads the database file alone, taking no lock and no shared memory:
    with the bank checkpointed into the file and 10 more commits only in the WAL (another
    process keeps them there), an immutable connection sees what the file holds, its write is
    refused, and neither file changes; the other process still sees its 10 commits."""
    bank(path, vfs)
    c = Conn(path, vfs=vfs)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    other = Actor(path, vfs=vfs)
    other.run("PRAGMA wal_autocheckpoint=0")
    other.call(pad_commits, 0, 10)
    before = (contents(path), contents(path + "-wal"))
    im = Conn(path, vfs=vfs, immutable=True)
    obs = {"accounts": im.execute("SELECT count(*) FROM acct")[0][0],
           "pad rows": im.execute("SELECT count(*) FROM pad")[0][0],
           "write": primary(im.error("INSERT INTO pad VALUES(99, zeroblob(10))"))}
    im.close()
    obs["files unchanged"] = (contents(path), contents(path + "-wal")) == before
    obs["pad rows, the other process"] = other.run("SELECT count(*) FROM pad")[0][0]
    obs["it closes"] = other.stop()
    return obs


IMMUTABLE = {"accounts": ACCOUNTS, "pad rows": 0, "write": READONLY, "files unchanged": True,
             "pad rows, the other process": 10}


def as_stock(name, scenario, expect, path):
    """Runs scenario(path, vfs) on stock SQLite and through the shim; stock's observations must
    meet `expect` (a value, or a predicate), the shim's must equal them."""
    stock = scenario(path + "-unix.db", "unix")
    shim = scenario(path + "-tshm.db", "tshm")
    if os.environ.get("TEST_VERBOSE"):
        print(f"    {name}: stock {stock}\n    shim {shim}")
    for key, want in expect.items():
        met = want(stock[key]) if callable(want) else stock[key] == want
        check(met, f"{name}, stock SQLite: {key} = {stock[key]!r}")
    differs = {k: (stock[k], shim.get(k)) for k in stock if shim.get(k) != stock[k]}
    if differs and name in expected_difference:
        print(f"  KNOWN {name}: {expected_difference[name]}; stock vs shim: {differs}")
    else:
        check(not differs, f"{name}: the shim differs from stock SQLite (stock, shim): {differs}")


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
    # emptied first: in a fresh PID namespace each run repeats the last one's PIDs
    base = os.environ.get("TSHM_TEST_DIR", "/tmp") + f"/tshm-python-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    print(f"  SQLite {version}")
    register_stock_fast()
    for name, fn in (("the write lock handed over at commit", handed_over),
                     ("the write lock past a killed holder", holder_killed),
                     ("the write lock bounded by the busy timeout", bounded),
                     ("3 writers, 2 readers, 4 checkpoint modes: every snapshot consistent", consistency),
                     ("a writer killed with its pages in the WAL", crash),
                     ("stock SQLite kept out, both orders", stock_kept_out),
                     ("mode=ro reads during another process's commits", read_only)):
        t0 = time.monotonic()
        fn(f"{base}/{fn.__name__}.db")
        print(f"  {name}: {(time.monotonic() - t0) * 1e3:.0f} ms")
    for stem, name, scenario, expect in (
            ("exclusive", "locking_mode=EXCLUSIVE before the first read", lambda p, v: exclusive_mode(p, v, False),
             EXCLUSIVE),
            ("exclusive-read", "locking_mode=EXCLUSIVE after a read", lambda p, v: exclusive_mode(p, v, True),
             EXCLUSIVE),
            ("journal", "journal_mode WAL -> DELETE -> WAL", journal_switch, JOURNAL),
            ("autockpt", "wal_autocheckpoint", autocheckpoint, AUTOCHECKPOINT),
            ("sizelimit", "journal_size_limit", size_limit, SIZE_LIMIT),
            ("vacuum", "VACUUM INTO during writes", vacuum_into, VACUUM),
            ("backup", "the backup API during writes", backup, BACKUP),
            ("immutable", "immutable=1 beside commits still in the WAL", immutable, IMMUTABLE)):
        t0 = time.monotonic()
        as_stock(name, scenario, expect, f"{base}/{stem}")
        print(f"  as stock SQLite, {name}: {(time.monotonic() - t0) * 1e3:.0f} ms")
    print(f"test_python {DRIVER}: {passed} passed, {failed} failed")
    if not failed:
        shutil.rmtree(base, ignore_errors=True)  # a failed run's databases stay for a look
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
