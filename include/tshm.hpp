/*
 * tshm.hpp — a small header-only C++17 wrapper over tshm.h.
 *
 * Namespace tshmpp (tshm.h declares the handle type `tshm` at file scope, so a namespace of
 * that name cannot exist beside it). Nothing here adds behaviour: every call is one C call,
 * and the C header's rules (threads, fork, ownership, result codes) apply unchanged.
 *
 * Errors, as the caller chooses:
 * - every operation has an overload taking `std::error_code&` as its last argument; it never
 *   throws (except what a caller's own callback throws), clears the code on success and sets
 *   it to {rc, tshmpp::category()} on failure. tshmpp::last_message() then gives the detail
 *   (tshm_errmsg()), until the next failing call on the thread;
 * - the overload without it throws tshmpp::error (a std::system_error) carrying the code and
 *   the tshm_errmsg() text, copied at the failure. Built without exceptions (-fno-exceptions),
 *   it prints that error's what() on stderr and aborts instead: such a program uses the
 *   std::error_code overloads (index_foreach's callback then cannot throw either).
 * Codes compare with tshmpp::errc: `ec == tshmpp::errc::busy`. Routine outcomes are not
 * errors: index_find's TSHM_NOTFOUND is std::nullopt, try_lock's TSHM_BUSY is false (an
 * engine_lock_guard that meets TSHM_BUSY does report errc::busy, with no detail message).
 *
 * Ownership: tshmpp::handle owns one tshm handle (movable, not copyable; closes in its
 * destructor). The guards (writer_guard, checkpointer_guard, reader_guard, engine_lock_guard)
 * refer to the C handle, not to the tshmpp::handle object: moving the handle object keeps
 * them valid, but each guard must end before the handle is closed. Like the C handle, a guard
 * belongs to its handle, not to a thread (roles are per handle).
 */

#ifndef TSHM_HPP
#define TSHM_HPP

#include "tshm.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tshmpp {

/* ---- result codes ---------------------------------------------------------------------- */

/** The TSHM_* result codes (values as in tshm.h). */
enum class errc : int {
    ok = TSHM_OK,
    error = TSHM_ERROR,
    internal = TSHM_INTERNAL,
    perm = TSHM_PERM,
    busy = TSHM_BUSY,
    nomem = TSHM_NOMEM,
    readonly = TSHM_READONLY,
    ioerr = TSHM_IOERR,
    corrupt = TSHM_CORRUPT,
    notfound = TSHM_NOTFOUND,
    full = TSHM_FULL,
    cantopen = TSHM_CANTOPEN,
    protocol = TSHM_PROTOCOL,
    misuse = TSHM_MISUSE,
    range = TSHM_RANGE,
    notsupported = TSHM_NOTSUPPORTED,
    conflict = TSHM_CONFLICT,
};

namespace detail {
class category_impl final : public std::error_category {
  public:
    const char *name() const noexcept override { return "tshm"; }
    std::string message(int rc) const override { return tshm_errstr(rc); }
};
} // namespace detail

/** The category of TSHM result codes; its messages are tshm_errstr()'s. */
inline const std::error_category &category() noexcept {
    static const detail::category_impl instance;
    return instance;
}

inline std::error_code make_error_code(errc e) noexcept {
    return std::error_code(static_cast<int>(e), category());
}

/** The detail of the last failure on this thread (tshm_errmsg()), or "" if none. */
inline std::string last_message() {
    const char *m = tshm_errmsg();
    return m != nullptr ? std::string(m) : std::string();
}

/**
 * What the throwing overloads throw: code() is the result code in tshmpp::category(),
 * detail() the tshm_errmsg() text at the failure, what() "<call>: <detail>: <tshm_errstr>".
 */
class error : public std::system_error {
  public:
    error(int rc, const std::string &call, std::string detail)
        : std::system_error(rc, category(), detail.empty() ? call : call + ": " + detail),
          detail_(std::move(detail)) {}
    const std::string &detail() const noexcept { return detail_; }

  private:
    std::string detail_;
};

} // namespace tshmpp

namespace std {
template <> struct is_error_code_enum<tshmpp::errc> : true_type {};
} // namespace std

namespace tshmpp {

namespace detail {
/* `ec` from a result code: cleared for TSHM_OK. */
inline bool set(std::error_code &ec, int rc) noexcept {
    if (rc == TSHM_OK) {
        ec.clear();
        return true;
    }
    ec.assign(rc, category());
    return false;
}

/* Throws `e`; without exceptions, prints it and aborts. */
[[noreturn]] inline void raise_error(const error &e) {
#if defined(__cpp_exceptions)
    throw e;
#else
    std::fprintf(stderr, "tshmpp::error: %s\n", e.what());
    std::abort();
#endif
}

/* Throws for a failed `rc`; `has_message`: tshm_errmsg() describes this failure (false for the
 * routine TSHM_BUSY of tshm_lock, which leaves it alone). */
inline void check(int rc, const char *call, bool has_message = true) {
    if (rc != TSHM_OK) raise_error(error(rc, call, has_message ? last_message() : std::string()));
}

/* Turns an error_code overload's failure into the throwing overload's exception. */
inline void rethrow(const std::error_code &ec, const char *call) {
    if (ec) raise_error(error(ec.value(), call, last_message()));
}

/* tshm_index_find: TSHM_NOTFOUND is nullopt, not an error. */
inline std::optional<std::uint64_t> find(const ::tshm *h, std::uint32_t page, std::uint64_t max_frame,
                                         std::error_code &ec) noexcept {
    std::uint64_t f = 0;
    int rc = tshm_index_find(h, page, max_frame, &f);
    if (rc == TSHM_NOTFOUND) {
        ec.clear();
        return std::nullopt;
    }
    if (!set(ec, rc)) return std::nullopt;
    return f;
}
} // namespace detail

/** tshm_options with the defaults (tshm_options_init); change fields, pass to handle. */
inline tshm_options default_options() noexcept {
    tshm_options o;
    tshm_options_init(&o);
    return o;
}

enum class role { writer, checkpointer };

/** Engine lock modes (tshm_lock flags). */
enum class lock_mode : std::uint32_t { shared = TSHM_LOCK_SHARED, exclusive = TSHM_LOCK_EXCLUSIVE };

/* ---- the handle ------------------------------------------------------------------------ */

/** One open tshm handle (tshm_open .. tshm_close). Empty after a move, a failed noexcept open
 * or close(); calls on an empty handle fail with errc::misuse (the C library sees NULL). */
class handle {
  public:
    handle() noexcept = default;

    /** Opens `db_path` (the sidecar is `<db_path>-tshm`) with the defaults or `opts`. */
    explicit handle(const std::string &db_path) { open_or_throw(db_path, nullptr); }
    handle(const std::string &db_path, const tshm_options &opts) { open_or_throw(db_path, &opts); }
    handle(const std::string &db_path, std::error_code &ec) noexcept { open(db_path, nullptr, ec); }
    handle(const std::string &db_path, const tshm_options &opts, std::error_code &ec) noexcept {
        open(db_path, &opts, ec);
    }

    /** Adopts a handle from tshm_open (or NULL). */
    explicit handle(::tshm *h) noexcept : h_(h) {}

    handle(const handle &) = delete;
    handle &operator=(const handle &) = delete;
    handle(handle &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    handle &operator=(handle &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    ~handle() { reset(); }

    ::tshm *get() const noexcept { return h_; }
    explicit operator bool() const noexcept { return h_ != nullptr; }
    /** Gives up ownership: the caller closes the returned handle. */
    ::tshm *release() noexcept { return std::exchange(h_, nullptr); }

    /** tshm_close; returns was_last. The handle is empty afterwards, except after
     * errc::misuse (tshm_close left the handle open: e.g. a close inside its own hook). */
    bool close(std::error_code &ec) noexcept {
        int last = 0;
        int rc = tshm_close(h_, &last);
        if (rc != TSHM_MISUSE) h_ = nullptr;
        return detail::set(ec, rc) && last != 0;
    }
    bool close() {
        std::error_code ec;
        bool last = close(ec);
        detail::rethrow(ec, "tshm_close");
        return last;
    }

    tshm_info info(std::error_code &ec) const noexcept {
        tshm_info out{};
        detail::set(ec, tshm_info_get(h_, &out));
        return out;
    }
    tshm_info info() const { return get_or_throw(&handle::info, "tshm_info_get"); }

    /* snapshots */
    tshm_snapshot snapshot(std::error_code &ec) const noexcept {
        tshm_snapshot out{};
        detail::set(ec, tshm_snapshot_get(h_, &out));
        return out;
    }
    tshm_snapshot snapshot() const { return get_or_throw(&handle::snapshot, "tshm_snapshot_get"); }

    /** Publishes the fields of `snap` named by `mask` (TSHM_SNAP_* bits); needs a role. */
    void publish(const tshm_snapshot &snap, std::uint32_t mask, std::error_code &ec) noexcept {
        detail::set(ec, tshm_publish(h_, &snap, mask));
    }
    void publish(const tshm_snapshot &snap, std::uint32_t mask) {
        detail::check(tshm_publish(h_, &snap, mask), "tshm_publish");
    }

    /* roles (prefer writer_guard and checkpointer_guard) */
    void acquire(role r, std::uint32_t timeout_ms, std::error_code &ec) noexcept {
        detail::set(ec, r == role::writer ? tshm_writer_acquire(h_, timeout_ms)
                                          : tshm_checkpointer_acquire(h_, timeout_ms));
    }
    void acquire(role r, std::uint32_t timeout_ms) {
        std::error_code ec;
        acquire(r, timeout_ms, ec);
        detail::rethrow(ec, r == role::writer ? "tshm_writer_acquire" : "tshm_checkpointer_acquire");
    }
    void release(role r, std::error_code &ec) noexcept {
        detail::set(ec, r == role::writer ? tshm_writer_release(h_) : tshm_checkpointer_release(h_));
    }
    void release(role r) {
        std::error_code ec;
        release(r, ec);
        detail::rethrow(ec, r == role::writer ? "tshm_writer_release" : "tshm_checkpointer_release");
    }

    std::uint64_t min_reader_frame(std::error_code &ec) const noexcept {
        std::uint64_t f = TSHM_NO_FRAME;
        detail::set(ec, tshm_min_reader_frame(h_, &f));
        return f;
    }
    std::uint64_t min_reader_frame() const {
        return get_or_throw(&handle::min_reader_frame, "tshm_min_reader_frame");
    }

    tshm_owner_info owner(std::uint32_t role_number, std::error_code &ec) const noexcept {
        tshm_owner_info out{};
        detail::set(ec, tshm_owner(h_, role_number, &out));
        return out;
    }
    tshm_owner_info owner(std::uint32_t role_number) const {
        std::error_code ec;
        tshm_owner_info out = owner(role_number, ec);
        detail::rethrow(ec, "tshm_owner");
        return out;
    }

    /* the frame index */
    void index_append(std::uint32_t page, std::uint64_t frame, std::error_code &ec) noexcept {
        detail::set(ec, tshm_index_append(h_, page, frame));
    }
    void index_append(std::uint32_t page, std::uint64_t frame) {
        detail::check(tshm_index_append(h_, page, frame), "tshm_index_append");
    }

    /** The newest frame at or below `max_frame` holding `page`; nullopt when there is none
     * (TSHM_NOTFOUND: read the page from the database file), which is not an error. */
    std::optional<std::uint64_t> index_find(std::uint32_t page, std::uint64_t max_frame,
                                            std::error_code &ec) const noexcept {
        return detail::find(h_, page, max_frame, ec);
    }
    std::optional<std::uint64_t> index_find(std::uint32_t page, std::uint64_t max_frame) const {
        std::error_code ec;
        std::optional<std::uint64_t> f = index_find(page, max_frame, ec);
        detail::rethrow(ec, "tshm_index_find");
        return f;
    }

    void index_truncate(std::uint64_t max_frame, std::error_code &ec) noexcept {
        detail::set(ec, tshm_index_truncate(h_, max_frame));
    }
    void index_truncate(std::uint64_t max_frame) {
        detail::check(tshm_index_truncate(h_, max_frame), "tshm_index_truncate");
    }
    void index_reset(std::error_code &ec) noexcept { detail::set(ec, tshm_index_reset(h_)); }
    void index_reset() { detail::check(tshm_index_reset(h_), "tshm_index_reset"); }

    /** Calls `f(page, frame)` for each page's newest frame at or below `max_frame`, in page
     * order; `f` returns void, or bool (false stops the walk). An exception from `f` stops the
     * walk and is rethrown here (it never crosses the C library). */
    template <class F> void index_foreach(std::uint64_t max_frame, F &&f, std::error_code &ec) const {
        foreach_ctx<F> ctx{&f, nullptr};
        int rc = tshm_index_foreach(h_, max_frame, &foreach_thunk<F>, &ctx);
        if (ctx.ex) std::rethrow_exception(ctx.ex);
        detail::set(ec, rc);
    }
    template <class F> void index_foreach(std::uint64_t max_frame, F &&f) const {
        std::error_code ec;
        index_foreach(max_frame, std::forward<F>(f), ec);
        detail::rethrow(ec, "tshm_index_foreach");
    }

    tshm_index_stats index_stats(std::error_code &ec) const noexcept {
        tshm_index_stats out{};
        detail::set(ec, tshm_index_stats_get(h_, &out));
        return out;
    }
    tshm_index_stats index_stats() const {
        return get_or_throw(&handle::index_stats, "tshm_index_stats_get");
    }

    /* engine regions and locks */

    /** Engine region `idx` of `size` bytes (nullptr when it does not exist and !extend). The
     * pointer stays valid until this process's last handle on the sidecar closes. */
    void *region(std::uint32_t idx, std::size_t size, bool extend, std::error_code &ec) noexcept {
        void *p = nullptr;
        detail::set(ec, tshm_region(h_, idx, size, extend ? 1 : 0, &p));
        return p;
    }
    void *region(std::uint32_t idx, std::size_t size, bool extend) {
        std::error_code ec;
        void *p = region(idx, size, extend, ec);
        detail::rethrow(ec, "tshm_region");
        return p;
    }

    /** Takes engine lock slots slot..slot+n-1 without waiting: true when taken, false when a
     * conflicting lock is held (TSHM_BUSY, not an error; nothing was taken). */
    bool try_lock(std::uint32_t slot, std::uint32_t n, lock_mode m, std::error_code &ec) noexcept {
        int rc = tshm_lock(h_, slot, n, static_cast<std::uint32_t>(m));
        if (rc == TSHM_BUSY) {
            ec.clear();
            return false;
        }
        return detail::set(ec, rc);
    }
    bool try_lock(std::uint32_t slot, std::uint32_t n, lock_mode m) {
        std::error_code ec;
        bool taken = try_lock(slot, n, m, ec);
        detail::rethrow(ec, "tshm_lock");
        return taken;
    }
    /** Releases slots taken in mode `m` (prefer engine_lock_guard). */
    void unlock(std::uint32_t slot, std::uint32_t n, lock_mode m, std::error_code &ec) noexcept {
        detail::set(ec, tshm_lock(h_, slot, n, static_cast<std::uint32_t>(m) | TSHM_LOCK_UNLOCK));
    }
    void unlock(std::uint32_t slot, std::uint32_t n, lock_mode m) {
        detail::check(tshm_lock(h_, slot, n, static_cast<std::uint32_t>(m) | TSHM_LOCK_UNLOCK),
                      "tshm_lock (unlock)");
    }

  private:
    ::tshm *h_ = nullptr;

    void open(const std::string &db_path, const tshm_options *opts, std::error_code &ec) noexcept {
        ::tshm *h = nullptr;
        if (detail::set(ec, tshm_open(db_path.c_str(), opts, &h))) h_ = h;
    }
    void open_or_throw(const std::string &db_path, const tshm_options *opts) {
        std::error_code ec;
        open(db_path, opts, ec);
        if (ec) detail::raise_error(error(ec.value(), "tshm_open \"" + db_path + "\"", last_message()));
    }
    void reset() noexcept {
        if (h_ != nullptr) tshm_close(std::exchange(h_, nullptr), nullptr);
    }

    template <class T>
    T get_or_throw(T (handle::*get)(std::error_code &) const noexcept, const char *call) const {
        std::error_code ec;
        T out = (this->*get)(ec);
        detail::rethrow(ec, call);
        return out;
    }

    template <class F> struct foreach_ctx {
        std::remove_reference_t<F> *f;
        std::exception_ptr ex;
    };
    template <class F> static int foreach_call(foreach_ctx<F> *ctx, std::uint32_t page, std::uint64_t frame) {
        if constexpr (std::is_void_v<std::invoke_result_t<F &, std::uint32_t, std::uint64_t>>) {
            (*ctx->f)(page, frame);
            return 0;
        } else {
            return (*ctx->f)(page, frame) ? 0 : 1;
        }
    }
    template <class F> static int foreach_thunk(void *p, std::uint32_t page, std::uint64_t frame) noexcept {
        auto *ctx = static_cast<foreach_ctx<F> *>(p);
#if defined(__cpp_exceptions)
        try {
            return foreach_call<F>(ctx, page, frame);
        } catch (...) {
            ctx->ex = std::current_exception();
            return 1;
        }
#else
        return foreach_call<F>(ctx, page, frame);
#endif
    }
};

/* ---- guards ---------------------------------------------------------------------------- */

/**
 * Holds the writer or checkpointer role of a handle from construction until destruction (or
 * release()). The throwing constructor waits up to `timeout_ms` (0: try once) and throws
 * tshmpp::error (errc::busy on a timeout); the error_code one leaves the guard empty.
 */
template <role R> class role_guard {
  public:
    role_guard(handle &h, std::uint32_t timeout_ms) : h_(h.get()) {
        std::error_code ec;
        take(timeout_ms, ec);
        detail::rethrow(ec, R == role::writer ? "tshm_writer_acquire" : "tshm_checkpointer_acquire");
    }
    role_guard(handle &h, std::uint32_t timeout_ms, std::error_code &ec) noexcept : h_(h.get()) {
        take(timeout_ms, ec);
    }
    role_guard(const role_guard &) = delete;
    role_guard &operator=(const role_guard &) = delete;
    role_guard(role_guard &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    role_guard &operator=(role_guard &&o) noexcept {
        if (this != &o) {
            std::error_code ignored;
            release(ignored);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    ~role_guard() {
        std::error_code ignored;
        release(ignored);
    }

    bool owns() const noexcept { return h_ != nullptr; }
    explicit operator bool() const noexcept { return owns(); }

    /** Releases the role now (nothing when the guard is empty). */
    void release(std::error_code &ec) noexcept {
        ec.clear();
        if (h_ == nullptr) return;
        ::tshm *h = std::exchange(h_, nullptr);
        detail::set(ec, R == role::writer ? tshm_writer_release(h) : tshm_checkpointer_release(h));
    }
    void release() {
        std::error_code ec;
        release(ec);
        detail::rethrow(ec, R == role::writer ? "tshm_writer_release" : "tshm_checkpointer_release");
    }

  private:
    ::tshm *h_;

    void take(std::uint32_t timeout_ms, std::error_code &ec) noexcept {
        if (!detail::set(ec, R == role::writer ? tshm_writer_acquire(h_, timeout_ms)
                                               : tshm_checkpointer_acquire(h_, timeout_ms)))
            h_ = nullptr;
    }
};

using writer_guard = role_guard<role::writer>;
using checkpointer_guard = role_guard<role::checkpointer>;

/** A read transaction (tshm_reader_begin .. tshm_reader_end): pins snapshot() while it lives. */
class reader_guard {
  public:
    explicit reader_guard(handle &h) : h_(h.get()) {
        std::error_code ec;
        begin(ec);
        detail::rethrow(ec, "tshm_reader_begin");
    }
    reader_guard(handle &h, std::error_code &ec) noexcept : h_(h.get()) { begin(ec); }
    reader_guard(const reader_guard &) = delete;
    reader_guard &operator=(const reader_guard &) = delete;
    reader_guard(reader_guard &&o) noexcept
        : h_(std::exchange(o.h_, nullptr)), slot_(o.slot_), snap_(o.snap_) {}
    reader_guard &operator=(reader_guard &&o) noexcept {
        if (this != &o) {
            std::error_code ignored;
            end(ignored);
            h_ = std::exchange(o.h_, nullptr);
            slot_ = o.slot_;
            snap_ = o.snap_;
        }
        return *this;
    }
    ~reader_guard() {
        std::error_code ignored;
        end(ignored);
    }

    bool active() const noexcept { return h_ != nullptr; }
    explicit operator bool() const noexcept { return active(); }
    std::uint32_t slot() const noexcept { return slot_; }
    /** The snapshot this transaction pins. */
    const tshm_snapshot &snapshot() const noexcept { return snap_; }

    /** handle::index_find at this transaction's snapshot. */
    std::optional<std::uint64_t> find(std::uint32_t page, std::error_code &ec) const noexcept {
        return detail::find(h_, page, snap_.max_frame, ec);
    }
    std::optional<std::uint64_t> find(std::uint32_t page) const {
        std::error_code ec;
        std::optional<std::uint64_t> f = find(page, ec);
        detail::rethrow(ec, "tshm_index_find");
        return f;
    }

    /** Ends the transaction now (nothing when it is not active). */
    void end(std::error_code &ec) noexcept {
        ec.clear();
        if (h_ == nullptr) return;
        detail::set(ec, tshm_reader_end(std::exchange(h_, nullptr), slot_));
    }
    void end() {
        std::error_code ec;
        end(ec);
        detail::rethrow(ec, "tshm_reader_end");
    }

  private:
    ::tshm *h_;
    std::uint32_t slot_ = 0;
    tshm_snapshot snap_{};

    void begin(std::error_code &ec) noexcept {
        if (!detail::set(ec, tshm_reader_begin(h_, &slot_, &snap_))) h_ = nullptr;
    }
};

/**
 * Holds engine lock slots slot..slot+n-1 in one mode until destruction (or unlock()).
 * tshm_lock never waits: the throwing constructor throws errc::busy when a conflicting lock is
 * held; the error_code one sets errc::busy and leaves the guard empty.
 */
class engine_lock_guard {
  public:
    engine_lock_guard(handle &h, std::uint32_t slot, std::uint32_t n, lock_mode m)
        : h_(h.get()), slot_(slot), n_(n), mode_(m) {
        int rc = take();
        detail::check(rc, "tshm_lock", rc != TSHM_BUSY);
    }
    engine_lock_guard(handle &h, std::uint32_t slot, std::uint32_t n, lock_mode m,
                      std::error_code &ec) noexcept
        : h_(h.get()), slot_(slot), n_(n), mode_(m) {
        detail::set(ec, take());
    }
    engine_lock_guard(const engine_lock_guard &) = delete;
    engine_lock_guard &operator=(const engine_lock_guard &) = delete;
    engine_lock_guard(engine_lock_guard &&o) noexcept
        : h_(std::exchange(o.h_, nullptr)), slot_(o.slot_), n_(o.n_), mode_(o.mode_) {}
    engine_lock_guard &operator=(engine_lock_guard &&o) noexcept {
        if (this != &o) {
            std::error_code ignored;
            unlock(ignored);
            h_ = std::exchange(o.h_, nullptr);
            slot_ = o.slot_;
            n_ = o.n_;
            mode_ = o.mode_;
        }
        return *this;
    }
    ~engine_lock_guard() {
        std::error_code ignored;
        unlock(ignored);
    }

    bool owns_lock() const noexcept { return h_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }

    /** Releases the slots now (nothing when the guard is empty). */
    void unlock(std::error_code &ec) noexcept {
        ec.clear();
        if (h_ == nullptr) return;
        detail::set(ec, tshm_lock(std::exchange(h_, nullptr), slot_, n_,
                                  static_cast<std::uint32_t>(mode_) | TSHM_LOCK_UNLOCK));
    }
    void unlock() {
        std::error_code ec;
        unlock(ec);
        detail::rethrow(ec, "tshm_lock (unlock)");
    }

  private:
    ::tshm *h_;
    std::uint32_t slot_, n_;
    lock_mode mode_;

    int take() noexcept {
        int rc = tshm_lock(h_, slot_, n_, static_cast<std::uint32_t>(mode_));
        if (rc != TSHM_OK) h_ = nullptr;
        return rc;
    }
};

} // namespace tshmpp

#endif /* TSHM_HPP */
