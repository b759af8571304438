//! The root of a kernel object. build.zig compiles this tree once per ISA
//! variant (isa.zig), setting the CPU model and the `isa` option; each
//! object exports its table as `piquant_kernels_<isa>`, which dispatch.zig
//! selects at run time. The table is the slots every format family and
//! shared kernel exports (their `entries`), merged.

const std = @import("std");
const builtin = @import("builtin");
const types = @import("types.zig");
const simd = @import("simd.zig");
const isa_list = @import("isa.zig");

/// Whatever fills slots of the kernel table: one `entries` each.
const providers = .{
    @import("formats/affine.zig"),
    @import("formats/gguf.zig"),
    @import("formats/float8.zig"),
    @import("formats/mx.zig"),
    @import("minmax.zig"),
    @import("set_params.zig"),
};

comptime {
    for (isa_list.forArch(builtin.cpu.arch)) |v| {
        if (v.isa == simd.isa) if (v.requires) |f| if (!builtin.cpu.has(.x86, f))
            @compileError(@tagName(v.isa) ++ " variant built without " ++ @tagName(f));
    }
}

/// Each slot of the table from the one provider that has it.
const table = blk: {
    var t: types.KernelTable = undefined;
    for (std.meta.fieldNames(types.KernelTable)) |slot| {
        var found = false;
        for (providers) |p| {
            if (@hasField(@TypeOf(p.entries), slot)) {
                if (found) @compileError("two providers of kernel table slot " ++ slot);
                @field(t, slot) = @field(p.entries, slot);
                found = true;
            }
        }
        if (!found) @compileError("no provider of kernel table slot " ++ slot);
    }
    break :blk t;
};

comptime {
    @export(&table, .{ .name = "piquant_kernels_" ++ @tagName(simd.isa) });
}

test {
    _ = @import("entry.zig");
    _ = @import("floats.zig");
    _ = @import("rounding.zig");
    _ = @import("minifloat.zig");
    _ = @import("sets.zig");
    _ = @import("packing.zig");
    _ = @import("stream.zig");
    _ = @import("simd/soft.zig");
    inline for (providers) |p| _ = p;
}
