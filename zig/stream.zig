//! The memory side of every kernel loop: input prefetched ahead of the
//! loads, large outputs written whole cache lines at a time with stores
//! that bypass the cache, and the range loop the element-wise operations
//! share (stream, blocks, padded tail).

const std = @import("std");
const builtin = @import("builtin");
const simd = @import("simd.zig");
const DType = @import("types.zig").DType;

const block = simd.block;
const line = 64;

/// How far ahead of its loads a loop prefetches its input, in bytes.
/// Measured at 27M elements: prefetching into L1 (locality 3) 2 KiB ahead
/// cut quantize from 6.6 to 4.6 ms; non-temporal prefetch (locality 0)
/// doubled it. The hardware prefetchers of the virtual machine alone do
/// not keep one core's loads streaming while it computes.
const prefetch_bytes = 2048;

pub fn prefetchAhead(src: [*]const u8, byte_offset: usize) void {
    @prefetch(src + byte_offset + prefetch_bytes, .{ .locality = 3 });
}

/// Stores 64-byte lines from `src` to the 64-byte aligned address `dst`,
/// bypassing the cache. The staging buffer was just written by blocks of
/// 16 bytes or more; loading it 16 bytes at a time keeps every load inside
/// one earlier store, so it is forwarded instead of waiting for the stores
/// to reach the cache.
fn storeLinesNonTemporal(dst: usize, src: []align(line) const u8) void {
    var off: usize = 0;
    while (off < src.len) : (off += 16) simd.storeNonTemporal(dst + off, src[off..][0..16].*);
}

/// Writes the output of elements [begin, end) group by group, each group a
/// whole number of cache lines produced by `emitter.emit(base, i)` (one
/// block written at `base` + byte offset of element i) into an aligned
/// staging buffer. Whole lines go out with non-temporal stores; the partial
/// lines at the two ends, which may share a line with another thread's
/// bytes, with regular stores. Returns where it stopped (whole groups only).
pub fn streamGroups(comptime out_bits: u16, dst: [*]u8, begin: usize, end: usize, emitter: anytype) usize {
    // Lines per group, measured at 27M elements (AMD Zen 4): eight made
    // uint8 → bfloat16 and → float32 7-10 % faster than one, and float32 →
    // uint8 10 % slower.
    const group_lines: usize = if (out_bits >= 16) 8 else 1;
    const group: usize = @max(block, group_lines * line * 8 / @as(usize, out_bits));
    const group_bytes = group * out_bits / 8; // a multiple of the line
    if (end - begin < 2 * group) return begin;
    var staging: [group_bytes + line]u8 align(line) = undefined;
    const first = @intFromPtr(dst) + begin * out_bits / 8;
    const m = first % line;
    var i = begin;
    while (i + group <= end) : (i += group) {
        const at = first + (i - begin) * out_bits / 8; // address of element i
        // The block code writes element i to base + offset(i): aim it at staging[m].
        const base = (@intFromPtr(&staging) + m) -% i * out_bits / 8;
        var j: usize = 0;
        while (j < group) : (j += block) {
            emitter.prefetch(i + j);
            emitter.emit(@as([*]u8, @ptrFromInt(base)), i + j);
        }
        if (i == begin) {
            // staging[0..m) holds no bytes of ours yet: the first line is partial.
            @memcpy(@as([*]u8, @ptrFromInt(at))[0 .. line - m], staging[m..line]);
            storeLinesNonTemporal(at - m + line, staging[line..group_bytes]);
        } else {
            storeLinesNonTemporal(at - m, staging[0..group_bytes]);
        }
        // The next line's start (m bytes used), 16 bytes at a time: each
        // piece lies inside one store of the block code, so it is forwarded.
        // One 64-byte load spans two of them wherever m is not 0 (numpy's
        // large arrays start 16 bytes past a line), and waited for both to
        // reach the cache: uint8 → bfloat16 at 27M took 2.7 ms there against
        // 2.0 ms on a line-aligned output.
        inline for (0..line / 16) |k| staging[16 * k ..][0..16].* = simd.opaque16(staging[group_bytes + 16 * k ..][0..16].*);
    }
    const stop = first + (i - begin) * out_bits / 8;
    @memcpy(@as([*]u8, @ptrFromInt(stop - m))[0..m], staging[0..m]);
    simd.fenceNonTemporal();
    return i;
}

/// The loop every element-wise operation shares: a head that aligns the
/// wider array, then whole cache lines written past the cache when `stream`
/// (and the destination is not read), then blocks with the input prefetched
/// ahead, then the tail through the same block code on zero-padded copies,
/// so every element of a call sees identical arithmetic. `blockFn(p, src,
/// dst, i, index)` reads element i of src and writes element i of dst;
/// `index` is the element's number in the call (stochastic rounding's
/// counter), which differs from i in the head and tail. `start_step`, if
/// not 0: the block code gives each element the same result whatever
/// element its block starts at, as long as that element's index is a
/// multiple of it (per-tensor parameters; stochastic counters come in
/// pairs), so the loop may align its blocks by such a head.
pub fn runRange(comptime In: DType, comptime Out: DType, comptime reads_dst: bool, start_step: usize, stream: bool, p: anytype, src: [*]const u8, dst: [*]u8, begin: usize, end: usize, comptime blockFn: anytype) void {
    var i = begin;
    const streams = stream and !reads_dst;
    if (start_step != 0) {
        const h = headElements(In, Out, src, dst, begin, end);
        // The staging buffer of a streamed output is read 16 bytes at a
        // time: a head that moved the output off its 16-byte phase would
        // make those loads span two of the block code's stores, which are
        // not forwarded (bfloat16 → uint8 at 27M: 2.0 → 2.5 ms).
        const keeps_phase = !streams or Out.byteCount(h) % 16 == 0;
        if (h != 0 and keeps_phase and h % start_step == 0 and begin % start_step == 0) {
            partialBlock(In, Out, reads_dst, p, src, dst, begin, h, blockFn);
            i += h;
        }
    }
    if (streams) {
        const Emit = struct {
            p: @TypeOf(p),
            src: [*]const u8,
            fn emit(e: @This(), base: [*]u8, k: usize) void {
                blockFn(e.p, e.src, base, k, k);
            }
            fn prefetch(e: @This(), k: usize) void {
                prefetchBlock(In, e.src, k);
            }
        };
        i = streamGroups(Out.bits(), dst, i, end, Emit{ .p = p, .src = src });
    }
    while (i + block <= end) : (i += block) {
        prefetchBlock(In, src, i);
        if (reads_dst) prefetchBlock(Out, dst, i);
        @call(.always_inline, blockFn, .{ p, src, dst, i, i });
    }
    if (i != end) partialBlock(In, Out, reads_dst, p, src, dst, i, end - i, blockFn);
}

/// Prefetches every cache line of the block at element i (a block of
/// float32 spans two lines under AVX-512).
inline fn prefetchBlock(comptime T: DType, src: [*]const u8, i: usize) void {
    const bytes = comptime T.byteCount(block);
    inline for (0..@max(1, bytes / line)) |k| prefetchAhead(src, T.byteCount(i) + k * line);
}

/// Elements before the wider of the two arrays (the destination on a tie)
/// reaches a register-sized boundary, when that takes less than a block and
/// the range has blocks to spare. Measured (AVX-512, 65,536 elements, one
/// thread): a float32 destination at 16 or 32 bytes past a line, as numpy
/// allocates, doubles dequantize's time, each 64-byte store split over two
/// lines; a float32 source slows quantize by a tenth.
fn headElements(comptime In: DType, comptime Out: DType, src: [*]const u8, dst: [*]u8, begin: usize, end: usize) usize {
    if (comptime In.bits() < 8 or Out.bits() < 8) return 0; // packed elements: no byte boundary
    if (end - begin < 4 * block) return 0;
    const T = if (Out.bits() >= In.bits()) Out else In;
    const base = if (Out.bits() >= In.bits()) @intFromPtr(dst) else @intFromPtr(src);
    const size: usize = T.bits() / 8; // bits() is a u8: 32 lanes of float64 overflow it
    const boundary: usize = @min(simd.lanes * 4, block * size);
    const at = base + begin * size;
    if (at % size != 0) return 0;
    return ((boundary - at % boundary) % boundary) / size;
}

/// Elements [i, i + n) of a range, n < block, through the block code on
/// zero-padded copies; unused fields of a packed last byte are 0.
fn partialBlock(comptime In: DType, comptime Out: DType, comptime reads_dst: bool, p: anytype, src: [*]const u8, dst: [*]u8, i: usize, n: usize, comptime blockFn: anytype) void {
    const in_bytes = In.byteCount(n);
    const out_bytes = Out.byteCount(n);
    var src_buf: [block * 8]u8 align(64) = @splat(0);
    @memcpy(src_buf[0..in_bytes], src[In.byteCount(i)..][0..in_bytes]);
    var dst_buf: [block * 8]u8 align(64) = @splat(0);
    if (reads_dst) @memcpy(dst_buf[0..out_bytes], dst[Out.byteCount(i)..][0..out_bytes]);
    blockFn(p, &src_buf, &dst_buf, 0, i);
    const used = n % Out.perByte();
    if (used != 0) dst_buf[out_bytes - 1] &= @truncate((@as(u32, 1) << @intCast(used * Out.bits())) - 1); // unused fields are 0
    @memcpy(dst[Out.byteCount(i)..][0..out_bytes], dst_buf[0..out_bytes]);
}

/// A copy that writes around the cache (16-byte non-temporal stores on
/// x86-64, which every x86-64 has): the fastest way to stream bytes, so the
/// benchmarks' roofline is not a libc memcpy that may not be. Used by the
/// C ABI (baseline CPU), so it needs nothing of a kernel variant.
pub fn copyNonTemporal(dst: []u8, src: []const u8) void {
    if (builtin.cpu.arch != .x86_64) return @memcpy(dst, src);
    const head = @min(dst.len, (16 - @intFromPtr(dst.ptr) % 16) % 16);
    @memcpy(dst[0..head], src[0..head]);
    var i = head;
    while (i + 16 <= dst.len) : (i += 16) simd.storeNonTemporal(@intFromPtr(dst.ptr + i), src[i..][0..16].*);
    @memcpy(dst[i..], src[i..]);
    simd.fenceNonTemporal();
}
