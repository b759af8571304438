//! A persistent thread pool. One job at a time: the caller publishes a job of
//! `n` chunks, wakes the workers, takes chunks itself, and waits until every
//! chunk is done.
//!
//! The caller runs chunk 0 and worker w its home chunk w first, so a job of
//! one chunk per thread, repeated on the same arrays, finds each part in the
//! cache of the core that did it last time. Chunks past the homes are
//! claimed in order; a thread with nothing left steals the homes of threads
//! that have not come (asleep, or not scheduled), so no one waits for a
//! sleeping thread. A home is claimed by a CAS of its slot to the job's
//! sequence number, and the other chunks by a CAS on a word that carries
//! the job's epoch: a worker that wakes late can never take a chunk of a job
//! it did not see published.
//!
//! A job's hand-off is the pool's cost at medium sizes (a few µs of work per
//! thread), so what threads write is laid out by who writes it: the caller
//! publishes in one cache line that workers only read, a worker claims its
//! home in a line of its own, and workers count finished chunks in a line
//! the caller only reads.

const std = @import("std");
const Futex = std.Thread.Futex;
const Atomic = std.atomic.Value;
const cache_line = std.atomic.cache_line;

/// How long a worker spins after a job before it sleeps, and the caller
/// spins waiting for the last chunks before it sleeps. Waking a sleeping
/// thread was measured at 20–90 µs on a virtual machine; calls from Python
/// come every few µs, so workers stay awake across a loop of them.
const worker_spin_ns = 250 * std.time.ns_per_us;
const caller_spin_ns = 1 * std.time.ns_per_ms;

/// Spins (pausing) while `cond` holds, for at most `ns`.
fn spinWhile(ns: u64, cond: anytype) void {
    var timer = std.time.Timer.start() catch return;
    while (true) {
        for (0..64) |_| {
            if (!cond.holds()) return;
            std.atomic.spinLoopHint();
        }
        if (timer.read() > ns) return;
    }
}

pub const Job = struct {
    ctx: *const anyopaque,
    run: *const fn (ctx: *const anyopaque, chunk: usize) void,
    chunks: usize,
};

/// A worker's home slot: the sequence number of the last job whose home
/// chunk was taken, by the worker or by a thread that stole it.
const Home = struct {
    taken: Atomic(u64) align(cache_line) = .init(0),
};

pub const Pool = struct {
    allocator: std.mem.Allocator,
    workers: []std.Thread,
    /// homes[w - 1] is worker w's.
    homes: []Home,
    /// Serializes callers: one job in flight per pool.
    busy: std.Thread.Mutex = .{},
    /// Bumped for every published job and at shutdown; workers sleep on it.
    epoch: Atomic(u32) align(cache_line) = .init(0),
    stopping: Atomic(bool) = .init(false),
    job: Job = undefined,
    /// (sequence number << 16) | homes: the published job and how many of
    /// its first chunks are homes (one per thread that has one).
    ticket: Atomic(u64) = .init(0),
    /// (epoch << 32) | next chunk index past the homes.
    claim: Atomic(u64) = .init(0),
    /// Chunks that workers have finished, ever (wrapping), and its value
    /// when the last job ended (the caller's: reading `finished` to learn it
    /// would wait for the line from the worker that wrote it last).
    finished: Atomic(u32) align(cache_line) = .init(0),
    finished_before: u32 align(cache_line) = 0,
    /// Workers asleep on `epoch`, and whether the caller sleeps on
    /// `finished`: a futex wake (a system call, slow on virtual machines)
    /// is made only when someone sleeps.
    sleepers: Atomic(u32) align(cache_line) = .init(0),
    caller_sleeps: Atomic(bool) = .init(false),
    /// Set in a forked child (see `orphan`): the workers are the parent's.
    orphaned: bool = false,

    /// `num_threads` counts the calling thread, so it spawns one fewer worker.
    pub fn init(self: *Pool, allocator: std.mem.Allocator, num_threads: usize) !void {
        self.* = .{ .allocator = allocator, .workers = &.{}, .homes = &.{} };
        self.homes = try allocator.alloc(Home, num_threads - 1);
        errdefer allocator.free(self.homes);
        for (self.homes) |*h| h.* = .{};
        const workers = try allocator.alloc(std.Thread, num_threads - 1);
        var spawned: usize = 0;
        errdefer {
            self.stopping.store(true, .release);
            _ = self.epoch.fetchAdd(1, .release);
            Futex.wake(&self.epoch, std.math.maxInt(u32));
            for (workers[0..spawned]) |t| t.join();
            allocator.free(workers);
        }
        while (spawned < workers.len) : (spawned += 1) {
            workers[spawned] = try std.Thread.spawn(.{ .stack_size = 256 * 1024 }, workerMain, .{ self, spawned + 1 });
        }
        self.workers = workers;
    }

    pub fn deinit(self: *Pool) void {
        if (!self.orphaned) {
            self.stopping.store(true, .release);
            _ = self.epoch.fetchAdd(1, .release);
            Futex.wake(&self.epoch, std.math.maxInt(u32));
            for (self.workers) |t| t.join();
        }
        self.allocator.free(self.workers);
        self.allocator.free(self.homes);
    }

    /// For a forked child, where only the forking thread exists (call it
    /// there, before any other thread starts): the workers and whatever job
    /// or lock they held were the parent's. From now on every job runs on its
    /// caller alone, and deinit joins nothing.
    pub fn orphan(self: *Pool) void {
        self.orphaned = true;
    }

    pub fn threadCount(self: *const Pool) usize {
        return if (self.orphaned) 1 else self.workers.len + 1;
    }

    /// Runs every chunk of `job` and returns when all are done. If another
    /// caller holds the pool, this caller runs its job alone rather than wait.
    pub fn run(self: *Pool, job: Job) void {
        if (self.threadCount() == 1 or job.chunks <= 1 or !self.busy.tryLock()) {
            for (0..job.chunks) |c| job.run(job.ctx, c);
            return;
        }
        defer self.busy.unlock();
        // No worker is in a chunk now, and `finished` is where the last job
        // left it: what they finish from here on is this job's.
        const base = self.finished_before;
        // The claim word takes the new epoch before the job changes: a late
        // waker's CAS, tagged with an older epoch, fails from here on.
        const epoch = self.epoch.load(.monotonic) +% 1;
        const home_count = @min(self.threadCount(), job.chunks, max_homes);
        self.claim.store(@as(u64, epoch) << 32 | home_count, .release);
        self.job = job;
        const seq = (self.ticket.load(.monotonic) >> 16) + 1;
        self.ticket.store(seq << 16 | home_count, .release);
        self.epoch.store(epoch, .seq_cst);
        if (self.sleepers.load(.seq_cst) > 0) Futex.wake(&self.epoch, @intCast(@min(self.workers.len, job.chunks - 1)));
        job.run(job.ctx, 0);
        var until = base +% @as(u32, @intCast(job.chunks - 1 - self.claimInOrder(epoch, false)));
        // Where the workers have already finished the rest, their home slots
        // (lines they own) are not read.
        if (self.finished.load(.acquire) != until) until -%= @intCast(self.stealHomes(seq, home_count, false));
        const Unfinished = struct {
            pool: *Pool,
            until: u32,
            fn holds(c: @This()) bool {
                return c.pool.finished.load(.acquire) != c.until;
            }
        };
        spinWhile(caller_spin_ns, Unfinished{ .pool = self, .until = until });
        while (true) {
            self.caller_sleeps.store(true, .seq_cst);
            const done = self.finished.load(.seq_cst);
            if (done == until) break;
            Futex.wait(&self.finished, done);
        }
        self.caller_sleeps.store(false, .monotonic);
        self.finished_before = until;
    }

    /// Worker homes past this many are not homes but claimed in order (the
    /// count shares the ticket with the sequence number).
    const max_homes = 0xFFFF;

    /// Runs chunk `index`; a worker counts it in `finished` at once, so the
    /// caller waits for no more than the chunk (the caller counts its own).
    fn runChunk(self: *Pool, index: usize, worker: bool) void {
        self.job.run(self.job.ctx, index);
        if (!worker) return;
        _ = self.finished.fetchAdd(1, .seq_cst);
        if (self.caller_sleeps.load(.seq_cst)) Futex.wake(&self.finished, 1);
    }

    /// Runs the chunks past the homes of the job published under `epoch`
    /// until none is left; returns how many.
    fn claimInOrder(self: *Pool, epoch: u32, worker: bool) usize {
        var ran: usize = 0;
        var cur = self.claim.load(.acquire);
        while (cur >> 32 == epoch) {
            const index: usize = @intCast(cur & 0xFFFF_FFFF);
            if (index >= self.job.chunks) break;
            cur = self.claim.cmpxchgWeak(cur, cur + 1, .acq_rel, .acquire) orelse {
                self.runChunk(index, worker);
                ran += 1;
                cur = self.claim.load(.acquire);
                continue;
            };
        }
        return ran;
    }

    /// Runs the worker homes of job `seq` that no one has taken; returns how many.
    fn stealHomes(self: *Pool, seq: u64, home_count: usize, worker: bool) usize {
        var ran: usize = 0;
        for (1..home_count) |w| {
            if (self.claimHome(w, seq)) {
                self.runChunk(w, worker);
                ran += 1;
            }
        }
        return ran;
    }

    /// Whether this thread took worker w's home chunk of job `seq`. Sequence
    /// numbers only grow, so a slot at `seq` or past it is taken for this job.
    fn claimHome(self: *Pool, w: usize, seq: u64) bool {
        const slot = &self.homes[w - 1].taken;
        var cur = slot.load(.monotonic);
        while (cur < seq) {
            cur = slot.cmpxchgWeak(cur, seq, .acquire, .monotonic) orelse return true;
        }
        return false;
    }

    fn workerMain(self: *Pool, home: usize) void {
        // Start from the epoch the pool was created with, not the current one:
        // a worker that starts late must still see a shutdown that came first.
        var seen: u32 = 0;
        while (true) {
            const Idle = struct {
                pool: *Pool,
                seen: u32,
                fn holds(c: @This()) bool {
                    return c.pool.epoch.load(.acquire) == c.seen;
                }
            };
            // Spin first: jobs come in bursts, and a futex wake-up costs more than a small job.
            spinWhile(worker_spin_ns, Idle{ .pool = self, .seen = seen });
            var e = self.epoch.load(.acquire);
            while (e == seen) : (e = self.epoch.load(.acquire)) {
                _ = self.sleepers.fetchAdd(1, .seq_cst);
                if (self.epoch.load(.seq_cst) == seen) Futex.wait(&self.epoch, seen);
                _ = self.sleepers.fetchSub(1, .seq_cst);
            }
            seen = e;
            if (self.stopping.load(.acquire)) return;
            // The ticket may be a newer job's than epoch e's (the caller moved
            // on): the home is then claimed for that job, and the claims in
            // order, tagged with e, fail.
            const ticket = self.ticket.load(.acquire);
            const seq = ticket >> 16;
            const home_count: usize = @intCast(ticket & 0xFFFF);
            if (home < home_count and self.claimHome(home, seq)) self.runChunk(home, true);
            _ = self.claimInOrder(e, true);
            _ = self.stealHomes(seq, home_count, true);
        }
    }
};

/// CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU
/// quota when one is set.
pub fn availableCpus() usize {
    var n = std.Thread.getCpuCount() catch 1;
    if (cgroupQuota()) |q| n = @min(n, q);
    return @max(n, 1);
}

fn cgroupQuota() ?usize {
    if (@import("builtin").os.tag != .linux) return null;
    var buf: [128]u8 = undefined;
    const file = std.fs.openFileAbsolute("/sys/fs/cgroup/cpu.max", .{}) catch return null;
    defer file.close();
    const len = file.read(&buf) catch return null;
    var it = std.mem.tokenizeAny(u8, buf[0..len], " \n");
    const quota = std.fmt.parseInt(u64, it.next() orelse return null, 10) catch return null; // "max" → null
    const period = std.fmt.parseInt(u64, it.next() orelse return null, 10) catch return null;
    if (period == 0) return null;
    return @intCast(@max(1, (quota + period - 1) / period));
}

test "an orphaned pool runs jobs on the caller and deinit joins nothing" {
    var pool: Pool = undefined;
    try pool.init(std.testing.allocator, 2);
    // As in a forked child: a job was in flight and its lock held when the workers vanished.
    pool.busy.lock();
    pool.orphan();
    var hits: [64]u32 = @splat(0);
    const Ctx = struct {
        fn run(ctx: *const anyopaque, chunk: usize) void {
            const h: *[64]u32 = @ptrCast(@alignCast(@constCast(ctx)));
            h[chunk] += 1;
        }
    };
    pool.run(.{ .ctx = &hits, .run = Ctx.run, .chunks = hits.len });
    for (hits) |h| try std.testing.expectEqual(@as(u32, 1), h);
    try std.testing.expectEqual(@as(usize, 1), pool.threadCount());
    // Here the worker does exist: stop it as the parent would, then deinit must not wait for it.
    pool.stopping.store(true, .release);
    _ = pool.epoch.fetchAdd(1, .release);
    Futex.wake(&pool.epoch, 1);
    const worker = pool.workers[0];
    pool.deinit();
    worker.join();
}

test "pool runs every chunk exactly once, with fewer, as many and more chunks than threads" {
    var pool: Pool = undefined;
    try pool.init(std.testing.allocator, 3);
    defer pool.deinit();
    var hits: [40]Atomic(u32) = undefined;
    const Ctx = struct {
        fn run(ctx: *const anyopaque, chunk: usize) void {
            const h: *[40]Atomic(u32) = @ptrCast(@alignCast(@constCast(ctx)));
            _ = h[chunk].fetchAdd(1, .monotonic);
        }
    };
    for (2..hits.len + 1) |chunks| {
        for (&hits) |*h| h.* = .init(0);
        for (0..20) |_| pool.run(.{ .ctx = &hits, .run = Ctx.run, .chunks = chunks });
        for (hits[0..chunks]) |*h| try std.testing.expectEqual(@as(u32, 20), h.load(.monotonic));
        for (hits[chunks..]) |*h| try std.testing.expectEqual(@as(u32, 0), h.load(.monotonic));
    }
}

test "pool runs every chunk exactly once" {
    var pool: Pool = undefined;
    try pool.init(std.testing.allocator, 3);
    defer pool.deinit();
    var hits: [1000]Atomic(u32) = undefined;
    for (&hits) |*h| h.* = .init(0);
    const Ctx = struct {
        fn run(ctx: *const anyopaque, chunk: usize) void {
            const h: *[1000]Atomic(u32) = @ptrCast(@alignCast(@constCast(ctx)));
            _ = h[chunk].fetchAdd(1, .monotonic);
        }
    };
    for (0..50) |_| pool.run(.{ .ctx = &hits, .run = Ctx.run, .chunks = hits.len });
    for (&hits) |*h| try std.testing.expectEqual(@as(u32, 50), h.load(.monotonic));
}
