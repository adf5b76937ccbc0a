using BenchmarkDotNet.Attributes;
using eMoE.Compute;
using eMoE.GpuCheck.Workloads;

namespace eMoE.Benchmarks;

/// <summary>
/// Every kernel of one decode step (T = 1), launched as the engine launches it and waited for, at
/// the shipped model's shapes and at Mixtral-8x7B's. The launches and their buffers are
/// <see cref="KernelWorkload"/>'s, which the GPU check (bench/gpu) times too.
/// </summary>
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 5)]
public class KernelBenchmarks
{
    [Params(ShapeName.Shipped, ShapeName.Mixtral)]
    public ShapeName Shape { get; set; }

    [ParamsSource(nameof(Devices))]
    public DeviceSpec Device { get; set; }

    public static IEnumerable<DeviceSpec> Devices => BenchSettings.IlgpuDevices;

    private KernelWorkload _work = null!;

    [GlobalSetup]
    public void Setup() => _work = new KernelWorkload(Shape, Device);

    [GlobalCleanup]
    public void Cleanup() => _work.Dispose();

    private void Run(DecodeKernel kernel)
    {
        _work.Launch(kernel);
        _work.Synchronize();
    }

    [Benchmark] public void Embedding() => Run(DecodeKernel.Embedding);
    [Benchmark] public void RmsNorm() => Run(DecodeKernel.RmsNorm);
    /// <summary>The q projection: a GEMV with a [heads x head_dim, hidden] weight.</summary>
    [Benchmark] public void MatMulQProj() => Run(DecodeKernel.MatMulQProj);
    /// <summary>The LM head: a GEMV with a [vocab, hidden] weight, the largest dense matrix.</summary>
    [Benchmark] public void MatMulLmHead() => Run(DecodeKernel.MatMulLmHead);
    /// <summary>RoPE on this token's q and k, and its k and v written to the cache, at the last position.</summary>
    [Benchmark] public void Rope() => Run(DecodeKernel.Rope);
    /// <summary>Decode attention at the last position of the context (255 shipped, 1023 Mixtral).</summary>
    [Benchmark] public void Attention() => Run(DecodeKernel.Attention);
    [Benchmark] public void RouterSoftmaxTopK() => Run(DecodeKernel.RouterSoftmaxTopK);
    [Benchmark] public void RouterGroupByExpert() => Run(DecodeKernel.RouterGroupByExpert);
    /// <summary>Gate and up projections of the token's top-k experts.</summary>
    [Benchmark] public void ExpertGateUp() => Run(DecodeKernel.ExpertGateUp);
    /// <summary>Down projections of the token's top-k experts.</summary>
    [Benchmark] public void ExpertDown() => Run(DecodeKernel.ExpertDown);
    /// <summary>The top-k expert outputs, weighted and added to the residual.</summary>
    [Benchmark] public void ExpertCombine() => Run(DecodeKernel.ExpertCombine);
    [Benchmark] public void SampleGreedy() => Run(DecodeKernel.SampleGreedy);
    /// <summary>Temperature 1, top-p 0.9.</summary>
    [Benchmark] public void SampleTopP() => Run(DecodeKernel.SampleTopP);

    /// <summary>Bytes a call must read at least, for the GB/s column (see <see cref="KernelWorkload.BytesPerCall"/>).</summary>
    public static long? BytesPerCall(string benchmark, ShapeName shape) =>
        Enum.TryParse<DecodeKernel>(benchmark, out var kernel) ? KernelWorkload.BytesPerCall(kernel, shape) : null;
}
