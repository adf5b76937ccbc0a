using System.Reflection;
using eMoE.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace eMoE.Compute.Ilgpu;

/// <summary>Every kernel of the forward pass, compiled once for one accelerator.</summary>
internal sealed class KernelSet
{
    public readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, WeightView, ArrayView<float>, int, int> Embedding;
    public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, WeightView, ArrayView<float>, int, int, float, int> RmsNorm;
    public readonly Action<AcceleratorStream, KernelConfig, MatMulArgs, int> MatMul;
    public readonly Action<AcceleratorStream, KernelConfig, RopeArgs> RopeAndCache;
    public readonly Action<AcceleratorStream, KernelConfig, AttentionArgs, int> Attention;
    public readonly Action<AcceleratorStream, KernelConfig, RouterArgs> SoftmaxTopK;
    public readonly Action<AcceleratorStream, KernelConfig, GroupArgs> GroupByExpert;
    public readonly Action<AcceleratorStream, KernelConfig, ExpertArgs, int> ExpertGateUp;
    public readonly Action<AcceleratorStream, KernelConfig, ExpertArgs, int> ExpertDown;
    public readonly Action<AcceleratorStream, KernelConfig, ExpertArgs> ExpertCombine;
    public readonly Action<AcceleratorStream, KernelConfig, SampleArgs> Sample;
    public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> NextTokenNll;

    public KernelSet(Accelerator accelerator)
    {
        Embedding = accelerator.LoadKernel<ArrayView<int>, WeightView, ArrayView<float>, int, int>(EmbeddingKernels.Gather);
        RmsNorm = accelerator.LoadKernel<ArrayView<float>, WeightView, ArrayView<float>, int, int, float, int>(NormKernels.RmsNorm);
        MatMul = accelerator.LoadKernel<MatMulArgs, int>(MatMulKernels.MatMul);
        RopeAndCache = accelerator.LoadKernel<RopeArgs>(RopeKernels.RopeAndCache);
        Attention = accelerator.LoadKernel<AttentionArgs, int>(AttentionKernels.CausalAttention);
        SoftmaxTopK = accelerator.LoadKernel<RouterArgs>(RouterKernels.SoftmaxTopK);
        GroupByExpert = accelerator.LoadKernel<GroupArgs>(RouterKernels.GroupByExpert);
        ExpertGateUp = accelerator.LoadKernel<ExpertArgs, int>(ExpertKernels.GateUp);
        ExpertDown = accelerator.LoadKernel<ExpertArgs, int>(ExpertKernels.Down);
        ExpertCombine = accelerator.LoadKernel<ExpertArgs>(ExpertKernels.Combine);
        Sample = accelerator.LoadKernel<SampleArgs>(SamplingKernels.Sample);
        NextTokenNll = accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(LossKernels.NextTokenNll);
    }

    /// <summary>The kernel entry points, for compiling each one to PTX in the tests.</summary>
    public static IReadOnlyList<MethodInfo> EntryPoints { get; } =
    [
        Method(typeof(EmbeddingKernels), nameof(EmbeddingKernels.Gather)),
        Method(typeof(NormKernels), nameof(NormKernels.RmsNorm)),
        Method(typeof(MatMulKernels), nameof(MatMulKernels.MatMul)),
        Method(typeof(RopeKernels), nameof(RopeKernels.RopeAndCache)),
        Method(typeof(AttentionKernels), nameof(AttentionKernels.CausalAttention)),
        Method(typeof(RouterKernels), nameof(RouterKernels.SoftmaxTopK)),
        Method(typeof(RouterKernels), nameof(RouterKernels.GroupByExpert)),
        Method(typeof(ExpertKernels), nameof(ExpertKernels.GateUp)),
        Method(typeof(ExpertKernels), nameof(ExpertKernels.Down)),
        Method(typeof(ExpertKernels), nameof(ExpertKernels.Combine)),
        Method(typeof(SamplingKernels), nameof(SamplingKernels.Sample)),
        Method(typeof(LossKernels), nameof(LossKernels.NextTokenNll)),
    ];

    private static MethodInfo Method(Type type, string name) =>
        type.GetMethod(name, BindingFlags.Public | BindingFlags.Static) ?? throw new MissingMethodException(type.Name, name);
}
