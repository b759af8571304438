//! The C ABI (zig/include/piquant.h), the thin edge: argument checks,
//! status codes and messages, contexts, and calls into the kernel table
//! split over the context's pool (parallel.zig). Nothing here aborts: every
//! failure is a status and a thread-local message.

const std = @import("std");
const types = @import("types.zig");
const dispatch = @import("dispatch.zig");
const pool_mod = @import("pool.zig");
const Atomic = std.atomic.Value;
const Futex = std.Thread.Futex;
const parallel = @import("parallel.zig");
const params_mod = @import("params.zig");
const options = @import("build_options");

const DType = types.DType;
const Isa = @import("isa.zig").Isa;

pub const abi_version: u32 = 4;

pub const Status = enum(c_int) {
    ok = 0,
    invalid_argument = 1,
    unsupported_dtype = 2,
    invalid_value = 3,
    isa_unavailable = 4,
    resource = 5,
    unsupported = 6,
    closed = 7,
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

fn parseIsa(name: []const u8) ?Isa {
    return std.meta.stringToEnum(Isa, name);
}

fn isaName(isa: Isa) [*:0]const u8 {
    return switch (isa) {
        inline else => |t| @tagName(t),
    };
}

/// An environment variable's value, in `buf` on Windows (whose environment
/// is UTF-16 and must be converted); null if unset.
fn getenv(comptime name: []const u8, buf: []u8) ?[]const u8 {
    if (@import("builtin").os.tag == .windows) {
        var fba = std.heap.FixedBufferAllocator.init(buf);
        return std.process.getEnvVarOwned(fba.allocator(), name) catch null;
    }
    return std.posix.getenv(name);
}

/// The rule for every PIQUANT_* variable: surrounding white space is
/// ignored, and unset, empty or blank means the default (null).
fn envValue(comptime name: []const u8, buf: []u8) ?[]const u8 {
    const s = std.mem.trim(u8, getenv(name, buf) orelse return null, " \t\r\n");
    return if (s.len == 0) null else s;
}

fn envThreads() !?usize {
    var buf: [64]u8 = undefined;
    const s = envValue("PIQUANT_NUM_THREADS", &buf) orelse return null;
    const v = std.fmt.parseInt(usize, s, 10) catch return error.Invalid;
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
        if (dispatch.supported(v.isa)) mask |= @as(u32, 1) << @intCast(@intFromEnum(v.isa));
    }
    return mask;
}

export fn piquant_best_isa() c_int {
    return @intFromEnum(dispatch.best());
}

export fn piquant_default_num_threads() usize {
    return (envThreads() catch null) orelse pool_mod.availableCpus();
}

export fn piquant_context_create(num_threads: usize, isa_name: ?[*:0]const u8, out: ?*?*Handle) c_int {
    const result = out orelse return fail(.invalid_argument, "out: expected a non-NULL pointer", .{});
    result.* = null;
    var env_buf: [64]u8 = undefined;
    const arg = if (isa_name == null) "PIQUANT_ISA" else "isa";
    const requested: ?[]const u8 = if (isa_name) |p| std.mem.span(p) else envValue("PIQUANT_ISA", &env_buf);
    var isa = dispatch.best();
    if (requested) |name| {
        isa = parseIsa(name) orelse return fail(.isa_unavailable, "{s}: unknown ISA '{s}'; expected one of " ++ @import("isa.zig").names, .{ arg, name });
        if (!dispatch.isBuilt(isa)) return fail(.isa_unavailable, "{s}: '{s}' is not built for this architecture", .{ arg, name });
        if (!dispatch.supported(isa)) return fail(.isa_unavailable, "{s}: this CPU cannot run '{s}'", .{ arg, name });
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
    result.* = contexts.open(ctx) orelse {
        ctx.pool.deinit();
        alloc.destroy(ctx);
        return fail(.resource, "more than {d} contexts are open", .{Contexts.capacity});
    };
    return 0;
}

/// Waits for the calls in flight on `handle` to return, then stops the
/// pool's threads and frees the context. Calls that arrive meanwhile, and
/// any later use of the handle, fail with PIQUANT_ERR_CLOSED.
export fn piquant_context_destroy(handle: ?*Handle) void {
    const ctx = contexts.close(handle) orelse return;
    ctx.pool.deinit();
    std.heap.c_allocator.destroy(ctx);
}

export fn piquant_context_num_threads(handle: ?*const Handle) usize {
    const ctx = contexts.enter(handle) catch return 0;
    defer contexts.leave(handle);
    return ctx.pool.threadCount();
}

export fn piquant_context_isa(handle: ?*const Handle) c_int {
    const ctx = contexts.enter(handle) catch return -1;
    defer contexts.leave(handle);
    return @intFromEnum(ctx.isa);
}

/// What C holds for a context: a slot index and the slot's generation, not
/// an address. A handle outlives its context, so a call racing destroy, a
/// stale copy or a second destroy finds a closed slot (or a newer
/// generation) and fails, instead of reaching freed memory or a context
/// created later in the same slot. Garbage handles fail the same way.
const Handle = opaque {};

const Contexts = struct {
    const capacity = 1 << index_bits;
    const index_bits = 16;
    const Generation = std.meta.Int(.unsigned, @min(32, @bitSizeOf(usize) - index_bits));
    /// In `Slot.calls`: the slot holds an open context. The other bits count
    /// calls inside it (and, for an instant, calls that found it closed).
    const open_bit: u32 = 1 << 31;

    const Slot = struct {
        calls: Atomic(u32) = .init(0),
        /// Of the slot's current or next context, written under `lock` while
        /// closed. Handles carry it plus 1, so no handle is NULL.
        generation: Atomic(Generation) = .init(0),
        ctx: ?*Context = null,
        next_free: u32 = 0,
    };

    /// Guards slot allocation and open/close; never held during a call.
    lock: std.Thread.Mutex = .{},
    slots: [capacity]Slot = @splat(.{}),
    used: Atomic(u32) = .init(0),
    /// 1 + the first free slot below `used`, 0 if none.
    free: u32 = 0,

    const Decoded = struct { slot: *Slot, index: u32, generation: usize };

    fn decode(self: *Contexts, handle: ?*const Handle) ?Decoded {
        const h = @intFromPtr(handle orelse return null);
        const index: u32 = @intCast(h & (capacity - 1));
        if (index >= self.used.load(.acquire)) return null;
        return .{ .slot = &self.slots[index], .index = index, .generation = (h >> index_bits) -% 1 };
    }

    fn open(self: *Contexts, ctx: *Context) ?*Handle {
        // Not under `lock`: fork holds libc's at-fork lock while it runs atForkPrepare.
        at_fork.call();
        self.lock.lock();
        defer self.lock.unlock();
        const index = if (self.free != 0) self.free - 1 else self.used.load(.monotonic);
        if (index == capacity) return null;
        const slot = &self.slots[index];
        if (self.free != 0) self.free = slot.next_free else self.used.store(index + 1, .release);
        slot.ctx = ctx;
        _ = slot.calls.fetchOr(open_bit, .release);
        return @ptrFromInt((@as(usize, slot.generation.load(.monotonic)) + 1) << index_bits | index);
    }

    /// The context of `handle`, held open until `leave(handle)`.
    fn enter(self: *Contexts, handle: ?*const Handle) Rejected!*Context {
        if (handle == null) return error.Null;
        const h = self.decode(handle) orelse return error.NotAHandle;
        if (h.slot.calls.fetchAdd(1, .acquire) & open_bit != 0 and h.slot.generation.load(.monotonic) == h.generation) return h.slot.ctx.?;
        self.leave(handle);
        return error.Closed;
    }

    fn leave(self: *Contexts, handle: ?*const Handle) void {
        const slot = self.decode(handle).?.slot;
        if (slot.calls.fetchSub(1, .release) == 1) Futex.wake(&slot.calls, std.math.maxInt(u32)); // a closed slot's last call
    }

    /// Closes `handle` and returns its context once no call is inside it;
    /// null if it is not open (NULL, destroyed, never made).
    fn close(self: *Contexts, handle: ?*Handle) ?*Context {
        const h = self.decode(handle) orelse return null;
        {
            self.lock.lock();
            defer self.lock.unlock();
            if (h.slot.generation.load(.monotonic) != h.generation or h.slot.calls.load(.monotonic) & open_bit == 0) return null;
            _ = h.slot.calls.fetchAnd(~open_bit, .acquire);
        }
        while (true) {
            const calls = h.slot.calls.load(.acquire);
            if (calls == 0) break;
            Futex.wait(&h.slot.calls, calls);
        }
        self.lock.lock();
        defer self.lock.unlock();
        const ctx = h.slot.ctx.?;
        h.slot.ctx = null;
        const g = h.slot.generation.load(.monotonic);
        h.slot.generation.store(if (g == std.math.maxInt(Generation) - 1) 0 else g + 1, .monotonic);
        h.slot.next_free = self.free;
        self.free = h.index + 1;
        return ctx;
    }

    // fork: the prepare handler holds `lock`, so the child sees no slot half
    // opened or closed. In the child only the forking thread exists: no call
    // is inside any context, and every pool's workers were the parent's.
    var at_fork = std.once(struct {
        fn register() void {
            if (@import("builtin").os.tag != .windows) _ = std.c.pthread_atfork(atForkPrepare, atForkParent, atForkChild);
        }
    }.register);

    fn atForkPrepare() callconv(.c) void {
        contexts.lock.lock();
    }

    fn atForkParent() callconv(.c) void {
        contexts.lock.unlock();
    }

    fn atForkChild() callconv(.c) void {
        contexts.lock = .{};
        for (contexts.slots[0..contexts.used.raw]) |*slot| {
            slot.calls.raw &= open_bit;
            if (slot.ctx) |ctx| ctx.pool.orphan();
        }
    }
};

var contexts: Contexts = .{};

const Rejected = error{ Null, NotAHandle, Closed };

fn rejected(e: Rejected) c_int {
    return switch (e) {
        error.Null => fail(.invalid_argument, "ctx: expected a context, got NULL", .{}),
        error.NotAHandle => fail(.invalid_argument, "ctx: not a context handle", .{}),
        error.Closed => fail(.closed, "ctx: this context was closed (destroyed)", .{}),
    };
}

fn checkBuffers(ctx: ?*Context, in: ?*const anyopaque, out: ?*anyopaque, numel: usize) c_int {
    if (ctx == null) return fail(.invalid_argument, "ctx: expected a context, got NULL", .{});
    if (numel > (@as(usize, 1) << 62)) return fail(.invalid_argument, "numel: {d} is larger than any buffer", .{numel});
    if (numel != 0 and in == null) return fail(.invalid_argument, "in: expected a buffer, got NULL", .{});
    if (numel != 0 and out == null) return fail(.invalid_argument, "out: expected a buffer, got NULL", .{});
    return 0;
}

fn checkTypes(float_arg: []const u8, f: DType, quant_arg: []const u8, q: DType) c_int {
    if (!f.isFloat()) return fail(.unsupported_dtype, "{s}: expected a float type (F32, BF16, F16, F64), got {d}", .{ float_arg, @intFromEnum(f) });
    if (!q.isQuantized()) return fail(.unsupported_dtype, "{s}: expected a quantized type (UINT2 ... INT64, FLOAT8_E4M3FN, FLOAT8_E5M2), got {d}", .{ quant_arg, @intFromEnum(q) });
    return 0;
}

/// The scale is used in the float type's compute precision (float32 unless
/// the float side is F64) and must be finite, > 0, with a finite reciprocal there.
fn checkParams(f: DType, q: DType, scale: f64, zero_point: i64, set: ?usize) c_int {
    var name_buf: [48]u8 = undefined;
    const ok = switch (f) {
        .f64 => scale > 0 and std.math.isFinite(scale) and std.math.isFinite(1.0 / scale),
        else => blk: {
            const s: f32 = @floatCast(scale);
            break :blk s > 0 and std.math.isFinite(s) and std.math.isFinite(1.0 / s);
        },
    };
    if (!ok) {
        const arg = if (set) |k| std.fmt.bufPrint(&name_buf, "params.scales[{d}]", .{k}) catch unreachable else "scale";
        return fail(.invalid_value, "{s}: expected a finite number > 0 whose reciprocal is finite in {s}, got {e}", .{ arg, if (f == .f64) "float64" else "float32", scale });
    }
    const zp = q.zeroPoint(zero_point);
    if (zp < q.qmin() or zp > q.qmax()) {
        const arg = if (set) |k| std.fmt.bufPrint(&name_buf, "params.zero_points[{d}]", .{k}) catch unreachable else "zero_point";
        return fail(.invalid_value, "{s}: expected an integer in [{d}, {d}] for {s}, got {d}", .{ arg, q.qmin(), q.qmax(), @tagName(q), zp });
    }
    return 0;
}

/// Per-channel or per-group parameters (piquant_params): element i of a
/// call uses set (i / inner) % count.
pub const GroupParams = extern struct {
    scales: ?*const anyopaque,
    zero_points: ?[*]const i64,
    count: usize,
    inner: usize,
    /// F32 or F64: the type of `scales`.
    scale_type: DType,
};

/// count sets of inner elements, repeated: numel must be whole repetitions.
fn checkLayout(numel: usize, count: usize, inner: usize) c_int {
    if (count == 0 or inner == 0) return fail(.invalid_argument, "params: count and inner must be at least 1, got {d} and {d}", .{ count, inner });
    const period = std.math.mul(usize, count, inner) catch return fail(.invalid_argument, "params: count * inner overflows", .{});
    if (numel % period != 0) return fail(.invalid_argument, "numel: {d} is not a multiple of count * inner = {d}", .{ numel, period });
    return 0;
}

fn checkGroups(ctx: *Context, f: DType, q: DType, numel: usize, params: ?*const GroupParams) c_int {
    const g = params orelse return fail(.invalid_argument, "params: expected a pointer, got NULL", .{});
    const s = checkLayout(numel, g.count, g.inner);
    if (s != 0) return s;
    const scales: [*]const u8 = @ptrCast(g.scales orelse return fail(.invalid_argument, "params.scales: expected an array of count values, got NULL", .{}));
    const zero_points = g.zero_points orelse return fail(.invalid_argument, "params.zero_points: expected an array of count values, got NULL", .{});
    if (g.scale_type != .f32 and g.scale_type != .f64)
        return fail(.unsupported_dtype, "params.scale_type: expected F32 or F64, got {d}", .{@intFromEnum(g.scale_type)});
    // Every set checked by the ISA's vector code in one pass (split over the
    // pool when there are many): the common case. Only when one fails are
    // they checked one by one, to name it.
    if (parallel.setsValid(&ctx.pool, ctx.kernels.valid_sets, f, q, scales, g.scale_type, zero_points, g.count)) return 0;
    for (0..g.count) |k| {
        const bad = checkParams(f, q, types.scaleAt(scales, g.scale_type, k), zero_points[k], k);
        if (bad != 0) return bad;
    }
    return 0; // checkParams is the authority (valid_sets agrees with it: tests/test_grouped.py)
}

/// One scale and zero point for the whole call, or per channel/group.
const ParamArg = union(enum) {
    tensor: struct { scale: f64, zero_point: i64 },
    groups: ?*const GroupParams,

    fn apply(p: ParamArg, a: *types.Args) void {
        switch (p) {
            .tensor => |t| {
                a.scale = t.scale;
                a.zero_point = t.zero_point;
            },
            .groups => |g| {
                a.scales = @ptrCast(g.?.scales.?);
                a.scale_type = g.?.scale_type;
                a.zero_points = g.?.zero_points.?;
                a.count = g.?.count;
                a.inner = g.?.inner;
            },
        }
    }
};

fn checkRoundMode(mode: types.RoundMode) c_int {
    return switch (mode) {
        .nearest, .stochastic => 0,
        _ => fail(.invalid_argument, "round_mode: expected 0 (nearest) or 1 (stochastic), got {d}", .{@intFromEnum(mode)}),
    };
}

fn checkReduceOp(op: types.ReduceOp) c_int {
    return switch (op) {
        .set, .add => 0,
        _ => fail(.invalid_argument, "reduce_op: expected 0 (set) or 1 (add), got {d}", .{@intFromEnum(op)}),
    };
}

/// The checks shared by quantize, dequantize and fake_quantize, in order:
/// each runs only if the ones before it passed (checkParams formats the
/// quantized type's name, which is only defined once checkTypes accepted it).
fn checkCall(ctx: ?*Context, in: ?*const anyopaque, out: ?*anyopaque, numel: usize, float_arg: []const u8, f: DType, quant_arg: []const u8, q: DType, params: ParamArg, round_mode: ?types.RoundMode, reduce_op: ?types.ReduceOp) c_int {
    var s = checkBuffers(ctx, in, out, numel);
    if (s == 0) s = checkTypes(float_arg, f, quant_arg, q);
    if (s == 0) s = switch (params) {
        .tensor => |t| checkParams(f, q, t.scale, t.zero_point, null),
        .groups => |g| checkGroups(ctx.?, f, q, numel, g),
    };
    if (s == 0) if (round_mode) |m| {
        s = checkRoundMode(m);
    };
    if (s == 0) if (reduce_op) |r| {
        s = checkReduceOp(r);
    };
    return s;
}

/// Outputs of at least this many bytes are written with non-temporal
/// stores: they would not stay cached anyway, and bypassing the cache saves
/// reading each destination line before it is overwritten.
const stream_min_bytes = 8 << 20;

fn run(ctx: *Context, kernel: types.Kernel, args: types.Args, params: ParamArg, numel: usize, out_type: DType) c_int {
    var a = args;
    params.apply(&a);
    // Measured at 27M elements: streaming halves the time of float32 outputs
    // and, on Intel (Sapphire Rapids) memory without huge pages, cuts
    // uint8 → bfloat16 by a quarter (AMD Zen 3 measured it slower). On AMD
    // Zen 4 it cuts float32 → uint8 by 14 % and bfloat16 → uint8 by 20-30 %
    // (Intel had measured no gain for 8-bit outputs). Packed outputs are
    // not streamed: their elements share bytes.
    a.stream = @intFromBool(out_type.bits() >= 8 and out_type.byteCount(numel) >= stream_min_bytes);
    if (numel != 0) parallel.elements(&ctx.pool, kernel, &a, numel);
    return 0;
}

/// The kernel table slot of an operation for the family of quantized type q.
fn familyKernel(k: *const types.KernelTable, comptime op: enum { quantize, dequantize, fake_quantize }, q: DType) types.Kernel {
    return if (q.isFloat8()) @field(k, "float8_" ++ @tagName(op)) else @field(k, @tagName(op));
}

fn quantizeWith(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, params: ParamArg, round_mode: types.RoundMode, seed: u64) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    const s = checkCall(ctx, in, out, numel, "dtype_in", dtype_in, "dtype_out", dtype_out, params, round_mode, null);
    if (s != 0) return s;
    return run(ctx.?, familyKernel(ctx.?.kernels, .quantize, dtype_out), .{
        .src = @ptrCast(in orelse @as(*const anyopaque, &no_elements)),
        .dst = @ptrCast(out orelse @as(*anyopaque, &no_output)),
        .float_type = dtype_in,
        .quant_type = dtype_out,
        .scale = 0,
        .zero_point = 0,
        .round_mode = round_mode,
        .reduce_op = .set,
        .seed = seed,
        .stream = 0,
    }, params, numel, dtype_out);
}

fn dequantizeWith(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, params: ParamArg, reduce_op: types.ReduceOp) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    const s = checkCall(ctx, in, out, numel, "dtype_out", dtype_out, "dtype_in", dtype_in, params, null, reduce_op);
    if (s != 0) return s;
    return run(ctx.?, familyKernel(ctx.?.kernels, .dequantize, dtype_in), .{
        .src = @ptrCast(in orelse @as(*const anyopaque, &no_elements)),
        .dst = @ptrCast(out orelse @as(*anyopaque, &no_output)),
        .float_type = dtype_out,
        .quant_type = dtype_in,
        .scale = 0,
        .zero_point = 0,
        .round_mode = .nearest,
        .reduce_op = reduce_op,
        .seed = 0,
        .stream = 0,
    }, params, numel, dtype_out);
}

fn fakeQuantizeWith(handle: ?*Handle, in: ?*const anyopaque, dtype: DType, out: ?*anyopaque, numel: usize, dtype_q: DType, params: ParamArg, round_mode: types.RoundMode, seed: u64, reduce_op: types.ReduceOp) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    const s = checkCall(ctx, in, out, numel, "dtype", dtype, "dtype_q", dtype_q, params, round_mode, reduce_op);
    if (s != 0) return s;
    return run(ctx.?, familyKernel(ctx.?.kernels, .fake_quantize, dtype_q), .{
        .src = @ptrCast(in orelse @as(*const anyopaque, &no_elements)),
        .dst = @ptrCast(out orelse @as(*anyopaque, &no_output)),
        .float_type = dtype,
        .quant_type = dtype_q,
        .scale = 0,
        .zero_point = 0,
        .round_mode = round_mode,
        .reduce_op = reduce_op,
        .seed = seed,
        .stream = 0,
    }, params, numel, dtype);
}

export fn piquant_quantize(ctx: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, scale: f64, zero_point: i64, round_mode: types.RoundMode, seed: u64) c_int {
    return quantizeWith(ctx, in, dtype_in, out, dtype_out, numel, .{ .tensor = .{ .scale = scale, .zero_point = zero_point } }, round_mode, seed);
}

export fn piquant_dequantize(ctx: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, scale: f64, zero_point: i64, reduce_op: types.ReduceOp) c_int {
    return dequantizeWith(ctx, in, dtype_in, out, dtype_out, numel, .{ .tensor = .{ .scale = scale, .zero_point = zero_point } }, reduce_op);
}

export fn piquant_fake_quantize(ctx: ?*Handle, in: ?*const anyopaque, dtype: DType, out: ?*anyopaque, numel: usize, dtype_q: DType, scale: f64, zero_point: i64, round_mode: types.RoundMode, seed: u64, reduce_op: types.ReduceOp) c_int {
    return fakeQuantizeWith(ctx, in, dtype, out, numel, dtype_q, .{ .tensor = .{ .scale = scale, .zero_point = zero_point } }, round_mode, seed, reduce_op);
}

export fn piquant_quantize_grouped(ctx: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, params: ?*const GroupParams, round_mode: types.RoundMode, seed: u64) c_int {
    return quantizeWith(ctx, in, dtype_in, out, dtype_out, numel, .{ .groups = params }, round_mode, seed);
}

export fn piquant_dequantize_grouped(ctx: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, dtype_out: DType, numel: usize, params: ?*const GroupParams, reduce_op: types.ReduceOp) c_int {
    return dequantizeWith(ctx, in, dtype_in, out, dtype_out, numel, .{ .groups = params }, reduce_op);
}

export fn piquant_fake_quantize_grouped(ctx: ?*Handle, in: ?*const anyopaque, dtype: DType, out: ?*anyopaque, numel: usize, dtype_q: DType, params: ?*const GroupParams, round_mode: types.RoundMode, seed: u64, reduce_op: types.ReduceOp) c_int {
    return fakeQuantizeWith(ctx, in, dtype, out, numel, dtype_q, .{ .groups = params }, round_mode, seed, reduce_op);
}

fn checkGguf(t: types.GgufType, numel: usize) c_int {
    if (t.blockBytes() == 0) return fail(.unsupported_dtype, "type: expected a GGUF block type (Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14, MXFP4 = 39), got {d}", .{@intFromEnum(t)});
    if (numel % t.blockElements() != 0) return fail(.invalid_argument, "numel: {d} is not a multiple of the block size {d}", .{ numel, t.blockElements() });
    return 0;
}

/// Bytes of one block of a GGUF type (0 if unknown).
export fn piquant_gguf_block_bytes(t: types.GgufType) usize {
    return t.blockBytes();
}

export fn piquant_gguf_quantize(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out: ?*anyopaque, gguf_type: types.GgufType, numel: usize) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    var s = checkBuffers(ctx, in, out, numel);
    if (s == 0 and !dtype_in.isFloat()) s = fail(.unsupported_dtype, "dtype_in: expected a float type (F32, BF16, F16, F64), got {d}", .{@intFromEnum(dtype_in)});
    if (s == 0) s = checkGguf(gguf_type, numel);
    if (s != 0 or numel == 0) return s;
    var a = ggufArgs(in.?, out.?, dtype_in, gguf_type);
    parallel.elements(&ctx.?.pool, ctx.?.kernels.gguf_quantize, &a, numel);
    return 0;
}

export fn piquant_gguf_dequantize(handle: ?*Handle, in: ?*const anyopaque, gguf_type: types.GgufType, out: ?*anyopaque, dtype_out: DType, numel: usize) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    var s = checkBuffers(ctx, in, out, numel);
    if (s == 0) s = checkGguf(gguf_type, numel);
    if (s == 0 and !dtype_out.isFloat()) s = fail(.unsupported_dtype, "dtype_out: expected a float type (F32, BF16, F16, F64), got {d}", .{@intFromEnum(dtype_out)});
    if (s != 0 or numel == 0) return s;
    var a = ggufArgs(in.?, out.?, dtype_out, gguf_type);
    a.stream = @intFromBool(dtype_out.bits() >= 32 and dtype_out.byteCount(numel) >= stream_min_bytes); // as run() decides for 32-bit outputs
    parallel.elements(&ctx.?.pool, ctx.?.kernels.gguf_dequantize, &a, numel);
    return 0;
}

fn ggufArgs(in: *const anyopaque, out: *anyopaque, float_type: DType, t: types.GgufType) types.Args {
    return .{
        .src = @ptrCast(in),
        .dst = @ptrCast(out),
        .float_type = float_type,
        .quant_type = .uint8,
        .scale = 1,
        .zero_point = 0,
        .round_mode = .nearest,
        .reduce_op = .set,
        .seed = 0,
        .stream = 0,
        .gguf = t,
    };
}

/// The checks MX calls share (formats/mx.zig): blocks of `block_size`
/// along rows of `row` elements, a known format, NVFP4's scale.
fn checkMx(numel: usize, row: usize, format: types.MxFormat, block_size: usize, per_tensor_scale: ?*const f32) c_int {
    if (!format.isKnown()) return fail(.unsupported_dtype, "format: expected an MX format (MXFP8_E4M3 = 0, MXFP8_E5M2 = 1, MXFP6_E2M3 = 2, MXFP6_E3M2 = 3, MXFP4 = 4, MXINT8 = 5, NVFP4 = 6), got {d}", .{@intFromEnum(format)});
    if (block_size == 0) return fail(.invalid_argument, "block_size: expected a positive integer, got 0", .{});
    if (format == .nvfp4 and block_size != 16) return fail(.invalid_argument, "block_size: NVFP4 blocks are 16 elements, got {d}", .{block_size});
    if (format.isFp4() and block_size % 2 != 0) return fail(.invalid_argument, "block_size: FP4 codes are packed two per byte; expected an even block size, got {d}", .{block_size});
    if (row % block_size != 0) return fail(.invalid_argument, "row: the last axis ({d}) is not a multiple of the block size {d}", .{ row, block_size });
    if (numel != 0 and (row == 0 or numel % row != 0)) return fail(.invalid_argument, "numel: {d} is not a whole number of rows of {d}", .{ numel, row });
    if (per_tensor_scale) |p| {
        if (format != .nvfp4) return fail(.invalid_argument, "per_tensor_scale: only NVFP4 has a per-tensor scale; pass NULL", .{});
        if (!(p.* > 0 and std.math.isFinite(p.*))) return fail(.invalid_value, "per_tensor_scale: expected a finite float32 > 0, got {e}", .{p.*});
    }
    return 0;
}

fn mxArgs(in: *const anyopaque, out: *anyopaque, scales: *anyopaque, float_type: DType, format: types.MxFormat, block_size: usize, per_tensor_scale: ?*const f32) types.Args {
    var a = ggufArgs(in, out, float_type, .q8_0);
    a.mx = format;
    a.block_size = block_size;
    a.mx_scales = @ptrCast(scales);
    a.per_tensor_scale = if (per_tensor_scale) |p| p.* else 0;
    return a;
}

export fn piquant_mx_quantize(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, out_data: ?*anyopaque, out_scales: ?*anyopaque, numel: usize, row: usize, format: types.MxFormat, block_size: usize, scale_mode: types.ScaleMode, round_mode: types.RoundMode, seed: u64, per_tensor_scale: ?*const f32) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    var s = checkBuffers(ctx, in, out_data, numel);
    if (s == 0 and numel != 0 and out_scales == null) s = fail(.invalid_argument, "out_scales: expected a buffer, got NULL", .{});
    if (s == 0 and !dtype_in.isFloat()) s = fail(.unsupported_dtype, "dtype_in: expected a float type (F32, BF16, F16, F64), got {d}", .{@intFromEnum(dtype_in)});
    if (s == 0) s = checkMx(numel, row, format, block_size, per_tensor_scale);
    if (s == 0 and scale_mode != .floor and scale_mode != .rceil) s = fail(.invalid_argument, "scale_mode: expected 0 (floor) or 1 (rceil), got {d}", .{@intFromEnum(scale_mode)});
    if (s == 0 and round_mode != .nearest and round_mode != .stochastic) s = fail(.invalid_argument, "round_mode: expected 0 (nearest) or 1 (stochastic), got {d}", .{@intFromEnum(round_mode)});
    if (s != 0 or numel == 0) return s;
    var a = mxArgs(in.?, out_data.?, out_scales.?, dtype_in, format, block_size, per_tensor_scale);
    a.scale_mode = scale_mode;
    a.round_mode = round_mode;
    a.seed = seed;
    parallel.blocks(&ctx.?.pool, ctx.?.kernels.mx_quantize, &a, numel / block_size, block_size);
    return 0;
}

export fn piquant_mx_dequantize(handle: ?*Handle, data: ?*const anyopaque, scales: ?*const anyopaque, out: ?*anyopaque, dtype_out: DType, numel: usize, row: usize, format: types.MxFormat, block_size: usize, per_tensor_scale: ?*const f32) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    var s = checkBuffers(ctx, data, out, numel);
    if (s == 0 and numel != 0 and scales == null) s = fail(.invalid_argument, "scales: expected a buffer, got NULL", .{});
    if (s == 0 and !dtype_out.isFloat()) s = fail(.unsupported_dtype, "dtype_out: expected a float type (F32, BF16, F16, F64), got {d}", .{@intFromEnum(dtype_out)});
    if (s == 0) s = checkMx(numel, row, format, block_size, per_tensor_scale);
    if (s != 0 or numel == 0) return s;
    // The kernel only reads the scales.
    var a = mxArgs(data.?, out.?, @constCast(scales.?), dtype_out, format, block_size, per_tensor_scale);
    parallel.blocks(&ctx.?.pool, ctx.?.kernels.mx_dequantize, &a, numel / block_size, block_size);
    return 0;
}

/// One call described by a struct, for bindings whose per-argument cost
/// dominates small calls (Python's ctypes: ~0.1 µs an argument).
pub const Call = extern struct {
    op: Op,
    float_type: DType,
    quant_type: DType,
    round_mode: types.RoundMode,
    reduce_op: types.ReduceOp,
    reserved: i32,
    in: ?*const anyopaque,
    out: ?*anyopaque,
    numel: usize,
    scale: f64,
    zero_point: i64,
    seed: u64,
    /// Per channel or group when params.count != 0 (scale and zero_point
    /// are then ignored), else per tensor.
    params: GroupParams,

    pub const Op = enum(c_int) { quantize = 0, dequantize = 1, fake_quantize = 2, _ };
};

export fn piquant_execute(ctx: ?*Handle, call: ?*const Call) c_int {
    const c = call orelse return fail(.invalid_argument, "call: expected a pointer, got NULL", .{});
    const p: ParamArg = if (c.params.count == 0) .{ .tensor = .{ .scale = c.scale, .zero_point = c.zero_point } } else .{ .groups = &c.params };
    return switch (c.op) {
        .quantize => quantizeWith(ctx, c.in, c.float_type, c.out, c.quant_type, c.numel, p, c.round_mode, c.seed),
        .dequantize => dequantizeWith(ctx, c.in, c.quant_type, c.out, c.float_type, c.numel, p, c.reduce_op),
        .fake_quantize => fakeQuantizeWith(ctx, c.in, c.float_type, c.out, c.numel, c.quant_type, p, c.round_mode, c.seed, c.reduce_op),
        _ => fail(.invalid_argument, "call.op: expected 0 (quantize), 1 (dequantize) or 2 (fake_quantize), got {d}", .{@intFromEnum(c.op)}),
    };
}

const no_elements: [1]u8 = .{0};
var no_output: [1]u8 = .{0};

/// Smallest and largest non-NaN values (+inf/-inf when there are none).
export fn piquant_minmax(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, numel: usize, out: ?*types.MinMax) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    if (checkBuffers(ctx, in, out, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (out == null) return fail(.invalid_argument, "out: expected a pointer, got NULL", .{});
    if (!dtype_in.isFloat()) return fail(.unsupported_dtype, "dtype_in: expected a float type (F32, BF16, F16, F64), got {d}", .{@intFromEnum(dtype_in)});
    out.?.* = parallel.minmax(&ctx.?.pool, ctx.?.kernels.minmax, @ptrCast(in orelse @as(*const anyopaque, &no_elements)), dtype_in, numel);
    return 0;
}

/// The memory roofline the benchmarks compare against: a copy of `nbytes`
/// (dst non-NULL, with non-temporal stores) or a read of them (dst NULL),
/// split over the context's pool the way the kernels are.
export fn piquant_stream(handle: ?*Handle, src: ?*const anyopaque, dst: ?*anyopaque, nbytes: usize) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    if (checkBuffers(ctx, src, if (dst) |d| d else @constCast(src), nbytes) != 0) return @intFromEnum(Status.invalid_argument);
    if (nbytes == 0) return 0;
    parallel.roofline(&ctx.?.pool, @ptrCast(src.?), if (dst) |d| @ptrCast(d) else null, nbytes);
    return 0;
}

export fn piquant_compute_params(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, numel: usize, dtype_q: DType, symmetric: c_int, out_scale: ?*f64, out_zero_point: ?*i64) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    if (checkBuffers(ctx, in, out_scale, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (out_scale == null or out_zero_point == null) return fail(.invalid_argument, "out_scale/out_zero_point: expected pointers, got NULL", .{});
    const s = checkTypes("dtype_in", dtype_in, "dtype_q", dtype_q);
    if (s != 0) return s;
    const mm = parallel.minmax(&ctx.?.pool, ctx.?.kernels.minmax, @ptrCast(in orelse @as(*const anyopaque, &no_elements)), dtype_in, numel);
    const p = params_mod.forInput(dtype_in, mm, dtype_q, symmetric != 0) catch |e| return switch (e) {
        error.Infinite => fail(.invalid_value, "x: contains an infinite value; parameters need a finite range", .{}),
        else => fail(.invalid_value, "x: its range (max - min) overflows float32", .{}),
    };
    out_scale.?.* = p.scale;
    out_zero_point.?.* = dtype_q.rawZeroPoint(p.zero_point);
    return 0;
}

/// compute_params for each of `count` sets (element i belongs to set
/// (i / inner) % count), into scales[count] and zero_points[count].
export fn piquant_compute_params_grouped(handle: ?*Handle, in: ?*const anyopaque, dtype_in: DType, numel: usize, dtype_q: DType, symmetric: c_int, count: usize, inner: usize, out_scales: ?*anyopaque, scale_type: DType, out_zero_points: ?[*]i64) c_int {
    const ctx: ?*Context = contexts.enter(handle) catch |e| return rejected(e);
    defer contexts.leave(handle);
    if (checkBuffers(ctx, in, out_scales, numel) != 0) return @intFromEnum(Status.invalid_argument);
    if (out_scales == null or out_zero_points == null) return fail(.invalid_argument, "out_scales/out_zero_points: expected arrays of count values, got NULL", .{});
    var s = checkTypes("dtype_in", dtype_in, "dtype_q", dtype_q);
    if (s == 0) s = checkLayout(numel, count, inner);
    if (s != 0) return s;
    // float32 scales hold a float32 computation's exactly; a float64 one's would round.
    if (scale_type != .f64 and !(scale_type == .f32 and dtype_in != .f64))
        return fail(.unsupported_dtype, "scale_type: expected F64, or F32 for a float32, float16 or bfloat16 input, got {d}", .{@intFromEnum(scale_type)});
    const src: [*]const u8 = @ptrCast(in orelse @as(*const anyopaque, &no_elements));
    const ranges = types.SetRanges{ .src = src, .src_type = dtype_in, .row_begin = 0, .row_end = 0, .count = count, .inner = inner, .mins = undefined, .maxs = undefined };
    const params = types.SetParams{ .float_type = dtype_in, .quant_type = dtype_q, .symmetric = symmetric != 0, .mins = undefined, .maxs = undefined, .scales = @ptrCast(out_scales.?), .scale_type = scale_type, .zero_points = out_zero_points.? };
    const k = parallel.setParams(&ctx.?.pool, ctx.?.kernels, ranges, params, numel) orelse return 0;
    // Set k has no parameters: its range again, for the reason.
    var mm: types.MinMax = undefined;
    var r = ranges;
    r.row_end = numel / (count * inner);
    r.mins = @ptrCast(&mm.min);
    r.maxs = @ptrCast(&mm.max);
    ctx.?.kernels.minmax_sets(&r, k, k + 1);
    const reason = if (params_mod.forInput(dtype_in, mm, dtype_q, symmetric != 0)) |_| error.Overflow else |e| e;
    return switch (reason) {
        error.Infinite => fail(.invalid_value, "x: set {d} contains an infinite value; parameters need a finite range", .{k}),
        else => fail(.invalid_value, "x: the range (max - min) of set {d} overflows float32", .{k}),
    };
}

test {
    _ = dispatch;
    _ = pool_mod;
    _ = parallel;
    _ = params_mod;
    _ = @import("isa.zig");
}
