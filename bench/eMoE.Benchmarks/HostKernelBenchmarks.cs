using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using eMoE.Compute.Host;
using eMoE.GpuCheck.Workloads;
using eMoE.Model;

namespace eMoE.Benchmarks;

/// <summary>
/// The host (CPU, SIMD) kernels that dominate a forward step, at the shipped model's shapes and a
/// Mixtral-shaped BF16 model's, for one decode token (Tokens = 1) and a 64-token prefill chunk,
/// with 1 and 2 threads. Weights are random, in native memory, in the model's dtype (read in place
/// as from a memory-mapped checkpoint). Columns: GFLOP/s (2 per multiply-add) and GB/s (the bytes
/// a call must at least read: weights, or the K and V cache for attention).
/// </summary>
/// <remarks>
/// Shapes. Shipped: hidden 128, 16 experts of 256, 4 heads / 2 KV heads of 32, vocab 4096, F32.
/// Mixtral-shaped: hidden 1024, 8 experts of 3584, 16 heads / 4 KV heads of 64, BF16.
/// <c>MatMulLarge</c> is [4096 x 128] (the shipped LM head) or [14336 x 1024] (two experts' gate
/// and up rows, what one decode token reads per layer); <c>MatMulQ</c> is the q projection
/// [128 x 128] or [1024 x 1024]. <c>ExpertFfn</c> is top-2 routing: one token (2 experts), or 64
/// tokens spread over every expert. <c>Attention</c> is at the end of a 1024-position context in
/// blocks of 16: the last position, or the last 64.
/// </remarks>
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 5)]
[Config(typeof(HostKernelBenchmarks.Columns))]
public unsafe class HostKernelBenchmarks
{
    /// <summary>Shapes of one model, as the host benchmarks use them.</summary>
    public sealed record HostShape(int Hidden, int Intermediate, int Experts, int Heads, int KvHeads, int HeadDim, int LargeRows, TensorDType DType)
    {
        public int ItemSize => DType == TensorDType.F32 ? 4 : 2;

        public static HostShape Of(ShapeName name) => name switch
        {
            ShapeName.Shipped => new(Hidden: 128, Intermediate: 256, Experts: 16, Heads: 4, KvHeads: 2, HeadDim: 32, LargeRows: 4096, TensorDType.F32),
            ShapeName.Mixtral => new(Hidden: 1024, Intermediate: 3584, Experts: 8, Heads: 16, KvHeads: 4, HeadDim: 64, LargeRows: 14336, TensorDType.BF16),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    private const int TopK = 2, Context = 1024, BlockSize = 16;

    [Params(ShapeName.Shipped, ShapeName.Mixtral)]
    public ShapeName Shape { get; set; }

    [Params(1, 2)]
    public int Threads { get; set; }

    [Params(1, 64)]
    public int Tokens { get; set; }

    private readonly List<IntPtr> _blocks = [];
    private ulong _seed = 0x9E3779B97F4A7C15UL;
    private WorkerPool _pool = null!;
    private HostShape _s = null!;
    private float* _x, _y, _q, _attn, _kCache, _vCache, _hidden, _expertOut;
    private int* _positions, _sequenceOf, _blockTable, _expertIds, _order, _offsets;
    private HostWeight _large, _qProj;
    private HostWeight[] _gate = [], _up = [], _down = [];
    private bool[] _present = [];

    [GlobalSetup]
    public void Setup()
    {
        _s = HostShape.Of(Shape);
        _pool = new WorkerPool(Threads);
        int h = _s.Hidden, t = Tokens, inter = _s.Intermediate;
        _x = RandomFloats((long)t * Math.Max(h, _s.Heads * _s.HeadDim), 1f);
        _y = Floats((long)t * _s.LargeRows);
        _large = RandomWeight((long)_s.LargeRows * h);
        _qProj = RandomWeight((long)_s.Heads * _s.HeadDim * h);

        // Experts: one token goes to experts 0 and 1; 64 tokens go round-robin, so every expert gets 16 (8 shipped) assignments.
        _gate = [.. Enumerable.Range(0, _s.Experts).Select(_ => RandomWeight((long)inter * h))];
        _up = [.. Enumerable.Range(0, _s.Experts).Select(_ => RandomWeight((long)inter * h))];
        _down = [.. Enumerable.Range(0, _s.Experts).Select(_ => RandomWeight((long)h * inter))];
        _present = [.. Enumerable.Repeat(true, _s.Experts)];
        _expertIds = Ints(t * TopK);
        for (int a = 0; a < t * TopK; a++) _expertIds[a] = a % _s.Experts;
        _order = Ints(t * TopK);
        _offsets = Ints(_s.Experts + 1);
        HostKernels.GroupByExpert(_expertIds, _offsets, _order, t * TopK, _s.Experts);
        _hidden = Floats((long)t * TopK * inter);
        _expertOut = Floats((long)t * TopK * h);

        // One sequence holding the whole context in blocks 0, 1, ...; the tokens are its last positions.
        int kvDim = _s.KvHeads * _s.HeadDim, qDim = _s.Heads * _s.HeadDim;
        _q = RandomFloats((long)t * qDim, 1f);
        _attn = Floats((long)t * qDim);
        _kCache = RandomFloats((long)Context * kvDim, 1f);
        _vCache = RandomFloats((long)Context * kvDim, 1f);
        _positions = Ints(t);
        for (int i = 0; i < t; i++) _positions[i] = Context - t + i;
        _sequenceOf = Ints(t);
        _blockTable = Ints(Context / BlockSize);
        for (int b = 0; b < Context / BlockSize; b++) _blockTable[b] = b;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        foreach (var p in _blocks) NativeMemory.AlignedFree((void*)p);
        _blocks.Clear();
    }

    /// <summary>[4096 x 128] F32 or [14336 x 1024] BF16: the LM head, or the gate and up rows of one token's two experts.</summary>
    [Benchmark]
    public void MatMulLarge() => HostKernels.MatMul(_pool, _x, _large, _y, Tokens, _s.LargeRows, _s.Hidden, accumulate: false);

    /// <summary>The q projection, [128 x 128] or [1024 x 1024].</summary>
    [Benchmark]
    public void MatMulQ() => HostKernels.MatMul(_pool, _x, _qProj, _y, Tokens, _s.Heads * _s.HeadDim, _s.Hidden, accumulate: false);

    /// <summary>Gate, up and down of the top-2 experts of every token.</summary>
    [Benchmark]
    public void ExpertFfn() => HostKernels.ExpertFfn(_pool, _x, _expertIds, _order, _offsets, _gate, _up, _down, _present, _hidden, _expertOut,
        Tokens, TopK, _s.Hidden, _s.Intermediate);

    /// <summary>Causal attention of the last <see cref="Tokens"/> positions of a 1024-position context.</summary>
    [Benchmark]
    public void Attention() => HostKernels.Attention(_pool, _q, _kCache, _vCache, _positions, _sequenceOf, _blockTable, _attn, Tokens,
        _s.Heads, _s.KvHeads, _s.HeadDim, Context, BlockSize, Context / BlockSize);

    /// <summary>Floating-point operations of one call (2 per multiply-add).</summary>
    public static double Flops(string benchmark, ShapeName shape, int tokens)
    {
        var s = HostShape.Of(shape);
        double h = s.Hidden, t = tokens;
        return benchmark switch
        {
            nameof(MatMulLarge) => 2 * t * s.LargeRows * h,
            nameof(MatMulQ) => 2 * t * s.Heads * s.HeadDim * h,
            nameof(ExpertFfn) => 2 * t * TopK * 3 * s.Intermediate * h,
            // q.k and p.v for every head and every position up to the token's own.
            nameof(Attention) => Enumerable.Range(Context - tokens, tokens).Sum(p => 4.0 * (p + 1) * s.Heads * s.HeadDim),
            _ => 0,
        };
    }

    /// <summary>Bytes one call must at least read: the weights it multiplies with, or the K and V cache.</summary>
    public static double Bytes(string benchmark, ShapeName shape, int tokens)
    {
        var s = HostShape.Of(shape);
        double h = s.Hidden;
        int expertsUsed = Math.Min(s.Experts, tokens * TopK);
        return benchmark switch
        {
            nameof(MatMulLarge) => s.LargeRows * h * s.ItemSize,
            nameof(MatMulQ) => (double)s.Heads * s.HeadDim * h * s.ItemSize,
            nameof(ExpertFfn) => expertsUsed * 3.0 * s.Intermediate * h * s.ItemSize,
            nameof(Attention) => 2.0 * Context * s.KvHeads * s.HeadDim * sizeof(float),
            _ => 0,
        };
    }

    /// <summary>The GFLOP/s and GB/s columns of these benchmarks.</summary>
    public sealed class Columns : ManualConfig
    {
        public Columns()
        {
            AddColumn(
                new ValueColumn("GFLOP/s", "Floating-point operations per call (2 per multiply-add) over Mean, in 10^9/s",
                    (c, s) => Of(c, s, Flops), "0.0"),
                new ValueColumn("Host GB/s", "Bytes a call must read (weights; K and V cache for attention) over Mean, in 10^9 B/s",
                    (c, s) => Of(c, s, Bytes), "0.00"));
        }

        private static double? Of(BenchmarkCase c, BenchmarkDotNet.Mathematics.Statistics? s, Func<string, ShapeName, int, double> measure) =>
            c.Descriptor.Type == typeof(HostKernelBenchmarks) && s is not null && c.Parameters["Shape"] is ShapeName shape && c.Parameters["Tokens"] is int tokens
                ? measure(c.Descriptor.WorkloadMethod.Name, shape, tokens) / s.Mean
                : null;
    }

    private float* Floats(long count)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max(1, count) * sizeof(float)), 64);
        new Span<float>(p, checked((int)count)).Clear();
        _blocks.Add((IntPtr)p);
        return p;
    }

    private int* Ints(long count) => (int*)Floats(count);

    private float* RandomFloats(long count, float scale)
    {
        float* p = Floats(count);
        for (long i = 0; i < count; i++) p[i] = NextFloat(scale);
        return p;
    }

    /// <summary>Random weights in [-0.02, 0.02) stored in the shape's dtype.</summary>
    private HostWeight RandomWeight(long elements)
    {
        if (_s.DType == TensorDType.F32) return new HostWeight(RandomFloats(elements, 0.02f), elements, TensorDType.F32);
        var p = (ushort*)NativeMemory.AlignedAlloc((nuint)(elements * 2), 64);
        _blocks.Add((IntPtr)p);
        for (long i = 0; i < elements; i++) p[i] = (ushort)(BitConverter.SingleToUInt32Bits(NextFloat(0.02f)) >> 16);
        return new HostWeight(p, elements, _s.DType);
    }

    // xorshift64*: fast and reproducible; the values only need to be finite and varied.
    private float NextFloat(float scale)
    {
        _seed ^= _seed >> 12;
        _seed ^= _seed << 25;
        _seed ^= _seed >> 27;
        ulong bits = _seed * 0x2545F4914F6CDD1DUL;
        return ((bits >> 40) / (float)(1 << 24) * 2 - 1) * scale;
    }
}
