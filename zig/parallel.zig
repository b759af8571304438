//! The parallel split: a call's elements, parameter sets or bytes divided
//! into chunks that the context's pool runs (the calling thread takes part),
//! and small calls kept on the calling thread. docs/semantics.md (Threads
//! and ISA variants) states the sizes.

const std = @import("std");
const types = @import("types.zig");
const pool_mod = @import("pool.zig");
const stream = @import("stream.zig");

const DType = types.DType;
const Pool = pool_mod.Pool;

/// Calls at or above this many elements are split over the pool; below it
/// the calling thread does the work alone and no worker is woken.
pub const parallel_min_elements = 1 << 15;
const min_chunk_elements = 1 << 14;

/// Below this many elements a call is split into one chunk per thread, each
/// thread's home chunk in the pool, so repeated calls on the same arrays
/// find each part in the cache of the core that did it last time.
/// Larger calls stream from memory, where more chunks balance the load.
const affinity_max_elements = 1 << 22;

/// At most this many chunks of a min/max reduction, whose partial results
/// live on the stack.
const max_chunks = 4096;

/// Runs `job.run(c)` for every chunk c < chunks on the pool.
fn run(pool: *Pool, job: anytype, chunks: usize) void {
    const Job = @TypeOf(job.*);
    const Run = struct {
        fn chunk(p: *const anyopaque, c: usize) void {
            const self: *Job = @ptrCast(@alignCast(@constCast(p)));
            self.run(c);
        }
    };
    pool.run(.{ .ctx = job, .run = Run.chunk, .chunks = chunks });
}

fn chunkSize(pool: *const Pool, n: usize) usize {
    const per = if (n < affinity_max_elements) n / pool.threadCount() else n / (pool.threadCount() * 4);
    return std.mem.alignForward(usize, @max(per, min_chunk_elements), types.chunk_granule);
}

fn divCeil(a: usize, b: usize) usize {
    return std.math.divCeil(usize, a, b) catch unreachable;
}

/// `kernel` over elements [0, n) of a call.
pub fn elements(pool: *Pool, kernel: types.Kernel, args: *const types.Args, n: usize) void {
    if (n < parallel_min_elements or pool.threadCount() == 1) return kernel(args, 0, n);
    split(pool, kernel, args, n, chunkSize(pool, n));
}

/// `kernel` over blocks [0, count) of `size` elements each (its ranges are
/// ranges of blocks): chunks of whole blocks, sized as element chunks are.
pub fn blocks(pool: *Pool, kernel: types.Kernel, args: *const types.Args, count: usize, size: usize) void {
    const n = count * size;
    if (n < parallel_min_elements or pool.threadCount() == 1) return kernel(args, 0, count);
    split(pool, kernel, args, count, divCeil(chunkSize(pool, n), size));
}

/// `kernel` over [0, n) in chunks of `chunk`.
fn split(pool: *Pool, kernel: types.Kernel, args: *const types.Args, n: usize, chunk: usize) void {
    const Job = struct {
        k: types.Kernel,
        args: *const types.Args,
        n: usize,
        chunk: usize,
        fn run(self: *@This(), c: usize) void {
            const begin = c * self.chunk;
            self.k(self.args, begin, @min(self.n, begin + self.chunk));
        }
    };
    var job = Job{ .k = kernel, .args = args, .n = n, .chunk = chunk };
    run(pool, &job, divCeil(n, job.chunk));
}

pub const ValidSets = @FieldType(types.KernelTable, "valid_sets");

/// Whether sets [0, count) all pass `valid`, split over the pool when
/// there are many.
pub fn setsValid(pool: *Pool, valid: ValidSets, f: DType, q: DType, scales: [*]const u8, scale_type: DType, zero_points: [*]const i64, count: usize) bool {
    const threads = pool.threadCount();
    if (count < parallel_min_elements or threads == 1) return valid(f, q, scales, scale_type, zero_points, 0, count);
    const Job = struct {
        valid: ValidSets,
        f: DType,
        q: DType,
        scales: [*]const u8,
        scale_type: DType,
        zero_points: [*]const i64,
        count: usize,
        chunk: usize,
        bad: std.atomic.Value(bool) = .init(false),
        fn run(self: *@This(), c: usize) void {
            const begin = c * self.chunk;
            if (!self.valid(self.f, self.q, self.scales, self.scale_type, self.zero_points, begin, @min(self.count, begin + self.chunk)))
                self.bad.store(true, .monotonic);
        }
    };
    var job = Job{ .valid = valid, .f = f, .q = q, .scales = scales, .scale_type = scale_type, .zero_points = zero_points, .count = count, .chunk = divCeil(count, threads) };
    run(pool, &job, threads);
    return !job.bad.load(.monotonic);
}

pub const MinMaxKernel = @FieldType(types.KernelTable, "minmax");

/// The smallest and largest non-NaN value of n elements of type t.
pub fn minmax(pool: *Pool, kernel: MinMaxKernel, src: [*]const u8, t: DType, n: usize) types.MinMax {
    if (n < parallel_min_elements or pool.threadCount() == 1) return kernel(src, t, 0, n);
    const Job = struct {
        k: MinMaxKernel,
        src: [*]const u8,
        t: DType,
        n: usize,
        chunk: usize,
        parts: [max_chunks]types.MinMax = undefined,
        fn run(self: *@This(), c: usize) void {
            const begin = c * self.chunk;
            self.parts[c] = self.k(self.src, self.t, begin, @min(self.n, begin + self.chunk));
        }
    };
    var job = Job{ .k = kernel, .src = src, .t = t, .n = n, .chunk = @max(chunkSize(pool, n), divCeil(n, max_chunks)) };
    const chunks = divCeil(n, job.chunk);
    run(pool, &job, chunks);
    var m = job.parts[0];
    for (job.parts[1..chunks]) |p| {
        m.min = @min(m.min, p.min);
        m.max = @max(m.max, p.max);
    }
    return m;
}

/// A layout whose sets are this few (and whose rows are many) is split over
/// rows: each chunk the ranges of every set over its rows, merged.
const row_split_max_sets = 1024;

/// Sets per step of a chunk of sets: their ranges, kept on the stack, are
/// turned into parameters while still in the cache.
const sets_per_step = 512;

/// compute_params per set of a layout of numel elements (`ranges` without
/// its rows and outputs; `params` without its ranges): null, or the first
/// set without parameters. Split over the pool by rows where sets are few
/// and rows many, else by sets.
pub fn setParams(pool: *Pool, kernels: *const types.KernelTable, ranges: types.SetRanges, params: types.SetParams, numel: usize) ?usize {
    const threads = if (numel < parallel_min_elements) 1 else pool.threadCount();
    const count = ranges.count;
    const outer = numel / (count * ranges.inner);
    if (threads > 1 and count <= row_split_max_sets and outer >= 4 * threads) return byRows(pool, kernels, ranges, params, numel, outer);
    const Job = struct {
        kernels: *const types.KernelTable,
        ranges: types.SetRanges,
        params: types.SetParams,
        per_chunk: usize,
        bad: std.atomic.Value(usize) = .init(std.math.maxInt(usize)),
        fn run(self: *@This(), c: usize) void {
            const first = c * self.per_chunk;
            const last = @min(self.ranges.count, first + self.per_chunk);
            var mins: [sets_per_step]f64 = undefined;
            var maxs: [sets_per_step]f64 = undefined;
            var r = self.ranges;
            r.mins = &mins;
            r.maxs = &maxs;
            var p = self.params;
            p.mins = &mins;
            p.maxs = &maxs;
            var b = first;
            while (b < last) : (b += sets_per_step) {
                const e = @min(last, b + sets_per_step);
                self.kernels.minmax_sets(&r, b, e);
                p.scales = self.params.scales + self.params.scale_type.byteCount(b);
                p.zero_points = self.params.zero_points + b;
                const k = self.kernels.params_sets(&p, e - b);
                if (k < e - b) {
                    _ = self.bad.fetchMin(b + k, .monotonic);
                    return;
                }
            }
        }
    };
    var job = Job{ .kernels = kernels, .ranges = ranges, .params = params, .per_chunk = divCeil(count, @min(count, threads * 4)) };
    job.ranges.row_begin = 0;
    job.ranges.row_end = outer;
    const chunks = divCeil(count, job.per_chunk);
    if (threads == 1) {
        for (0..chunks) |c| job.run(c);
    } else {
        run(pool, &job, chunks);
    }
    const k = job.bad.load(.monotonic);
    return if (k == std.math.maxInt(usize)) null else k;
}

fn byRows(pool: *Pool, kernels: *const types.KernelTable, ranges: types.SetRanges, params: types.SetParams, numel: usize, outer: usize) ?usize {
    const Job = struct {
        kernels: *const types.KernelTable,
        ranges: types.SetRanges,
        rows_per_chunk: usize,
        lock: std.Thread.Mutex = .{},
        mins: [row_split_max_sets]f64 = @splat(std.math.inf(f64)),
        maxs: [row_split_max_sets]f64 = @splat(-std.math.inf(f64)),
        fn run(self: *@This(), c: usize) void {
            const count = self.ranges.count;
            var mins: [row_split_max_sets]f64 = undefined;
            var maxs: [row_split_max_sets]f64 = undefined;
            var r = self.ranges;
            r.row_begin = c * self.rows_per_chunk;
            r.row_end = @min(r.row_end, r.row_begin + self.rows_per_chunk);
            r.mins = &mins;
            r.maxs = &maxs;
            self.kernels.minmax_sets(&r, 0, count);
            self.lock.lock();
            defer self.lock.unlock();
            for (self.mins[0..count], self.maxs[0..count], mins[0..count], maxs[0..count]) |*lo, *hi, l, h| {
                lo.* = @min(lo.*, l);
                hi.* = @max(hi.*, h);
            }
        }
    };
    const chunks = @min(outer, if (numel < affinity_max_elements) pool.threadCount() else pool.threadCount() * 4);
    var job = Job{ .kernels = kernels, .ranges = ranges, .rows_per_chunk = divCeil(outer, chunks) };
    job.ranges.row_begin = 0;
    job.ranges.row_end = outer;
    run(pool, &job, divCeil(outer, job.rows_per_chunk));
    var p = params;
    p.mins = &job.mins;
    p.maxs = &job.maxs;
    const k = kernels.params_sets(&p, ranges.count);
    return if (k < ranges.count) k else null;
}

/// The memory roofline the benchmarks compare against: a copy of `n` bytes
/// (dst set, with non-temporal stores) or a read of them (dst null).
pub fn roofline(pool: *Pool, src: [*]const u8, dst: ?[*]u8, n: usize) void {
    const Job = struct {
        src: [*]const u8,
        dst: ?[*]u8,
        n: usize,
        chunk: usize,
        fn run(self: *@This(), c: usize) void {
            const begin = c * self.chunk;
            const len = @min(self.n, begin + self.chunk) - begin;
            if (self.dst) |d| return stream.copyNonTemporal(d[begin..][0..len], self.src[begin..][0..len]);
            const V = @Vector(64, u8);
            var acc: V = @splat(0);
            var i: usize = 0;
            while (i + 64 <= len) : (i += 64) acc ^= self.src[begin + i ..][0..64].*;
            std.mem.doNotOptimizeAway(acc);
        }
    };
    if (n == 0) return;
    var job = Job{ .src = src, .dst = dst, .n = n, .chunk = std.mem.alignForward(usize, @max(n / (pool.threadCount() * 4), 1 << 16), 64) };
    run(pool, &job, divCeil(n, job.chunk));
}
