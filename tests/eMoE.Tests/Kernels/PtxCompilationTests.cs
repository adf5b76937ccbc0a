using System.Reflection;
using eMoE.Compute.Ilgpu;
using eMoE.GpuCheck.Checks;
using NUnit.Framework;

namespace eMoE.Tests.Kernels;

/// <summary>
/// Every kernel compiled to PTX for sm_90 without a GPU: CPU-only test runs would otherwise miss
/// CUDA-only failures (e.g. a math function with no PTX implementation). The GPU check
/// (bench/gpu) runs the same compilation.
/// </summary>
public sealed class PtxCompilationTests
{
    public static IEnumerable<MethodInfo> Kernels => KernelSet.EntryPoints;

    [TestCaseSource(nameof(Kernels))]
    public void CompilesForSm90(MethodInfo kernel) => Assert.That(PtxChecks.Compile(kernel), Does.Contain(".entry"));

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
