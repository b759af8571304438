//! The vector shape of the ISA variant this kernel object is compiled for,
//! and its instruction helpers behind one interface. The helpers come from
//! simd/x86.zig, simd/neon.zig or simd/soft.zig, picked at comptime from the
//! target the way std.crypto.aes picks aesni/armcrypto/soft; kernels call
//! them and never test the ISA themselves.

const std = @import("std");
const builtin = @import("builtin");
const options = @import("build_options");
const Isa = @import("isa.zig").Isa;

/// This object's variant (build.zig's `isa` option).
pub const isa: Isa = std.meta.stringToEnum(Isa, options.isa) orelse @compileError("unknown isa " ++ options.isa);

/// LLVM intrinsics and inline assembly need the LLVM backend (Debug
/// builds use another).
const llvm = builtin.zig_backend == .stage2_llvm;

const impl = switch (builtin.cpu.arch) {
    .x86_64 => if (llvm) @import("simd/x86.zig") else @import("simd/soft.zig"),
    // aarch64's generic variant has the same CPU model as neon (Neon is
    // baseline there) and stands for the portable code: told apart by name.
    .aarch64 => if (llvm and isa != .generic) @import("simd/neon.zig") else @import("simd/soft.zig"),
    else => @import("simd/soft.zig"),
};

/// f32 lanes of one native register; a block, the unit of every kernel
/// loop, is two registers.
pub const lanes = impl.register_bytes / 4;
pub const block = 2 * lanes;

pub fn Vec(comptime T: type) type {
    return @Vector(block, T);
}

/// Round half to even, independent of the floating-point environment.
pub fn roundEven(comptime C: type, y: Vec(C)) Vec(C) {
    return impl.roundEven(block, C, y);
}

/// floor(y), exactly.
pub fn floor(comptime C: type, y: Vec(C)) Vec(C) {
    return impl.floor(block, C, y);
}

/// float16 bits to float32, exactly.
pub fn f16ToF32(h: Vec(u16)) Vec(f32) {
    return impl.f16ToF32(block, h);
}

/// float32 to float16 bits: round to nearest, ties to even, overflow to
/// ±inf; NaN becomes a quiet NaN with the top payload bits.
pub fn f32ToF16(x: Vec(f32)) Vec(u16) {
    return impl.f32ToF16(block, x);
}

/// Lanes whose values all fit the byte type T (u8 or i8), narrowed.
pub fn narrowBytes(comptime T: type, v: Vec(i32)) Vec(T) {
    if (@hasDecl(impl, "narrowBytes")) return impl.narrowBytes(block, T, v);
    return @intCast(v);
}

/// Bytes of type T (u8 or i8) of round_half_even(c) + zp, NaN lanes giving
/// zp, for c clamped so that every result fits T (NaN passes the clamp):
/// one rounding conversion where the ISA has it, the NaN test and the
/// addition after narrowing where that is cheaper.
pub fn roundBytes(comptime T: type, c: Vec(f32), zp: Vec(i32)) Vec(T) {
    if (@hasDecl(impl, "roundBytes")) return impl.roundBytes(block, T, c, zp);
    const z = @select(f32, c != c, @as(Vec(f32), @splat(0)), c);
    const r: Vec(i32) = @intFromFloat(roundEven(f32, z));
    return narrowBytes(T, r + zp);
}

/// The largest table of u32 `lookup` reads with one permute a register
/// (0: none; callers compute instead).
pub const lookup_entries: usize = if (@hasDecl(impl, "lookup_entries")) impl.lookup_entries else 0;

/// table[idx mod entries] lane by lane; entries 8, 16 or 32, at most
/// lookup_entries.
pub fn lookup(comptime entries: usize, table: [entries]u32, idx: Vec(u32)) Vec(u32) {
    comptime std.debug.assert(entries <= lookup_entries and (entries == lookup_entries or entries == 16));
    return impl.lookup(block, entries, table, idx);
}

/// Which hash each u32 lane of halvesBelow's `h` holds (hash m serves
/// elements 2m and 2m + 1): the order its widening puts back in element
/// order (in order where it widens lane by lane).
pub const halves_order: @Vector(block / 2, u32) = if (@hasDecl(impl, "halvesOrder")) impl.halvesOrder(block / 2) else std.simd.iota(u32, block / 2);

/// Stochastic rounding's comparison in float32 (rounding.zig): whether
/// (h + 1/2)·2^-16 < f, exactly, for f in [0, 1); false for NaN f.
pub fn halvesBelow(h: Vec(u16), f: Vec(f32)) @Vector(block, bool) {
    if (@hasDecl(impl, "halvesBelow")) return impl.halvesBelow(block, h, f);
    // f·2^16 is exact, and so is subtracting 1/2 where the difference is at
    // least 0; below 1/2 it is negative, as the comparison needs.
    return @as(Vec(f32), @floatFromInt(h)) < f * @as(Vec(f32), @splat(0x1p16)) - @as(Vec(f32), @splat(0.5));
}

/// Whether the ISA converts float32 to i32 rounding down in one instruction
/// (`floorToI32`): then a floor that is converted anyway costs a conversion
/// back to float instead of a rounding instruction and a conversion.
pub const floor_converts = @hasDecl(impl, "floor_converts") and impl.floor_converts;

/// floor(y) as i32, for y NaN (giving minInt(i32)) or within i32's range.
pub fn floorToI32(y: Vec(f32)) Vec(i32) {
    return impl.floorToI32(block, y);
}

/// The high 16 bits of each lane (n: a block, or 1 for scalar code).
pub fn highHalves(comptime n: usize, v: @Vector(n, u32)) @Vector(n, u16) {
    if (@hasDecl(impl, "highHalves")) return impl.highHalves(n, v);
    return @truncate(v >> @splat(16));
}

/// v + 1 in the lanes where `up`, v elsewhere.
pub fn incrementWhere(v: Vec(i32), up: @Vector(block, bool)) Vec(i32) {
    if (@hasDecl(impl, "incrementWhere")) return impl.incrementWhere(block, v, up);
    return v + @select(i32, up, @as(Vec(i32), @splat(1)), @as(Vec(i32), @splat(0)));
}

/// Bytes of type T (u8 or i8) of d + zp for lanes where that fits T;
/// lanes where d is minInt(i32) (NaN's conversion) give zp.
pub fn intBytes(comptime T: type, d: Vec(i32), zp: Vec(i32)) Vec(T) {
    return impl.intBytes(block, T, d, zp);
}

/// `v` through a register the compiler cannot look into, so that copies
/// made of such pieces keep their width instead of being merged into wider
/// loads (stream.zig).
pub fn opaque16(v: @Vector(16, u8)) @Vector(16, u8) {
    if (@hasDecl(impl, "opaque16")) return impl.opaque16(v);
    return v;
}

/// Non-temporal stores depend on the architecture alone (movntdq is
/// baseline x86-64), so the C ABI's roofline copy uses them too.
const nontemporal = if (llvm and builtin.cpu.arch == .x86_64) @import("simd/x86.zig") else @import("simd/soft.zig");

/// Stores 16 bytes at `dst` bypassing the cache where the target can.
pub const storeNonTemporal = nontemporal.storeNonTemporal;

/// Non-temporal stores are weakly ordered: fence them before another
/// thread may read what they wrote.
pub const fenceNonTemporal = nontemporal.fenceNonTemporal;
