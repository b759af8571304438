//! The C ABI (zig/include/piquant.h): argument checking, status codes and
//! messages, and splitting calls over the context's thread pool. Nothing
//! here aborts: every failure is a status and a thread-local message.

const std = @import("std");
const types = @import("types.zig");
const dispatch = @import("dispatch.zig");
const pool_mod = @import("pool.zig");
const options = @import("build_options");

const DType = types.DType;
const Isa = types.Isa;

pub const abi_version: u32 = 1;

pub const Status = enum(c_int) {
    ok = 0,
    invalid_argument = 1,
    unsupported_dtype = 2,
    invalid_value = 3,
    isa_unavailable = 4,
    resource = 5,
    unsupported = 6,
};

threadlocal var last_error: [512:0]u8 = @splat(0);

fn fail(status: Status, comptime fmt: []const u8, args: anytype) c_int {
    const msg = std.fmt.bufPrint(last_error[0 .. last_error.len - 1], fmt, args) catch last_error[0 .. last_error.len - 1];
    last_error[msg.len] = 0;
    return @intFromEnum(status);
}

const Context = struct {
    pool: pool_mod.Pool,
    isa: Isa,
    kernels: *const types.KernelTable,
};

/// Calls at or above this many elements are split over the pool; below it
/// the calling thread does the work alone and no worker is woken.
const parallel_min_elements = 1 << 15;
const min_chunk_elements = 1 << 14;

fn chunkSize(ctx: *const Context, n: usize) usize {
    const per = n / (ctx.pool.threadCount() * 4);
    return std.mem.alignForward(usize, @max(per, min_chunk_elements), types.chunk_granule);
}

fn parallel(ctx: *Context, comptime Args: type, kernel: *const fn (*const Args, usize, usize) callconv(.c) void, args: *const Args, n: usize) void {
    if (n < parallel_min_elements or ctx.pool.threadCount() == 1) return kernel(args, 0, n);
    const Wrap = struct {
        k: *const fn (*const Args, usize, usize) callconv(.c) void,
        args: *const Args,
        n: usize,
        chunk: usize,
        fn run(p: *const anyopaque, c: usize) void {
            const self: *const @This() = @ptrCast(@alignCast(p));
            const begin = c * self.chunk;
            self.k(self.args, begin, @min(self.n, begin + self.chunk));
        }
    };
    const w = Wrap{ .k = kernel, .args = args, .n = n, .chunk = chunkSize(ctx, n) };
    ctx.pool.run(.{ .ctx = &w, .run = Wrap.run, .chunks = std.math.divCeil(usize, n, w.chunk) catch unreachable });
}

fn parseIsa(name: []const u8) ?Isa {
    return std.meta.stringToEnum(Isa, name);
}

fn isaName(isa: Isa) [*:0]const u8 {
    return switch (isa) {
        inline else => |t| @tagName(t),
    };
}

fn envThreads() !?usize {
    const s = std.posix.getenv("PIQUANT_NUM_THREADS") orelse return null;
    const v = std.fmt.parseInt(usize, std.mem.trim(u8, s, " "), 10) catch return error.Invalid;
    if (v == 0 or v > 1024) return error.Invalid;
    return v;
}

// ---------------------------------------------------------------- exports

export fn piquant_abi_version() u32 {
    return abi_version;
}

export fn piquant_version() [*:0]const u8 {
    return options.version;
}

export fn piquant_last_error() [*:0]const u8 {
    return &last_error;
}

export fn piquant_isa_name(isa: c_int) ?[*:0]const u8 {
    const t = std.meta.intToEnum(Isa, isa) catch return null;
    return isaName(t);
}

/// Bit i set: ISA variant i is built into this library and this CPU runs it.
export fn piquant_isa_mask() u32 {
    var mask: u32 = 0;
    for (dispatch.variants) |v| {
        if (dispatch.supported(v)) mask |= @as(u32, 1) << @intCast(@intFromEnum(v));
    }
    return mask;
}

export fn piquant_best_isa() c_int {
    return @intFromEnum(dispatch.best());
}

export fn piquant_default_num_threads() usize {
    return (envThreads() catch null) orelse pool_mod.availableCpus();
}

export fn piquant_context_create(num_threads: usize, isa_name: ?[*:0]const u8, out: ?*?*Context) c_int {
    const result = out orelse return fail(.invalid_argument, "out: expected a non-NULL pointer", .{});
    result.* = null;
    const requested: ?[]const u8 = if (isa_name) |p| std.mem.span(p) else std.posix.getenv("PIQUANT_ISA");
    var isa = dispatch.best();
    if (requested) |name| {
        if (name.len != 0) {
            isa = parseIsa(name) orelse return fail(.isa_unavailable, "PIQUANT_ISA/isa: unknown ISA '{s}'; expected one of generic, sse42, avx2, avx512f, neon", .{name});
            if (!dispatch.isBuilt(isa)) return fail(.isa_unavailable, "isa: '{s}' is not built for this architecture", .{name});
            if (!dispatch.supported(isa)) return fail(.isa_unavailable, "isa: this CPU cannot run '{s}'", .{name});
        }
    }
    var threads = num_threads;
    if (threads == 0) {
        threads = (envThreads() catch return fail(.invalid_argument, "PIQUANT_NUM_THREADS: expected an integer from 1 to 1024", .{})) orelse pool_mod.availableCpus();
    }
    if (threads > 1024) return fail(.invalid_argument, "num_threads: expected 1 to 1024, got {d}", .{threads});
    const alloc = std.heap.c_allocator;
    const ctx = alloc.create(Context) catch return fail(.resource, "out of memory", .{});
    ctx.isa = isa;
    ctx.kernels = dispatch.table(isa);
    ctx.pool.init(alloc, threads) catch |e| {
        alloc.destroy(ctx);
        return fail(.resource, "could not start {d} threads: {s}", .{ threads, @errorName(e) });
    };
    result.* = ctx;
    return 0;
}

export fn piquant_context_destroy(ctx: ?*Context) void {
    const c = ctx orelse return;
    c.pool.deinit();
    std.heap.c_allocator.destroy(c);
}

export fn piquant_context_num_threads(ctx: ?*const Context) usize {
    return if (ctx) |c| c.pool.threadCount() else 0;
}

export fn piquant_context_isa(ctx: ?*const Context) c_int {
    return if (ctx) |c| @intFromEnum(c.isa) else -1;
}

fn checkBuffers(ctx: ?*Context, in: ?*const anyopaque, out: ?*anyopaque, numel: usize) c_int {
    if (ctx == null) return fail(.invalid_argument, "ctx: expected a context, got NULL", .{});
    if (numel > (@as(usize, 1) << 62)) return fail(.invalid_argument, "numel: {d} is larger than any buffer", .{numel});
    if (numel != 0 and in == null) return fail(.invalid_argument, "in: expected a buffer, got NULL", .{});
    if (numel != 0 and out == null) return fail(.invalid_argument, "out: expected a buffer, got NULL", .{});
    return 0;
}

fn checkParams(q: DType, scale: f32, zero_point: i64) c_int {
    if (!(scale > 0) or !std.math.isFinite(scale) or !std.math.isFinite(1.0 / scale))
        return fail(.invalid_value, "scale: expected a finite float32 > 0 whose reciprocal is finite, got {e}", .{scale});
    if (zero_point < q.qmin() or zero_point > q.qmax())
        return fail(.invalid_value, "zero_point: expected an integer in [{d}, {d}] for {s}, got {d}", .{ q.qmin(), q.qmax(), @tagName(q), zero_point });
    return 0;
}

export fn piquant_quantize(ctx: ?*Context, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, scale: f32, zero_point: i64, round_mode: types.RoundMode) c_int {
    if (checkBuffers(ctx, in, out, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (!dtype_in.isFloat()) return fail(.unsupported_dtype, "dtype_in: expected a float type (f32, bf16), got {d}", .{@intFromEnum(dtype_in)});
    if (!dtype_out.isQuantized()) return fail(.unsupported_dtype, "dtype_out: expected a quantized type, got {d}", .{@intFromEnum(dtype_out)});
    const s = checkParams(dtype_out, scale, zero_point);
    if (s != 0) return s;
    switch (round_mode) {
        .nearest => {},
        .stochastic => return fail(.unsupported, "round_mode: stochastic rounding is not implemented yet", .{}),
        _ => return fail(.invalid_argument, "round_mode: expected 0 (nearest) or 1 (stochastic), got {d}", .{@intFromEnum(round_mode)}),
    }
    if (numel == 0) return 0;
    const args = types.QuantizeArgs{
        .src = @ptrCast(in.?),
        .dst = @ptrCast(out.?),
        .src_type = dtype_in,
        .dst_type = dtype_out,
        .inv_scale = 1.0 / scale,
        .zero_point = zero_point,
        .round_mode = round_mode,
    };
    parallel(ctx.?, types.QuantizeArgs, ctx.?.kernels.quantize, &args, numel);
    return 0;
}

export fn piquant_dequantize(ctx: ?*Context, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, scale: f32, zero_point: i64, reduce_op: types.ReduceOp) c_int {
    if (checkBuffers(ctx, in, out, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (!dtype_in.isQuantized()) return fail(.unsupported_dtype, "dtype_in: expected a quantized type, got {d}", .{@intFromEnum(dtype_in)});
    if (!dtype_out.isFloat()) return fail(.unsupported_dtype, "dtype_out: expected a float type (f32, bf16), got {d}", .{@intFromEnum(dtype_out)});
    const s = checkParams(dtype_in, scale, zero_point);
    if (s != 0) return s;
    switch (reduce_op) {
        .set, .add => {},
        _ => return fail(.invalid_argument, "reduce_op: expected 0 (set) or 1 (add), got {d}", .{@intFromEnum(reduce_op)}),
    }
    if (numel == 0) return 0;
    const args = types.DequantizeArgs{
        .src = @ptrCast(in.?),
        .dst = @ptrCast(out.?),
        .src_type = dtype_in,
        .dst_type = dtype_out,
        .scale = scale,
        .zero_point = zero_point,
        .reduce_op = reduce_op,
    };
    parallel(ctx.?, types.DequantizeArgs, ctx.?.kernels.dequantize, &args, numel);
    return 0;
}

const max_chunks = 4096;
const no_elements: [1]u8 = .{0};

/// Smallest and largest non-NaN values (+inf/-inf when there are none).
export fn piquant_minmax(ctx: ?*Context, in: ?*const anyopaque, dtype_in: DType, numel: usize, out: ?*types.MinMax) c_int {
    if (checkBuffers(ctx, in, out, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (out == null) return fail(.invalid_argument, "out: expected a pointer, got NULL", .{});
    if (!dtype_in.isFloat()) return fail(.unsupported_dtype, "dtype_in: expected a float type (f32, bf16), got {d}", .{@intFromEnum(dtype_in)});
    out.?.* = minmaxAll(ctx.?, @ptrCast(in orelse @as(*const anyopaque, &no_elements)), dtype_in, numel);
    return 0;
}

fn minmaxAll(ctx: *Context, src: [*]const u8, t: DType, n: usize) types.MinMax {
    const k = ctx.kernels.minmax;
    if (n < parallel_min_elements or ctx.pool.threadCount() == 1) return k(src, t, 0, n);
    const Job = struct {
        k: @TypeOf(k),
        src: [*]const u8,
        t: DType,
        n: usize,
        chunk: usize,
        parts: [max_chunks]types.MinMax = undefined,
        fn run(p: *const anyopaque, c: usize) void {
            const self: *@This() = @ptrCast(@alignCast(@constCast(p)));
            const begin = c * self.chunk;
            self.parts[c] = self.k(self.src, self.t, begin, @min(self.n, begin + self.chunk));
        }
    };
    var job = Job{ .k = k, .src = src, .t = t, .n = n, .chunk = @max(chunkSize(ctx, n), std.math.divCeil(usize, n, max_chunks) catch unreachable) };
    const chunks = std.math.divCeil(usize, n, job.chunk) catch unreachable;
    ctx.pool.run(.{ .ctx = &job, .run = Job.run, .chunks = chunks });
    var m = job.parts[0];
    for (job.parts[1..chunks]) |p| {
        m.min = @min(m.min, p.min);
        m.max = @max(m.max, p.max);
    }
    return m;
}

/// Parameters as MinMaxObserver computes them, in float32; see docs/semantics.md.
pub fn paramsFromRange(mm: types.MinMax, q: DType, symmetric: bool) !struct { scale: f32, zero_point: i64 } {
    const inf = std.math.inf(f32);
    if (mm.min == -inf or mm.max == inf) return error.Infinite;
    // An input with no non-NaN value has the range (+inf, -inf): treat it as {0}.
    const lo: f32 = if (mm.min > mm.max) 0 else @min(mm.min, 0);
    const hi: f32 = if (mm.min > mm.max) 0 else @max(mm.max, 0);
    const qmin: f32 = @floatFromInt(q.qmin());
    const qmax: f32 = @floatFromInt(q.qmax());
    const eps = std.math.floatEps(f32);
    if (symmetric) {
        const amax = @max(-lo, hi);
        const scale = @max(amax / ((qmax - qmin) / 2), eps);
        if (!std.math.isFinite(scale)) return error.Overflow;
        const zp: i64 = if (q.qmin() < 0) 0 else @divFloor(q.qmin() + q.qmax() + 1, 2);
        return .{ .scale = scale, .zero_point = zp };
    }
    const scale = @max((hi - lo) / (qmax - qmin), eps);
    if (!std.math.isFinite(scale)) return error.Overflow;
    const r = types.roundHalfEven(1, @splat(lo / scale))[0];
    const zp = std.math.clamp(q.qmin() - @as(i64, @intFromFloat(r)), q.qmin(), q.qmax());
    return .{ .scale = scale, .zero_point = zp };
}

export fn piquant_compute_params(ctx: ?*Context, in: ?*const anyopaque, dtype_in: DType, numel: usize, dtype_q: DType, symmetric: c_int, out_scale: ?*f32, out_zero_point: ?*i64) c_int {
    if (checkBuffers(ctx, in, out_scale, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (out_scale == null or out_zero_point == null) return fail(.invalid_argument, "out_scale/out_zero_point: expected pointers, got NULL", .{});
    if (!dtype_in.isFloat()) return fail(.unsupported_dtype, "dtype_in: expected a float type (f32, bf16), got {d}", .{@intFromEnum(dtype_in)});
    if (!dtype_q.isQuantized()) return fail(.unsupported_dtype, "dtype_q: expected a quantized type, got {d}", .{@intFromEnum(dtype_q)});
    const mm = minmaxAll(ctx.?, @ptrCast(in orelse @as(*const anyopaque, &no_elements)), dtype_in, numel);
    const p = paramsFromRange(mm, dtype_q, symmetric != 0) catch |e| return switch (e) {
        error.Infinite => fail(.invalid_value, "x: contains an infinite value; parameters need a finite range", .{}),
        error.Overflow => fail(.invalid_value, "x: its range (max - min) overflows float32", .{}),
    };
    out_scale.?.* = p.scale;
    out_zero_point.?.* = p.zero_point;
    return 0;
}

test "params of a known range" {
    const p = try paramsFromRange(.{ .min = -1, .max = 3 }, .uint8, false);
    try std.testing.expectEqual(@as(f32, 4.0 / 255.0), p.scale);
    try std.testing.expectEqual(@as(i64, 64), p.zero_point);
    const s = try paramsFromRange(.{ .min = -1, .max = 3 }, .int8, true);
    try std.testing.expectEqual(@as(i64, 0), s.zero_point);
    try std.testing.expectError(error.Infinite, paramsFromRange(.{ .min = -std.math.inf(f32), .max = 0 }, .uint8, false));
}

test {
    _ = dispatch;
    _ = pool_mod;
}
