using eMoE.GpuCheck.Checks;
using eMoE.Kernels;
using NUnit.Framework;
using Half = System.Half;

namespace eMoE.Tests.Kernels;

/// <summary>
/// Each kernel on the CPU accelerator against its plain C# reference, in both launch shapes. The
/// cases live in <see cref="KernelChecks"/> (bench/gpu/eMoE.GpuCheck/Checks), which the GPU check
/// runs on CUDA too: one piece of code serves both.
/// </summary>
[TestFixtureSource(typeof(KernelReferenceTests), nameof(LaneShapes))]
public sealed class KernelReferenceTests(int lanes)
{
    private KernelRig _rig = null!;

    public static IEnumerable<int> LaneShapes => KernelRig.LaneShapes;

    public static IEnumerable<string> Cases => KernelChecks.Cases.Select(c => c.Name);

    [OneTimeSetUp] public void Open() => _rig = KernelRig.CpuAccelerator(lanes);
    [OneTimeTearDown] public void Close() => _rig.Dispose();

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(string check)
    {
        var kernelCase = KernelChecks.Case(check);
        Assert.That(kernelCase.Run(_rig), Is.LessThanOrEqualTo(kernelCase.Tolerance));
    }

    [Test]
    public void EveryKernelOfTheSetIsChecked()
    {
        // A kernel added to KernelSet without a reference check would go unchecked on CUDA too.
        var launched = KernelChecks.Cases.SelectMany(c => c.Kernels).ToHashSet();
        Assert.That(eMoE.Compute.Ilgpu.KernelSet.EntryPoints.Select(m => m.Name), Is.SubsetOf(launched));
    }
}

/// <summary>Conversions that do not need an accelerator.</summary>
public sealed class WeightViewTests
{
    [Test]
    public void HalfToFloatMatchesSystemHalfForEveryBitPattern()
    {
        for (int bits = 0; bits <= ushort.MaxValue; bits++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits);
            float actual = WeightView.HalfToFloat((ushort)bits);
            if (float.IsNaN(expected)) Assert.That(float.IsNaN(actual), $"bits {bits:X4}");
            else if (actual != expected) Assert.Fail($"bits {bits:X4}: {actual} != {expected}");
        }
    }

    [Test]
    public void OrderKeyOrdersLikeFloats()
    {
        float[] values = [float.NegativeInfinity, -1e30f, -2.5f, -1e-30f, -0f, 0f, 1e-30f, 1f, 3.5f, 1e30f, float.PositiveInfinity];
        for (int i = 1; i < values.Length; i++)
            Assert.That(SamplingKernels.OrderKey(values[i]), Is.GreaterThanOrEqualTo(SamplingKernels.OrderKey(values[i - 1])));
        Assert.That((float)(Half)1.5f, Is.EqualTo(1.5f));
    }
}
