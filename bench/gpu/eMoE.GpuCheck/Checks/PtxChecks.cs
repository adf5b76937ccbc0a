using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace eMoE.GpuCheck.Checks;

/// <summary>
/// Compiles a kernel to PTX without a GPU (ILGPU's own PTX backend, no driver involved), as the
/// unit tests do for every kernel: CPU-only runs would otherwise miss CUDA-only failures, such as a
/// math function with no PTX implementation. The GPU check runs it too, in its published form.
/// </summary>
internal static class PtxChecks
{
    /// <summary>The target the tests compile for: sm_90 (Hopper), PTX ISA 8.8.</summary>
    public static readonly CudaArchitecture Architecture = CudaArchitecture.SM_90;

    /// <inheritdoc cref="Architecture"/>
    public static readonly CudaInstructionSet InstructionSet = CudaInstructionSet.ISA_88;

    /// <summary>Compiles <paramref name="kernel"/>; returns the PTX assembly.</summary>
    /// <exception cref="CheckFailedException">The PTX lacks an entry point or a target.</exception>
    public static string Compile(MethodInfo kernel)
    {
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(Architecture), Architecture, InstructionSet, null);
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, default(KernelSpecialization));
        string ptx = compiled.PTXAssembly;
        if (!ptx.Contains(".entry", StringComparison.Ordinal)) throw new CheckFailedException($"{kernel.Name}: the PTX has no .entry");
        if (!ptx.Contains(".target sm_", StringComparison.Ordinal)) throw new CheckFailedException($"{kernel.Name}: the PTX has no .target");
        return ptx;
    }
}
