// The C++ wrapper (include/tshm.hpp) at work: open, write under a writer guard and publish,
// read under a reader guard, engine locks and regions, and both error paths (error_code and
// exceptions). Prints each step; exits 0 only when every step behaved as expected.
//
//   example [DIR]    works in a fresh directory under DIR (default $TMPDIR or /tmp), removed at
//                    the end

#include "tshm.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace {

int failures = 0;

void step(bool ok, const std::string &what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) failures++;
}

// Runs `f`, expecting it to throw tshmpp::error with code `want`.
template <class F> void expect_throw(tshmpp::errc want, const std::string &what, F &&f) {
    try {
        f();
        step(false, what + ": no exception");
    } catch (const tshmpp::error &e) {
        bool ok = e.code() == want && !e.detail().empty();
        step(ok, what + ": threw \"" + e.what() + "\"");
    }
}

void run(const std::string &db) {
    // open (throwing) with options, and a second handle on the same database
    tshm_options opts = tshmpp::default_options();
    tshmpp::handle h(db, opts);
    step(static_cast<bool>(h), "opened " + db);
    tshmpp::handle other(db);
    step(h.info().instance != other.info().instance, "a second handle is another instance");

    // write transaction: append two frames and publish them
    {
        tshmpp::writer_guard w(h, 1000);
        step(w.owns(), "writer role taken");
        h.index_append(7, 1);
        h.index_append(9, 2);
        tshm_snapshot s = h.snapshot();
        s.max_frame = 2;
        h.publish(s, TSHM_SNAP_MAX_FRAME);
        step(other.snapshot().max_frame == 2, "published max_frame 2, seen by the other handle");

        // another handle cannot take the role: error_code, then exception
        std::error_code ec;
        tshmpp::writer_guard busy(other, 0, ec);
        step(!busy && ec == tshmpp::errc::busy,
             "other handle's writer guard: " + ec.message() + " (" + tshmpp::last_message() + ")");
        expect_throw(tshmpp::errc::busy, "other handle's throwing writer guard",
                     [&] { tshmpp::writer_guard again(other, 0); });
    } // released here
    {
        std::error_code ec;
        tshmpp::writer_guard w(other, 0, ec);
        step(w && !ec, "the writer role is free again after the guard");
    }

    // read transaction at the published snapshot
    {
        tshmpp::reader_guard r(other);
        step(r.active() && r.snapshot().max_frame == 2, "read transaction pins max_frame 2");
        step(r.find(7) == std::optional<std::uint64_t>(1), "page 7 is in frame 1");
        step(r.find(9) == std::optional<std::uint64_t>(2), "page 9 is in frame 2");
        step(!r.find(8).has_value(), "page 8 is not in the WAL (read it from the database)");
        std::uint64_t pinned = h.min_reader_frame();
        step(pinned == 2, "the checkpointer sees frame 2 pinned");
    }
    step(h.min_reader_frame() == TSHM_NO_FRAME, "no frame pinned after the reader guard");

    // a checkpointer walks the index
    {
        tshmpp::checkpointer_guard c(h, 0);
        std::map<std::uint32_t, std::uint64_t> pages;
        h.index_foreach(2, [&](std::uint32_t page, std::uint64_t frame) { pages[page] = frame; });
        step(pages == std::map<std::uint32_t, std::uint64_t>{{7, 1}, {9, 2}},
             "index_foreach gives pages 7 and 9");
        bool rethrown = false;
        try {
            h.index_foreach(2, [](std::uint32_t, std::uint64_t) -> bool {
                throw std::runtime_error("from the callback");
            });
        } catch (const std::runtime_error &e) {
            rethrown = std::strcmp(e.what(), "from the callback") == 0;
        }
        step(rethrown, "an exception from the index_foreach callback reaches the caller");
        c.release();
        step(!c.owns(), "checkpointer role released early");
    }

    // engine regions and locks
    {
        auto *mine = static_cast<unsigned char *>(h.region(0, 64, true));
        mine[0] = 42;
        auto *theirs = static_cast<unsigned char *>(other.region(0, 64, false));
        step(theirs != nullptr && theirs[0] == 42, "engine region 0 is shared");

        tshmpp::engine_lock_guard x(h, 3, 2, tshmpp::lock_mode::exclusive);
        step(x.owns_lock(), "engine lock slots 3..4 taken EXCLUSIVE");
        step(!other.try_lock(4, 1, tshmpp::lock_mode::shared), "another handle's SHARED is busy");
        std::error_code ec;
        tshmpp::engine_lock_guard s(other, 3, 1, tshmpp::lock_mode::shared, ec);
        step(!s && ec == tshmpp::errc::busy, "another handle's engine lock guard: busy");
        x.unlock();
        tshmpp::engine_lock_guard s2(other, 3, 1, tshmpp::lock_mode::shared, ec);
        step(s2 && !ec, "SHARED taken once the EXCLUSIVE guard unlocked");
    }

    // error_code path: deliberate misuse
    {
        std::error_code ec;
        h.release(tshmpp::role::writer, ec);
        step(ec == tshmpp::errc::misuse && ec.category().name() == std::string("tshm"),
             "releasing an unheld role: " + ec.message() + " (" + tshmpp::last_message() + ")");
        tshmpp::handle empty(std::string(), ec);
        step(!empty && ec == tshmpp::errc::misuse,
             "opening an empty path: " + ec.message() + " (" + tshmpp::last_message() + ")");
        empty.info(ec);
        step(ec == tshmpp::errc::misuse, "a call on an empty handle is misuse");
        h.snapshot(ec);
        step(!ec, "a successful call clears the error_code");
    }

    // exception path
    expect_throw(tshmpp::errc::misuse, "opening an empty path", [] { tshmpp::handle bad(""); });
    expect_throw(tshmpp::errc::misuse, "releasing an unheld role",
                 [&] { h.release(tshmpp::role::checkpointer); });
    expect_throw(tshmpp::errc::misuse, "appending without the writer role",
                 [&] { h.index_append(1, 3); });

    // moving keeps the handle; close reports the last one
    tshmpp::handle moved(std::move(h));
    step(!h && moved, "a moved-from handle is empty");
    step(!other.close(), "closing the other handle: not the last");
    step(!other, "a closed handle is empty");
    step(moved.close(), "closing the last handle: was_last");
}

} // namespace

int main(int argc, char **argv) {
    const char *base = argc > 1 ? argv[1] : std::getenv("TMPDIR");
    std::string dir = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tshm-cpp-XXXXXX";
    if (mkdtemp(&dir[0]) == nullptr) {
        std::perror("mkdtemp");
        return 2;
    }
    std::string db = dir + "/example.db";
    try {
        run(db);
    } catch (const std::exception &e) {
        step(false, std::string("unexpected exception: ") + e.what());
    }
    unlink((db + "-tshm").c_str());
    rmdir(dir.c_str());
    std::printf("%s\n", failures == 0 ? "example: every step behaved as expected"
                                      : "example: some steps failed");
    return failures == 0 ? 0 : 1;
}
