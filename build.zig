//! Builds libpiquant: the kernel tree (root zig/kernels.zig) is compiled
//! once per ISA variant of zig/isa.zig into an object for that CPU model;
//! the C ABI (zig/abi.zig) is compiled for the baseline CPU of the target and
//! links them all into one shared library.
//!
//!   python -m ziglang build                     # ReleaseFast into zig-out/
//!   python -m ziglang build -Doptimize=ReleaseSafe
//!   python -m ziglang build test                # unit tests

const std = @import("std");
const isa = @import("zig/isa.zig");

const version = "0.1.0";

pub fn build(b: *std.Build) void {
    // Release by default: the differential tests compare this build's results.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default ReleaseFast)") orelse .ReleaseFast;
    var query = b.standardTargetOptionsQueryOnly(.{});
    // The ABI layer must run on any CPU of the architecture: never -mcpu=native.
    query.cpu_model = .baseline;
    const target = b.resolveTargetQuery(query);
    const arch = target.result.cpu.arch;

    const abi_module = b.createModule(.{
        .root_source_file = b.path("zig/abi.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .pic = true,
    });
    const abi_options = b.addOptions();
    abi_options.addOption([:0]const u8, "version", version);
    abi_module.addOptions("build_options", abi_options);

    const lib = b.addLibrary(.{ .name = "piquant", .linkage = .dynamic, .root_module = abi_module });

    const listed = isa.forArch(arch);
    const variants: []const isa.Variant = if (listed.len != 0) listed else &.{.{ .isa = .generic, .arch = arch, .model = std.Target.Cpu.Model.generic(arch) }};

    const test_step = b.step("test", "Run the Zig unit tests");
    for (variants) |v| {
        var q = query;
        q.cpu_model = .{ .explicit = v.model };
        q.cpu_features_add = std.Target.x86.featureSet(v.add);
        const kernel_options = b.addOptions();
        kernel_options.addOption([]const u8, "isa", @tagName(v.isa));
        const module = b.createModule(.{
            .root_source_file = b.path("zig/kernels.zig"),
            .target = b.resolveTargetQuery(q),
            .optimize = optimize,
            .pic = true,
        });
        module.addOptions("build_options", kernel_options);
        lib.root_module.addObject(b.addObject(.{ .name = b.fmt("kernels_{s}", .{@tagName(v.isa)}), .root_module = module }));

        // Unit tests of a variant run only where this machine can execute it.
        const host = b.graph.host.result;
        const runnable = if (v.requires) |k| host.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(host.cpu.features, k) else true;
        if (runnable) {
            test_step.dependOn(&b.addRunArtifact(b.addTest(.{ .root_module = module })).step);
        }
    }
    b.installArtifact(lib);
    b.getInstallStep().dependOn(&b.addInstallFileWithDir(b.path("zig/include/piquant.h"), .header, "piquant.h").step);

    const abi_tests = b.addTest(.{ .root_module = abi_module });
    test_step.dependOn(&b.addRunArtifact(abi_tests).step);
}
