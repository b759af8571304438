//! Picks the kernel table for this CPU. Each ISA variant is a separate
//! object exporting `piquant_kernels_<isa>`; a variant is usable only when the
//! CPU has its instructions and the OS saves the register state they use.

const std = @import("std");
const builtin = @import("builtin");
const isa_list = @import("isa.zig");
const types = @import("types.zig");

const Isa = isa_list.Isa;
const KernelTable = types.KernelTable;

/// The variants built for this architecture, best first (isa.zig).
pub const variants: []const isa_list.Variant = if (isa_list.forArch(builtin.cpu.arch).len != 0)
    isa_list.forArch(builtin.cpu.arch)
else
    &.{.{ .isa = .generic, .arch = builtin.cpu.arch, .model = std.Target.Cpu.Model.generic(builtin.cpu.arch) }};

pub fn table(isa: Isa) *const KernelTable {
    inline for (variants) |v| {
        if (v.isa == isa) return @extern(*const KernelTable, .{ .name = "piquant_kernels_" ++ @tagName(v.isa) });
    }
    return table(.generic);
}

pub fn isBuilt(isa: Isa) bool {
    for (variants) |v| {
        if (v.isa == isa) return true;
    }
    return false;
}

pub fn supported(isa: Isa) bool {
    for (variants) |v| {
        if (v.isa == isa) return runs(v);
    }
    return false;
}

/// The best variant this CPU runs.
pub fn best() Isa {
    for (variants) |v| {
        if (runs(v)) return v.isa;
    }
    return .generic;
}

fn runs(v: isa_list.Variant) bool {
    const feature = v.requires orelse return true;
    return builtin.cpu.arch == .x86_64 and x86Has(feature);
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

/// Whether the CPU has the x86-64 level `feature` stands for (isa.zig).
fn x86Has(feature: std.Target.x86.Feature) bool {
    const max_leaf = cpuid(0, 0).eax;
    const l1 = cpuid(1, 0);
    // x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B, LAHF/SAHF.
    const v2 = bit(l1.ecx, 0) and bit(l1.ecx, 9) and bit(l1.ecx, 19) and bit(l1.ecx, 20) and
        bit(l1.ecx, 23) and bit(l1.ecx, 13) and bit(cpuid(0x8000_0001, 0).ecx, 0);
    if (feature == .sse4_2) return v2;
    if (!v2 or max_leaf < 7 or !bit(l1.ecx, 27)) return false; // OSXSAVE
    const xcr = xcr0();
    const l7 = cpuid(7, 0);
    // x86-64-v3: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, and XMM|YMM state enabled.
    const v3 = bit(l1.ecx, 28) and bit(l7.ebx, 5) and bit(l7.ebx, 3) and bit(l7.ebx, 8) and
        bit(l1.ecx, 29) and bit(l1.ecx, 12) and bit(cpuid(0x8000_0001, 0).ecx, 5) and
        bit(l1.ecx, 22) and (xcr & 0x6) == 0x6;
    if (feature == .avx2) return v3;
    // AVX-512 F, DQ, BW and VL on top of v3, with opmask, ZMM_Hi256 and
    // Hi16_ZMM state enabled.
    std.debug.assert(feature == .avx512f);
    return v3 and bit(l7.ebx, 16) and bit(l7.ebx, 17) and bit(l7.ebx, 30) and bit(l7.ebx, 31) and (xcr & 0xE6) == 0xE6;
}

test "the best variant is supported and generic always is" {
    try std.testing.expect(supported(.generic));
    try std.testing.expect(supported(best()));
    try std.testing.expect(isBuilt(.generic));
}
