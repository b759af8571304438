//! Kernel entry points: the one dispatcher from a call's run-time choices
//! (float type, quantized type, round mode, store mode, block format) to
//! the code generated for them as one comptime `Case`.

const std = @import("std");
const types = @import("types.zig");

/// One comptime combination of the choices a kernel is generated for; a
/// field the kernel does not choose keeps its default. Field names are
/// those of `types.Args`.
pub const Case = struct {
    float_type: types.DType = .f32,
    quant_type: types.DType = .uint8,
    round_mode: types.RoundMode = .nearest,
    reduce_op: types.ReduceOp = .set,
    gguf: types.GgufType = .q8_0,
};

/// `body(case, args...)` for the `Case` whose fields named in `axes` equal
/// those of `values` (an `Args`, or any struct with such fields): `axes`
/// maps each chosen field to the values it may take, e.g.
/// `.{ .float_type = DType.floats }`. Null when a value is outside its axis
/// (the C ABI has checked them). One comparison per value of each axis.
pub fn call(comptime R: type, comptime axes: anytype, values: anytype, comptime body: anytype, args: anytype) ?R {
    return choose(R, axes, .{}, 0, values, body, args);
}

fn choose(comptime R: type, comptime axes: anytype, comptime case: Case, comptime k: usize, values: anytype, comptime body: anytype, args: anytype) ?R {
    const names = comptime std.meta.fieldNames(@TypeOf(axes));
    if (k == names.len) return @call(.auto, body, .{case} ++ args);
    inline for (@field(axes, names[k])) |v| {
        if (@field(values, names[k]) == v) return choose(R, axes, comptime with(case, names[k], v), k + 1, values, body, args);
    }
    return null;
}

fn with(comptime case: Case, comptime name: []const u8, comptime value: anytype) Case {
    var c = case;
    @field(c, name) = value;
    return c;
}

/// The kernel table entry that runs `range(case, args, begin, end)` for the
/// call's case (see `call`).
pub fn kernel(comptime axes: anytype, comptime range: anytype) types.Kernel {
    return &struct {
        fn run(a: *const types.Args, begin: usize, end: usize) callconv(.c) void {
            _ = call(void, axes, a, range, .{ a, begin, end });
        }
    }.run;
}

test "the case matching the call runs" {
    const Seen = struct {
        var case: ?Case = null;
        fn range(comptime c: Case, a: *const types.Args, begin: usize, end: usize) void {
            _ = .{ a, begin, end };
            case = c;
        }
    };
    const k = kernel(.{ .float_type = types.DType.floats, .round_mode = .{ .nearest, .stochastic } }, Seen.range);
    var a = types.Args{ .src = undefined, .dst = undefined, .float_type = .f16, .quant_type = .int4, .scale = 1, .zero_point = 0, .round_mode = .stochastic, .reduce_op = .add, .seed = 0, .stream = 0 };
    k(&a, 0, 0);
    try std.testing.expectEqual(Case{ .float_type = .f16, .round_mode = .stochastic }, Seen.case.?);
    a.round_mode = @enumFromInt(7);
    Seen.case = null;
    k(&a, 0, 0);
    try std.testing.expectEqual(@as(?Case, null), Seen.case);
}
