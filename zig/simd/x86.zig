//! x86-64 instruction helpers (simd.zig): SSE4.1 and AVX-512 rounding,
//! rounding conversions and saturating packs to bytes, F16C conversions,
//! movntdq/vmovntdq stores. A level without an
//! instruction (baseline x86-64 has neither rounding nor F16C) gets the
//! portable helper.

const std = @import("std");
const builtin = @import("builtin");
const llvm = @import("llvm.zig");
const soft = @import("soft.zig");

const has_sse4_1 = builtin.cpu.has(.x86, .sse4_1);
const has_f16c = builtin.cpu.has(.x86, .f16c);
const has_avx = builtin.cpu.has(.x86, .avx);
const has_avx512bw = builtin.cpu.has(.x86, .avx512bw);

pub const register_bytes = if (builtin.cpu.has(.x86, .avx512f)) 64 else if (builtin.cpu.has(.x86, .avx2)) 32 else 16;

pub fn roundEven(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    if (!has_sse4_1) return soft.roundEven(n, C, y);
    return llvm.roundEven(register_bytes, n, C, y);
}

/// One instruction with SSE4.1; without it LLVM would call floorf per lane.
pub fn floor(comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    if (!has_sse4_1) return soft.floor(n, C, y);
    return @floor(y);
}

pub fn f16ToF32(comptime n: usize, h: @Vector(n, u16)) @Vector(n, f32) {
    if (!has_f16c) return soft.f16ToF32(n, h);
    return @floatCast(@as(@Vector(n, f16), @bitCast(h)));
}

pub fn f32ToF16(comptime n: usize, x: @Vector(n, f32)) @Vector(n, u16) {
    if (!has_f16c) return soft.f32ToF16(n, x);
    return @bitCast(@as(@Vector(n, f16), @floatCast(x)));
}

extern fn @"llvm.x86.sse2.cvtps2dq"(@Vector(4, f32)) @Vector(4, i32);
extern fn @"llvm.x86.avx.cvt.ps2dq.256"(@Vector(8, f32)) @Vector(8, i32);
extern fn @"llvm.x86.avx512.mask.cvtps2dq.512"(@Vector(16, f32), @Vector(16, i32), u16, i32) @Vector(16, i32);
extern fn @"llvm.x86.avx512.vfmadd.ps.512"(@Vector(16, f32), @Vector(16, f32), @Vector(16, f32), i32) @Vector(16, f32);
extern fn @"llvm.x86.sse2.packssdw.128"(@Vector(4, i32), @Vector(4, i32)) @Vector(8, i16);
extern fn @"llvm.x86.avx2.packssdw"(@Vector(8, i32), @Vector(8, i32)) @Vector(16, i16);
extern fn @"llvm.x86.sse2.packuswb.128"(@Vector(8, i16), @Vector(8, i16)) @Vector(16, u8);
extern fn @"llvm.x86.sse2.packsswb.128"(@Vector(8, i16), @Vector(8, i16)) @Vector(16, i8);

extern fn @"llvm.x86.avx2.permd"(@Vector(8, i32), @Vector(8, i32)) @Vector(8, i32);
extern fn @"llvm.x86.avx512.permvar.si.512"(@Vector(16, i32), @Vector(16, i32)) @Vector(16, i32);
extern fn @"llvm.x86.avx512.vpermi2var.d.512"(@Vector(16, i32), @Vector(16, i32), @Vector(16, i32)) @Vector(16, i32);

/// The largest table `lookup` takes: one vpermd (AVX2: 8 entries; AVX-512:
/// 16) or vpermt2d (AVX-512: 32) a register.
pub const lookup_entries = if (register_bytes == 64) 32 else if (register_bytes == 32) 8 else 0;

/// table[idx mod entries] lane by lane.
pub fn lookup(comptime n: usize, comptime entries: usize, table: [entries]u32, idx: @Vector(n, u32)) @Vector(n, u32) {
    const reg = register_bytes / 4;
    const arr: [n]u32 = idx;
    var parts: [n / reg]@Vector(reg, i32) = undefined;
    inline for (&parts, 0..) |*part, k| {
        const v: @Vector(reg, i32) = @bitCast(@as(@Vector(reg, u32), arr[k * reg ..][0..reg].*));
        part.* = switch (reg) {
            8 => @"llvm.x86.avx2.permd"(@bitCast(@as(@Vector(8, u32), table[0..8].*)), v),
            16 => if (entries == 16)
                @"llvm.x86.avx512.permvar.si.512"(@bitCast(@as(@Vector(16, u32), table[0..16].*)), v)
            else
                @"llvm.x86.avx512.vpermi2var.d.512"(@bitCast(@as(@Vector(16, u32), table[0..16].*)), v, @bitCast(@as(@Vector(16, u32), table[16..32].*))),
            else => @compileError("no table lookup of this width"),
        };
    }
    return @bitCast(parts);
}

/// Convert rounding half to even (`.nearest`) or down (`.floor`, AVX-512
/// only), one instruction per register (SSE2 is baseline): cvtps2dq rounds
/// as MXCSR says, the default nearest-even the multiply before it assumes
/// too; AVX-512 embeds the rounding ({rn-sae}, {rd-sae}). NaN and lanes
/// outside i32 give 0x80000000.
fn convertToI32(comptime n: usize, comptime rounding: enum { nearest, floor }, y: @Vector(n, f32)) @Vector(n, i32) {
    const reg = register_bytes / 4;
    comptime std.debug.assert(rounding == .nearest or reg == 16);
    const arr: [n]f32 = y;
    var parts: [n / reg]@Vector(reg, i32) = undefined;
    inline for (&parts, 0..) |*part, k| {
        const v: @Vector(reg, f32) = arr[k * reg ..][0..reg].*;
        part.* = switch (reg) {
            4 => @"llvm.x86.sse2.cvtps2dq"(v),
            8 => @"llvm.x86.avx.cvt.ps2dq.256"(v),
            16 => @"llvm.x86.avx512.mask.cvtps2dq.512"(v, @splat(0), 0xFFFF, if (rounding == .nearest) 8 else 9),
            else => @compileError("no register of this shape"),
        };
    }
    return @bitCast(parts);
}

/// Bytes of round_half_even(c) + zp with NaN lanes giving zp (simd.zig).
/// NaN converts to 0x80000000. AVX-512 truncates with vpmovdb, which makes
/// that lane zp's byte with no test (intBytes). Otherwise packssdw
/// saturates it to -32768, which no clamped lane reaches: NaN lanes are
/// found after the pack, one compare per 16 lanes instead of one per 8
/// before the conversion, and zp (in range for T, so it packs exactly) is
/// added to the 16-bit lanes.
pub fn roundBytes(comptime n: usize, comptime T: type, c: @Vector(n, f32), zp: @Vector(n, i32)) @Vector(n, T) {
    const d = convertToI32(n, .nearest, c);
    if (register_bytes == 64) return intBytes(n, T, d, zp);
    if (n != 2 * register_bytes / 4) {
        const nan = d == @as(@Vector(n, i32), @splat(std.math.minInt(i32)));
        return @intCast(@select(i32, nan, @as(@Vector(n, i32), @splat(0)), d) + zp);
    }
    const w = packWords(n, d);
    const nan = w == @as(@Vector(n, i16), @splat(std.math.minInt(i16)));
    return bytesOfWords(n, T, @select(i16, nan, @as(@Vector(n, i16), @splat(0)), w) + packWords(n, zp));
}

const has_fma = builtin.cpu.has(.x86, .fma);

/// The integer and float sides of stochastic rounding's comparison
/// (simd.zig): with AVX-512, h becomes the float 2^23 + h by its bits
/// (no conversion), against f·2^16 + 2^23 - 1/2 rounded up to an integer
/// by the FMA's embedded rounding, {ru-sae}: for an integer m and real v,
/// m < v exactly when m < ceil(v). Otherwise one FMA where there is one
/// (f·2^16 - 1/2 is exact where it is at least 0).
pub fn halvesBelow(comptime n: usize, h: @Vector(n, u16), f: @Vector(n, f32)) @Vector(n, bool) {
    const V = @Vector(n, f32);
    if (register_bytes == 64) {
        const magic: V = @bitCast(unpackWords(n, h, unseen(@Vector(n, u16), @splat(0x4B00))));
        const arr: [n]f32 = f;
        var parts: [n / 16]@Vector(16, f32) = undefined;
        inline for (&parts, 0..) |*part, k| part.* = @"llvm.x86.avx512.vfmadd.ps.512"(arr[k * 16 ..][0..16].*, @splat(0x1p16), @splat(0x1p23 - 0.5), 10); // 10: {ru-sae}
        return magic < @as(V, @bitCast(parts));
    }
    const t = if (has_fma) @mulAdd(V, f, @splat(0x1p16), @splat(-0.5)) else f * @as(V, @splat(0x1p16)) - @as(V, @splat(0.5));
    return @as(V, @floatFromInt(@as(@Vector(n, u32), @bitCast(unpackWords(n, h, @splat(0)))))) < t;
}

/// The hash order halvesBelow's unpacking needs: punpcklwd/punpckhwd
/// interleave words within each 16-byte lane, so the low unpack of h
/// widens lane L's first two hashes (elements 4L .. 4L+3) and the high
/// unpack its last two (elements n/2 + 4L ..): the first half of the
/// hashes goes to the first two slots of each lane, the second half to
/// the last two.
pub fn halvesOrder(comptime hashes: usize) @Vector(hashes, u32) {
    var order: [hashes]u32 = undefined;
    for (&order, 0..) |*o, d| {
        const lane = d / 4;
        const slot = d % 4;
        o.* = @intCast(if (slot < 2) 2 * lane + slot else hashes / 2 + 2 * lane + slot - 2);
    }
    return order;
}

/// Words of `h` interleaved with those of `w` (h's low word first), each
/// 16-byte lane's first four words of each and then its last four
/// (punpcklwd, punpckhwd): as u32 lanes, the halves of h's hashes (in
/// halvesOrder) in element order, with w's word above each.
fn unpackWords(comptime n: usize, h: @Vector(n, u16), w: @Vector(n, u16)) @Vector(2 * n, u16) {
    const mask = comptime blk: {
        var m: [2 * n]i32 = undefined;
        for (0..2) |half| {
            for (0..n / 8) |lane| {
                for (0..4) |k| {
                    const at = half * n + lane * 8 + 2 * k;
                    m[at] = @intCast(lane * 8 + half * 4 + k);
                    m[at + 1] = ~@as(i32, @intCast(lane * 8 + half * 4 + k));
                }
            }
        }
        break :blk m;
    };
    return @shuffle(u16, h, w, mask);
}

/// AVX-512 converts with an embedded rounding mode: floor in one instruction.
pub const floor_converts = register_bytes == 64;

pub fn floorToI32(comptime n: usize, y: @Vector(n, f32)) @Vector(n, i32) {
    return convertToI32(n, .floor, y);
}

/// Bytes of d + zp, minInt(i32) lanes giving zp (simd.zig), with AVX-512's
/// vpmovdb. minInt(i32) is 0 modulo 256, so the wrapping sum of such a lane
/// truncates to zp's byte: no compare and select. The sum is kept whole in
/// i32 lanes: LLVM would narrow each of its addends (a zero point plus a
/// select) by a vpmovdb of its own.
pub fn intBytes(comptime n: usize, comptime T: type, d: @Vector(n, i32), zp: @Vector(n, i32)) @Vector(n, T) {
    comptime std.debug.assert(register_bytes == 64);
    const W = @Vector(n, std.meta.Int(@typeInfo(T).int.signedness, 32));
    return @truncate(@as(W, @bitCast(unseenZmms(n, d +% zp))));
}

/// The high 16 bits of each lane (simd.zig). With AVX-512BW a 32-lane
/// result is one register, and LLVM would narrow each half with vpmovdw
/// and join them with an insert: one vpermt2w takes the odd words of both.
pub fn highHalves(comptime n: usize, v: @Vector(n, u32)) @Vector(n, u16) {
    if (!(has_avx512bw and n == 32)) return @truncate(v >> @splat(16));
    const words: @Vector(2 * n, u16) = @bitCast(v);
    const odd = comptime blk: {
        var m: [n]i32 = undefined;
        for (&m, 0..) |*e, k| e.* = @intCast(2 * k + 1);
        break :blk m;
    };
    return @shuffle(u16, words, undefined, odd);
}

/// v + 1 in the lanes where `up` (simd.zig): a blend of v and v + 1, the
/// one computed where LLVM cannot see it, as LLVM would otherwise widen the
/// mask into a vector (vpmovm2d) and subtract it.
pub fn incrementWhere(comptime n: usize, v: @Vector(n, i32), up: @Vector(n, bool)) @Vector(n, i32) {
    if (register_bytes != 64) return v + @select(i32, up, @as(@Vector(n, i32), @splat(1)), @as(@Vector(n, i32), @splat(0)));
    return @select(i32, up, unseenZmms(n, v +% @as(@Vector(n, i32), @splat(1))), v);
}

/// v one 512-bit register at a time through `unseen`.
fn unseenZmms(comptime n: usize, v: @Vector(n, i32)) @Vector(n, i32) {
    const arr: [n]i32 = v;
    var parts: [n / 16]@Vector(16, i32) = undefined;
    inline for (&parts, 0..) |*part, k| part.* = unseen(@Vector(16, i32), arr[k * 16 ..][0..16].*);
    return @bitCast(parts);
}

pub fn opaque16(v: @Vector(16, u8)) @Vector(16, u8) {
    return unseen(@Vector(16, u8), v);
}

/// v in a register LLVM cannot look through, so that it neither splits nor
/// merges the operations on either side.
fn unseen(comptime V: type, v: V) V {
    return asm (""
        : [ret] "=v" (-> V),
        : [x] "0" (v),
    );
}

/// Saturating packs (i32 → i16 → byte), exact for lanes that fit T: LLVM
/// lowers a truncation to the same packs after masking every lane first.
/// AVX-512 has a one-instruction truncation (vpmovdb), which LLVM uses.
pub fn narrowBytes(comptime n: usize, comptime T: type, v: @Vector(n, i32)) @Vector(n, T) {
    if (register_bytes == 64 or n != 2 * register_bytes / 4) return @intCast(v);
    return bytesOfWords(n, T, packWords(n, v));
}

/// The two registers of a block packed with signed saturation into one;
/// AVX2 packs per 128-bit lane: [a0..3 b0..3 | a4..7 b4..7], a and b the
/// halves of v.
fn packWords(comptime n: usize, v: @Vector(n, i32)) @Vector(n, i16) {
    const a: [n]i32 = v;
    const h = n / 2;
    return switch (register_bytes) {
        16 => @"llvm.x86.sse2.packssdw.128"(a[0..h].*, a[h..n].*),
        32 => @"llvm.x86.avx2.packssdw"(a[0..h].*, a[h..n].*),
        else => @compileError("no pack of this width"),
    };
}

/// packWords' lanes narrowed to bytes in element order.
fn bytesOfWords(comptime n: usize, comptime T: type, w: @Vector(n, i16)) @Vector(n, T) {
    const bytes = switch (register_bytes) {
        16 => packBytes(T, w, w),
        32 => blk: {
            const lanes: [2][8]i16 = @bitCast(w);
            const b: @Vector(4, u32) = @bitCast(packBytes(T, lanes[0], lanes[1])); // a0..3 b0..3 a4..7 b4..7
            break :blk @as(@Vector(16, T), @bitCast(@shuffle(u32, b, undefined, @Vector(4, i32){ 0, 2, 1, 3 })));
        },
        else => @compileError("no pack of this width"),
    };
    return @as([16]T, bytes)[0..n].*;
}

fn packBytes(comptime T: type, lo: @Vector(8, i16), hi: @Vector(8, i16)) @Vector(16, T) {
    return @bitCast(if (T == u8) @"llvm.x86.sse2.packuswb.128"(lo, hi) else @"llvm.x86.sse2.packsswb.128"(lo, hi));
}

/// movntdq, in its VEX form under AVX (mixing legacy SSE and AVX
/// encodings costs a state transition).
pub fn storeNonTemporal(dst: usize, v: @Vector(16, u8)) void {
    if (has_avx) asm volatile ("vmovntdq %[v], (%[p])"
        :
        : [v] "x" (v),
          [p] "r" (dst),
        : .{ .memory = true }) else asm volatile ("movntdq %[v], (%[p])"
        :
        : [v] "x" (v),
          [p] "r" (dst),
        : .{ .memory = true });
}

pub fn fenceNonTemporal() void {
    asm volatile ("sfence" ::: .{ .memory = true });
}
