//! LLVM intrinsics the x86 and Neon helpers share. Only the LLVM backend
//! knows them: simd.zig picks those helpers only when it is the backend.

// LLVM's roundeven: one instruction with SSE4.1 (roundps $8), AVX-512
// (vrndscaleps) and Neon (frintn), independent of the MXCSR rounding mode.
// Called per native register: wider vectors would be passed by pointer.
extern fn @"llvm.roundeven.v4f32"(@Vector(4, f32)) @Vector(4, f32);
extern fn @"llvm.roundeven.v8f32"(@Vector(8, f32)) @Vector(8, f32);
extern fn @"llvm.roundeven.v16f32"(@Vector(16, f32)) @Vector(16, f32);
extern fn @"llvm.roundeven.v2f64"(@Vector(2, f64)) @Vector(2, f64);
extern fn @"llvm.roundeven.v4f64"(@Vector(4, f64)) @Vector(4, f64);
extern fn @"llvm.roundeven.v8f64"(@Vector(8, f64)) @Vector(8, f64);

fn roundEvenRegister(comptime C: type, comptime n: usize, v: @Vector(n, C)) @Vector(n, C) {
    return switch (@Vector(n, C)) {
        @Vector(4, f32) => @"llvm.roundeven.v4f32"(v),
        @Vector(8, f32) => @"llvm.roundeven.v8f32"(v),
        @Vector(16, f32) => @"llvm.roundeven.v16f32"(v),
        @Vector(2, f64) => @"llvm.roundeven.v2f64"(v),
        @Vector(4, f64) => @"llvm.roundeven.v4f64"(v),
        @Vector(8, f64) => @"llvm.roundeven.v8f64"(v),
        else => @compileError("no register of this shape"),
    };
}

/// Round half to even, one `register_bytes` register at a time.
pub fn roundEven(comptime register_bytes: usize, comptime n: usize, comptime C: type, y: @Vector(n, C)) @Vector(n, C) {
    const reg = register_bytes / @sizeOf(C); // elements of C per register
    var parts: [n / reg]@Vector(reg, C) = undefined;
    const arr: [n]C = y;
    inline for (&parts, 0..) |*part, k| part.* = roundEvenRegister(C, reg, arr[k * reg ..][0..reg].*);
    return @bitCast(parts);
}
