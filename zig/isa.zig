//! The ISA variants, best first: the one list that names them (simdjson's
//! `implementation.cpp` keeps one such list). build.zig compiles one kernel
//! object per variant of the target's architecture, dispatch.zig runs the
//! first this CPU supports, the C ABI numbers them by `Isa`. Plain data, so
//! that build.zig can import it for the build host.

const std = @import("std");

/// Values are the C ABI's ISA numbers.
pub const Isa = enum(c_int) {
    generic = 0,
    sse42 = 1,
    avx2 = 2,
    avx512f = 3,
    neon = 4,
};

pub const Variant = struct {
    isa: Isa,
    arch: std.Target.Cpu.Arch,
    /// The CPU model the variant's kernel object is compiled for, and the
    /// x86 features added to it.
    model: *const std.Target.Cpu.Model,
    add: []const std.Target.x86.Feature = &.{},
    /// The feature that stands for what the variant needs at run time
    /// (dispatch.zig checks its whole level with cpuid and xgetbv; build.zig
    /// runs the variant's unit tests only on a host with it). None: every
    /// CPU of the architecture runs the variant.
    requires: ?std.Target.x86.Feature = null,
};

const x86 = std.Target.x86.cpu;

/// Best first, grouped by architecture.
pub const ranked = [_]Variant{
    // AVX-512 F, BW, DQ and VL on top of v3: every AVX-512 CPU but the Xeon
    // Phis, which run avx2. The model stays v3: x86_64_v4's tuning prefers
    // 256-bit registers.
    .{ .isa = .avx512f, .arch = .x86_64, .model = &x86.x86_64_v3, .add = &.{ .avx512f, .avx512bw, .avx512dq, .avx512vl, .evex512 }, .requires = .avx512f },
    .{ .isa = .avx2, .arch = .x86_64, .model = &x86.x86_64_v3, .requires = .avx2 },
    .{ .isa = .sse42, .arch = .x86_64, .model = &x86.x86_64_v2, .requires = .sse4_2 },
    .{ .isa = .generic, .arch = .x86_64, .model = &x86.x86_64 },
    // Neon is part of the AArch64 baseline. The generic variant is compiled
    // for the same CPU model and stands for the portable code (simd.zig).
    .{ .isa = .neon, .arch = .aarch64, .model = &std.Target.aarch64.cpu.generic },
    .{ .isa = .generic, .arch = .aarch64, .model = &std.Target.aarch64.cpu.generic },
};

/// The variants built for `arch`, best first; empty for an architecture
/// not listed, which gets `generic` alone on its generic CPU model.
pub fn forArch(arch: std.Target.Cpu.Arch) []const Variant {
    var first: usize = 0;
    while (first < ranked.len and ranked[first].arch != arch) first += 1;
    var last = first;
    while (last < ranked.len and ranked[last].arch == arch) last += 1;
    return ranked[first..last];
}

/// "generic, sse42, …": the names an ISA may be given by.
pub const names = blk: {
    var s: []const u8 = "";
    for (std.meta.fieldNames(Isa), 0..) |name, k| s = s ++ (if (k == 0) "" else ", ") ++ name;
    break :blk s;
};

test "every ISA is ranked once per architecture, generic last" {
    for ([_]std.Target.Cpu.Arch{ .x86_64, .aarch64 }) |arch| {
        const list = forArch(arch);
        try std.testing.expect(list.len >= 2);
        try std.testing.expectEqual(Isa.generic, list[list.len - 1].isa);
    }
    try std.testing.expectEqual(@as(usize, 0), forArch(.riscv64).len);
    try std.testing.expectEqualStrings("generic, sse42, avx2, avx512f, neon", names);
}
