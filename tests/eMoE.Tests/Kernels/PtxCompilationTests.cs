using System.Reflection;
using eMoE.Compute.Ilgpu;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace eMoE.Tests.Kernels;

/// <summary>
/// Every kernel compiled to PTX for sm_90 without a GPU: CPU-only test runs would otherwise miss
/// CUDA-only failures (e.g. a math function with no PTX implementation).
/// </summary>
public sealed class PtxCompilationTests
{
    public static IEnumerable<MethodInfo> Kernels => KernelSet.EntryPoints;

    [TestCaseSource(nameof(Kernels))]
    public void CompilesForSm90(MethodInfo kernel)
    {
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90),
            CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, default(KernelSpecialization));
        Assert.That(compiled.PTXAssembly, Does.Contain(".entry"));
        Assert.That(compiled.PTXAssembly, Does.Contain(".target sm_"));
    }

    [Test]
    public void EveryKernelIsListed()
    {
        var kernelMethods = typeof(eMoE.Kernels.WeightView).Assembly.GetTypes()
            .Where(t => t.Name.EndsWith("Kernels", StringComparison.Ordinal))
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
            .Where(m => m.ReturnType == typeof(void) && !m.Name.EndsWith("Reference", StringComparison.Ordinal));
        Assert.That(KernelSet.EntryPoints, Is.EquivalentTo(kernelMethods));
    }
}
