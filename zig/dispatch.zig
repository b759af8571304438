//! Picks the kernel table for this CPU. Each ISA variant is a separate
//! object exporting `piquant_kernels_<isa>`; a variant is usable only when the
//! CPU has its instructions and the OS saves the register state they use.

const std = @import("std");
const builtin = @import("builtin");
const types = @import("types.zig");

const Isa = types.Isa;
const KernelTable = types.KernelTable;

/// The variants built for this architecture, best last.
pub const variants: []const Isa = switch (builtin.cpu.arch) {
    .x86_64 => &.{ .generic, .sse42, .avx2, .avx512f },
    .aarch64 => &.{ .generic, .neon },
    else => &.{.generic},
};

extern const piquant_kernels_generic: KernelTable;
extern const piquant_kernels_sse42: KernelTable;
extern const piquant_kernels_avx2: KernelTable;
extern const piquant_kernels_avx512f: KernelTable;
extern const piquant_kernels_neon: KernelTable;

pub fn table(isa: Isa) *const KernelTable {
    return switch (builtin.cpu.arch) {
        .x86_64 => switch (isa) {
            .sse42 => &piquant_kernels_sse42,
            .avx2 => &piquant_kernels_avx2,
            .avx512f => &piquant_kernels_avx512f,
            else => &piquant_kernels_generic,
        },
        .aarch64 => if (isa == .neon) &piquant_kernels_neon else &piquant_kernels_generic,
        else => &piquant_kernels_generic,
    };
}

pub fn isBuilt(isa: Isa) bool {
    return std.mem.indexOfScalar(Isa, variants, isa) != null;
}

pub fn supported(isa: Isa) bool {
    if (!isBuilt(isa)) return false;
    return switch (builtin.cpu.arch) {
        .x86_64 => x86Supports(isa),
        // Neon is part of the AArch64 baseline.
        else => true,
    };
}

/// The best variant this CPU runs.
pub fn best() Isa {
    var i = variants.len;
    while (i > 0) {
        i -= 1;
        if (supported(variants[i])) return variants[i];
    }
    return .generic;
}

const Regs = struct { eax: u32, ebx: u32, ecx: u32, edx: u32 };

fn cpuid(leaf: u32, sub: u32) Regs {
    var eax: u32 = undefined;
    var ebx: u32 = undefined;
    var ecx: u32 = undefined;
    var edx: u32 = undefined;
    asm volatile ("cpuid"
        : [_] "={eax}" (eax),
          [_] "={ebx}" (ebx),
          [_] "={ecx}" (ecx),
          [_] "={edx}" (edx),
        : [_] "{eax}" (leaf),
          [_] "{ecx}" (sub),
    );
    return .{ .eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx };
}

fn xcr0() u32 {
    return asm volatile (
        \\ xor %%ecx, %%ecx
        \\ xgetbv
        : [_] "={eax}" (-> u32),
        :
        : .{ .edx = true, .ecx = true });
}

fn bit(v: u32, n: u5) bool {
    return (v >> n) & 1 == 1;
}

fn x86Supports(isa: Isa) bool {
    if (builtin.cpu.arch != .x86_64) return false;
    if (isa == .generic) return true;
    const max_leaf = cpuid(0, 0).eax;
    const l1 = cpuid(1, 0);
    // x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B, LAHF/SAHF.
    const v2 = bit(l1.ecx, 0) and bit(l1.ecx, 9) and bit(l1.ecx, 19) and bit(l1.ecx, 20) and
        bit(l1.ecx, 23) and bit(l1.ecx, 13) and bit(cpuid(0x8000_0001, 0).ecx, 0);
    if (isa == .sse42) return v2;
    if (!v2 or max_leaf < 7 or !bit(l1.ecx, 27)) return false; // OSXSAVE
    const xcr = xcr0();
    const l7 = cpuid(7, 0);
    // x86-64-v3: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, and XMM|YMM state enabled.
    const v3 = bit(l1.ecx, 28) and bit(l7.ebx, 5) and bit(l7.ebx, 3) and bit(l7.ebx, 8) and
        bit(l1.ecx, 29) and bit(l1.ecx, 12) and bit(cpuid(0x8000_0001, 0).ecx, 5) and
        bit(l1.ecx, 22) and (xcr & 0x6) == 0x6;
    if (isa == .avx2) return v3;
    // AVX-512F on top of v3, with opmask, ZMM_Hi256 and Hi16_ZMM state enabled.
    return v3 and bit(l7.ebx, 16) and (xcr & 0xE6) == 0xE6;
}

test "the best variant is supported and generic always is" {
    try std.testing.expect(supported(.generic));
    try std.testing.expect(supported(best()));
}
