//! A persistent thread pool. One job at a time: the caller publishes a job of
//! `n` chunks, wakes the workers, takes chunks itself, and waits until every
//! chunk is done. Chunks are claimed with a CAS on a word that carries the
//! job's epoch, so a worker that wakes late can never take a chunk of a job
//! it did not see published.

const std = @import("std");
const Futex = std.Thread.Futex;
const Atomic = std.atomic.Value;

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

pub const Pool = struct {
    allocator: std.mem.Allocator,
    workers: []std.Thread,
    /// Serializes callers: one job in flight per pool.
    busy: std.Thread.Mutex = .{},
    /// Bumped for every published job and at shutdown; workers sleep on it.
    epoch: Atomic(u32) = .init(0),
    /// (epoch << 32) | next chunk index.
    claim: Atomic(u64) = .init(0),
    remaining: Atomic(u32) = .init(0),
    job: Job = undefined,
    stopping: Atomic(bool) = .init(false),
    /// Workers asleep on `epoch`, and whether the caller sleeps on
    /// `remaining`: a futex wake (a system call, slow on virtual machines)
    /// is made only when someone sleeps.
    sleepers: Atomic(u32) = .init(0),
    caller_sleeps: Atomic(bool) = .init(false),
    /// Set in a forked child (see `orphan`): the workers are the parent's.
    orphaned: bool = false,

    /// `num_threads` counts the calling thread, so it spawns one fewer worker.
    pub fn init(self: *Pool, allocator: std.mem.Allocator, num_threads: usize) !void {
        self.* = .{ .allocator = allocator, .workers = &.{} };
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
            workers[spawned] = try std.Thread.spawn(.{ .stack_size = 256 * 1024 }, workerMain, .{self});
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
        self.job = job;
        self.remaining.store(@intCast(job.chunks), .release);
        const epoch = self.epoch.load(.monotonic) +% 1;
        self.claim.store(@as(u64, epoch) << 32, .release);
        self.epoch.store(epoch, .seq_cst);
        if (self.sleepers.load(.seq_cst) > 0) Futex.wake(&self.epoch, @intCast(@min(self.workers.len, job.chunks - 1)));
        self.work(epoch);
        const Unfinished = struct {
            pool: *Pool,
            fn holds(c: @This()) bool {
                return c.pool.remaining.load(.acquire) != 0;
            }
        };
        spinWhile(caller_spin_ns, Unfinished{ .pool = self });
        while (self.remaining.load(.acquire) != 0) {
            self.caller_sleeps.store(true, .seq_cst);
            const left = self.remaining.load(.seq_cst);
            if (left != 0) Futex.wait(&self.remaining, left);
        }
        self.caller_sleeps.store(false, .monotonic);
    }

    fn work(self: *Pool, epoch: u32) void {
        var cur = self.claim.load(.acquire);
        while (true) {
            if (cur >> 32 != epoch) return;
            const index: usize = @intCast(cur & 0xFFFF_FFFF);
            if (index >= self.job.chunks) return;
            cur = self.claim.cmpxchgWeak(cur, cur + 1, .acq_rel, .acquire) orelse {
                self.job.run(self.job.ctx, index);
                if (self.remaining.fetchSub(1, .seq_cst) == 1 and self.caller_sleeps.load(.seq_cst)) Futex.wake(&self.remaining, 1);
                cur = self.claim.load(.acquire);
                continue;
            };
        }
    }

    fn workerMain(self: *Pool) void {
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
            self.work(e);
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
