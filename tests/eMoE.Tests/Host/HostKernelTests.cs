using System.Numerics;
using System.Runtime.InteropServices;
using eMoE.Compute.Host;
using eMoE.GpuCheck.Checks;
using eMoE.Kernels;
using eMoE.Model;
using NUnit.Framework;
using Half = System.Half;

namespace eMoE.Tests.Host;

/// <summary>Native memory for one test: copies of arrays, zeroed buffers, weights in a dtype; freed on dispose.</summary>
internal sealed unsafe class NativeArena : IDisposable
{
    private readonly List<IntPtr> _blocks = [];

    public T* Copy<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        var p = Zeros<T>(data.Length);
        data.CopyTo(new Span<T>(p, data.Length));
        return p;
    }

    public T* Zeros<T>(long count) where T : unmanaged
    {
        var p = (T*)NativeMemory.AllocZeroed((nuint)Math.Max(1, count), (nuint)sizeof(T));
        _blocks.Add((IntPtr)p);
        return p;
    }

    /// <summary>The values stored as <paramref name="type"/> (BF16 truncated, F16 rounded, as KernelRig stores them).</summary>
    public HostWeight Weight(float[] values, TensorDType type)
    {
        if (type == TensorDType.F32) return new HostWeight(Copy<float>(values), values.Length, type);
        var bits = values.Select(v => type == TensorDType.BF16
            ? (ushort)(BitConverter.SingleToInt32Bits(v) >>> 16)
            : BitConverter.HalfToUInt16Bits((Half)v)).ToArray();
        return new HostWeight(Copy<ushort>(bits), values.Length, type);
    }

    public static T[] Read<T>(T* p, long count) where T : unmanaged => new Span<T>(p, checked((int)count)).ToArray();

    public void Dispose()
    {
        foreach (var p in _blocks) NativeMemory.Free((void*)p);
        _blocks.Clear();
    }
}

/// <summary>The host kernels against the plain C# references of eMoE.Kernels, on pools of 1 and 2 threads.</summary>
public sealed unsafe class HostKernelTests
{
    private const float Tolerance = 1e-4f;
    private WorkerPool _one = null!, _two = null!;

    [OneTimeSetUp]
    public void Open()
    {
        _one = new WorkerPool(1);
        _two = new WorkerPool(2) { ParallelizeSmall = true }; // every kernel takes its parallel path, even on small shapes
    }

    [OneTimeTearDown]
    public void Close()
    {
        _one.Dispose();
        _two.Dispose();
    }

    private WorkerPool Pool(int threads) => threads == 1 ? _one : _two;

    private static float[] Rounded(float[] values, TensorDType type) => KernelRig.Rounded(values, (int)type);

    private static void AssertClose(float[] actual, float[] expected, float tolerance = Tolerance)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
        {
            if (Math.Abs(actual[i] - expected[i]) > tolerance * Math.Max(1, Math.Abs(expected[i])))
                Assert.Fail($"element {i}: {actual[i]} != {expected[i]} (within {tolerance} relative)");
        }
    }

    // ---- HostWeight ---------------------------------------------------------------------------

    [Test]
    public void WidenMatchesSystemHalfForEveryBitPattern()
    {
        using var arena = new NativeArena();
        var bits = Enumerable.Range(0, 65536).Select(b => (ushort)b).ToArray();
        var w = new HostWeight(arena.Copy<ushort>(bits), bits.Length, TensorDType.F16);
        var widened = new float[bits.Length];
        w.Widen(0, widened);
        for (int b = 0; b < bits.Length; b++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)b);
            AssertSameFloat(widened[b], expected, $"Widen, bits {b:X4}");
            AssertSameFloat(w[b], expected, $"indexer, bits {b:X4}");
        }
        // An unaligned chunk with a tail, through a slice.
        var chunk = new float[1001];
        w.Slice(1000, 20000).Widen(3, chunk);
        for (int i = 0; i < chunk.Length; i++) AssertSameFloat(chunk[i], widened[1003 + i], $"slice element {i}");
    }

    [Test]
    public void InRegisterHalfWideningMatchesSystemHalfForEveryBitPattern()
    {
        // The kernels' F16 path: a block of 2W halves becomes the even ones, then the odd ones.
        using var arena = new NativeArena();
        var bits = Enumerable.Range(0, 65536).Select(b => (ushort)b).ToArray();
        ushort* p = arena.Copy<ushort>(bits);
        int w = Vector<float>.Count, block = WeightFormat.Block;
        for (int b = 0; b < bits.Length; b += block)
        {
            F16Weights.Load((byte*)(p + b), out var first, out var second);
            for (int j = 0; j < w; j++)
            {
                AssertSameFloat(first[j], (float)BitConverter.UInt16BitsToHalf(bits[b + 2 * j]), $"bits {b + 2 * j:X4}");
                AssertSameFloat(second[j], (float)BitConverter.UInt16BitsToHalf(bits[b + 2 * j + 1]), $"bits {b + 2 * j + 1:X4}");
            }
        }
    }

    private static void AssertSameFloats(float[] actual, float[] expected, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        for (int i = 0; i < actual.Length; i++) AssertSameFloat(actual[i], expected[i], $"{what}: element {i}");
    }

    private static void AssertSameFloat(float actual, float expected, string what)
    {
        if (float.IsNaN(expected))
        {
            if (!float.IsNaN(actual)) Assert.Fail($"{what}: {actual} is not NaN");
        }
        else if (BitConverter.SingleToInt32Bits(actual) != BitConverter.SingleToInt32Bits(expected)) Assert.Fail($"{what}: {actual} != {expected}");
    }

    [Test]
    public void WidenBf16AndF32InOrder([Values(TensorDType.F32, TensorDType.BF16, TensorDType.F16)] TensorDType type)
    {
        using var arena = new NativeArena();
        var values = KernelRig.Random(1, 1037, 10f);
        var w = arena.Weight(values, type);
        var expected = Rounded(values, type);
        foreach (var (offset, length) in new[] { (0, 1037), (5, 1), (7, 33), (1, 1036) })
        {
            var chunk = new float[length];
            w.Widen(offset, chunk);
            Assert.That(chunk, Is.EqualTo(expected.AsSpan(offset, length).ToArray()), $"[{offset}, +{length})");
        }
        for (int i = 0; i < values.Length; i += 97) Assert.That(w[i], Is.EqualTo(expected[i]));
        Assert.Throws<ArgumentOutOfRangeException>(() => w.Widen(1000, new float[38]));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = w[1037]);
    }

    [Test]
    public void BFloat16InRegisterWideningSplitsEvenAndOdd()
    {
        using var arena = new NativeArena();
        var values = KernelRig.Random(2, 4 * WeightFormat.Block, 3f);
        var w = arena.Weight(values, TensorDType.BF16);
        var expected = Rounded(values, TensorDType.BF16);
        int vw = Vector<float>.Count;
        for (int b = 0; b < values.Length; b += WeightFormat.Block)
        {
            BF16Weights.Load((byte*)w.Data + b * 2, out var first, out var second);
            for (int j = 0; j < vw; j++)
            {
                Assert.That(first[j], Is.EqualTo(expected[b + 2 * j]));
                Assert.That(second[j], Is.EqualTo(expected[b + 2 * j + 1]));
            }
        }
        // The paired activation layout puts element i where the even/odd split reads it.
        var x = Enumerable.Range(0, 45).Select(i => (float)i).ToArray();
        var paired = new float[45];
        fixed (float* s = x, d = paired) WeightFormat.Pair(s, d, 45);
        for (int i = 0; i < 45; i++) Assert.That(paired[WeightFormat.PairedIndex(i, 45)], Is.EqualTo(x[i]), $"element {i}");
    }

    [Test]
    public void VectorExpIsAccurateAndZeroBelowItsRange()
    {
        int w = Vector<float>.Count;
        var x = new float[w];
        for (float start = -87f; start < 88.5f; start += 0.37f * w)
        {
            for (int i = 0; i < w; i++) x[i] = start + 0.37f * i;
            var wide = HostMath.Exp(new Vector<float>(x));
            for (int i = 0; i < w; i++)
            {
                if (x[i] > 88f) continue;
                double expected = Math.Exp(x[i]);
                Assert.That(wide[i], Is.EqualTo(expected).Within(4e-7 * expected), $"exp({x[i]})");
                Assert.That(HostMath.Exp(x[i]), Is.EqualTo(wide[i]), "the scalar form is a lane of the vector one");
            }
        }
        Assert.That(HostMath.Exp(float.NegativeInfinity), Is.EqualTo(0f));
        Assert.That(HostMath.Exp(-100f), Is.EqualTo(0f));
        Assert.That(HostMath.Exp(0f), Is.EqualTo(1f));
    }

    // ---- Element-wise operations ----------------------------------------------------------------

    [Test]
    public void Gather([Values(TensorDType.F32, TensorDType.F16, TensorDType.BF16)] TensorDType type, [Values(1, 2)] int threads)
    {
        using var arena = new NativeArena();
        const int vocab = 50, hidden = 45;
        var table = KernelRig.Random(1, vocab * hidden);
        int[] tokens = [3, 49, 0, 3, 17];
        var x = arena.Zeros<float>(tokens.Length * hidden);
        HostKernels.Gather(Pool(threads), arena.Copy<int>(tokens), arena.Weight(table, type), x, tokens.Length, hidden);
        var expected = new float[tokens.Length * hidden];
        EmbeddingKernels.GatherReference(tokens, Rounded(table, type), expected, hidden);
        Assert.That(NativeArena.Read(x, expected.Length), Is.EqualTo(expected));
    }

    [Test]
    public void RmsNorm([Values(7, 45, 64)] int size, [Values(TensorDType.F32, TensorDType.BF16)] TensorDType type, [Values(1, 2)] int threads,
        [Values(false, true)] bool inPlace)
    {
        using var arena = new NativeArena();
        const int rows = 5;
        var input = KernelRig.Random(2, rows * size, 3f);
        var weight = KernelRig.Random(3, size);
        float* x = arena.Copy<float>(input);
        float* y = inPlace ? x : arena.Zeros<float>(rows * size);
        HostKernels.RmsNorm(Pool(threads), x, arena.Weight(weight, type), y, rows, size, 1e-5f);
        var expected = new float[rows * size];
        NormKernels.RmsNormReference(input, Rounded(weight, type), expected, size, 1e-5f);
        AssertClose(NativeArena.Read(y, expected.Length), expected);
    }

    [Test]
    public void RopeRotatesAndFillsCacheRowsOfRaggedTokens([Values(8, 36)] int d, [Values(1, 2)] int threads)
    {
        // Three tokens of two sequences: their own positions, written to scattered pool rows.
        using var arena = new NativeArena();
        const int tokens = 3, heads = 4, kvHeads = 2, maxSeq = 10, rows = 12;
        int[] positions = [4, 5, 0];
        int[] cacheRows = [9, 2, 6];
        var (cos, sin) = RopeKernels.Tables(maxSeq, d, 10000f);
        var q = KernelRig.Random(7, tokens * heads * d);
        var k = KernelRig.Random(8, tokens * kvHeads * d);
        var v = KernelRig.Random(9, tokens * kvHeads * d);
        int kv = kvHeads * d;
        float* qn = arena.Copy<float>(q), kn = arena.Copy<float>(k), kCache = arena.Zeros<float>(rows * kv), vCache = arena.Zeros<float>(rows * kv);
        HostKernels.RopeAndCache(Pool(threads), qn, kn, arena.Copy<float>(v), kCache, vCache, arena.Copy<int>(positions), arena.Copy<int>(cacheRows),
            arena.Copy<float>(cos), arena.Copy<float>(sin), tokens, heads, kvHeads, d);

        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++) RopeKernels.RotateReference(q.AsSpan((t * heads + h) * d, d), positions[t], cos, sin);
            for (int h = 0; h < kvHeads; h++) RopeKernels.RotateReference(k.AsSpan((t * kvHeads + h) * d, d), positions[t], cos, sin);
        }
        AssertClose(NativeArena.Read(qn, q.Length), q);
        AssertClose(NativeArena.Read(kn, k.Length), k);
        var kc = NativeArena.Read(kCache, rows * kv);
        var vc = NativeArena.Read(vCache, rows * kv);
        for (int t = 0; t < tokens; t++)
        {
            AssertClose(kc[(cacheRows[t] * kv)..((cacheRows[t] + 1) * kv)], k[(t * kv)..((t + 1) * kv)]);
            AssertClose(vc[(cacheRows[t] * kv)..((cacheRows[t] + 1) * kv)], v[(t * kv)..((t + 1) * kv)]);
        }
        for (int row = 0; row < rows; row++)
        {
            if (!cacheRows.Contains(row)) Assert.That(kc[(row * kv)..((row + 1) * kv)], Is.All.EqualTo(0f), $"row {row} untouched");
        }
    }

    // ---- MatMul -------------------------------------------------------------------------------

    private float[] RunMatMul(int threads, float[] x, HostWeight w, float[] y0, int tokens, int n, int k, bool accumulate)
    {
        using var arena = new NativeArena();
        float* y = arena.Copy<float>(y0);
        HostKernels.MatMul(Pool(threads), arena.Copy<float>(x), w, y, tokens, n, k, accumulate);
        return NativeArena.Read(y, y0.Length);
    }

    [Test]
    public void MatMul([Values(TensorDType.F32, TensorDType.F16, TensorDType.BF16)] TensorDType type, [Values(false, true)] bool accumulate,
        [Values(1, 5, 9)] int tokens)
    {
        // 37 rows: four blocks of 8, a 4-row tile and a single row; K = 45: two whole blocks of 16 (AVX2) and a tail.
        using var arena = new NativeArena();
        const int n = 37, k = 45;
        var x = KernelRig.Random(4, tokens * k);
        var w = KernelRig.Random(5, n * k);
        var y0 = KernelRig.Random(6, tokens * n);
        var weight = arena.Weight(w, type);
        var expected = (float[])y0.Clone();
        MatMulKernels.MatMulReference(x, Rounded(w, type), expected, tokens, n, k, accumulate);
        var one = RunMatMul(1, x, weight, y0, tokens, n, k, accumulate);
        AssertClose(one, expected);
        Assert.That(RunMatMul(2, x, weight, y0, tokens, n, k, accumulate), Is.EqualTo(one), "2 threads compute exactly what 1 does");
    }

    [Test]
    public void MatMulAtMixtralishSize([Values(TensorDType.F32, TensorDType.F16, TensorDType.BF16)] TensorDType type)
    {
        using var arena = new NativeArena();
        const int n = 300, k = 1024, tokens = 7;
        var x = KernelRig.Random(7, tokens * k);
        var w = KernelRig.Random(8, n * k, 0.1f);
        var y0 = new float[tokens * n];
        var weight = arena.Weight(w, type);
        var expected = new float[tokens * n];
        MatMulKernels.MatMulReference(x, Rounded(w, type), expected, tokens, n, k, false);
        var one = RunMatMul(1, x, weight, y0, tokens, n, k, false);
        AssertClose(one, expected);
        Assert.That(RunMatMul(2, x, weight, y0, tokens, n, k, false), Is.EqualTo(one));
    }

    [Test]
    public void MatMulRowOfATokenDoesNotDependOnItsBatch([Values(TensorDType.F32, TensorDType.BF16)] TensorDType type)
    {
        // Batch invariance: token 2 of a batch of 5 gets bit for bit what it gets alone (as the ILGPU kernel guarantees).
        using var arena = new NativeArena();
        const int n = 29, k = 70, tokens = 5;
        var x = KernelRig.Random(9, tokens * k);
        var weight = arena.Weight(KernelRig.Random(10, n * k), type);
        var batch = RunMatMul(2, x, weight, new float[tokens * n], tokens, n, k, false);
        var alone = RunMatMul(1, x[(2 * k)..(3 * k)], weight, new float[n], 1, n, k, false);
        Assert.That(batch[(2 * n)..(3 * n)], Is.EqualTo(alone));
    }

    // ---- Attention ----------------------------------------------------------------------------

    [Test]
    public void CausalAttentionOverPagedBlocksOfSeveralSequences([Values(8, 36)] int d, [Values(1, 2)] int threads)
    {
        // Sequence 0 holds 7 positions in blocks [5, 1] (block size 4); sequence 1 holds 3 in block [3].
        // The step: two prefill tokens of sequence 0 (positions 5, 6) and one decode token of sequence 1 (position 2).
        const int heads = 4, kvHeads = 2, maxSeq = 8, blockSize = 4, maxBlocks = 2, blocks = 6;
        int[] positions = [5, 6, 2];
        int[] sequenceOf = [0, 0, 1];
        int[] blockTables = [5, 1, 3, 0];
        AssertAttention(threads, heads, kvHeads, d, maxSeq, blockSize, maxBlocks, blocks, positions, sequenceOf, blockTables);
    }

    [Test]
    public void CausalAttentionOverLongPagedContexts([Values(1, 2)] int threads)
    {
        // Two sequences of 70 and 45 positions in scattered blocks of 16; a 5-token prefill chunk of the first and a decode token of the second.
        const int heads = 8, kvHeads = 2, d = 64, maxSeq = 80, blockSize = 16, maxBlocks = 5, blocks = 12;
        int[] positions = [65, 66, 67, 68, 69, 44];
        int[] sequenceOf = [0, 0, 0, 0, 0, 1];
        int[] blockTables = [7, 2, 10, 0, 5, 11, 3, 8, 1, 1];
        AssertAttention(threads, heads, kvHeads, d, maxSeq, blockSize, maxBlocks, blocks, positions, sequenceOf, blockTables);
    }

    private void AssertAttention(int threads, int heads, int kvHeads, int d, int maxSeq, int blockSize, int maxBlocks, int blocks,
        int[] positions, int[] sequenceOf, int[] blockTables)
    {
        using var arena = new NativeArena();
        int tokens = positions.Length;
        var q = KernelRig.Random(10, tokens * heads * d);
        var kPool = KernelRig.Random(11, blocks * blockSize * kvHeads * d);
        var vPool = KernelRig.Random(12, blocks * blockSize * kvHeads * d);
        float* output = arena.Zeros<float>(tokens * heads * d);
        HostKernels.Attention(Pool(threads), arena.Copy<float>(q), arena.Copy<float>(kPool), arena.Copy<float>(vPool), arena.Copy<int>(positions),
            arena.Copy<int>(sequenceOf), arena.Copy<int>(blockTables), output, tokens, heads, kvHeads, d, maxSeq, blockSize, maxBlocks);

        var expected = AttentionKernels.PagedAttentionReference(q, kPool, vPool, positions, sequenceOf, blockTables, heads, kvHeads, d, blockSize, maxBlocks);
        AssertClose(NativeArena.Read(output, expected.Length), expected);
    }

    // ---- Routing and experts ------------------------------------------------------------------

    [Test]
    public void RouterTopKAndGrouping([Values(false, true)] bool renormalize)
    {
        using var arena = new NativeArena();
        const int tokens = 9, experts = 8, topK = 3;
        var logits = KernelRig.Random(13, tokens * experts, 4f);
        logits[2 * experts + 5] = logits[2 * experts + 1]; // a tie: the lower id first
        int* ids = arena.Zeros<int>(tokens * topK);
        float* weights = arena.Zeros<float>(tokens * topK);
        HostKernels.SoftmaxTopK(arena.Copy<float>(logits), ids, weights, tokens, experts, topK, renormalize);
        int* offsets = arena.Zeros<int>(experts + 1);
        int* order = arena.Zeros<int>(tokens * topK);
        HostKernels.GroupByExpert(ids, offsets, order, tokens * topK, experts);

        var expectedIds = new int[tokens * topK];
        var expectedWeights = new float[tokens * topK];
        for (int t = 0; t < tokens; t++)
        {
            RouterKernels.SoftmaxTopKReference(logits.AsSpan(t * experts, experts), topK, renormalize,
                expectedIds.AsSpan(t * topK, topK), expectedWeights.AsSpan(t * topK, topK));
        }
        var actualIds = NativeArena.Read(ids, tokens * topK);
        Assert.That(actualIds, Is.EqualTo(expectedIds));
        AssertClose(NativeArena.Read(weights, tokens * topK), expectedWeights);

        // Grouping: a stable sort of assignments by expert, offsets = exclusive prefix counts.
        var expectedOrder = Enumerable.Range(0, tokens * topK).OrderBy(a => actualIds[a]).ToArray();
        var expectedOffsets = Enumerable.Range(0, experts + 1).Select(e => actualIds.Count(id => id < e)).ToArray();
        Assert.That(NativeArena.Read(order, tokens * topK), Is.EqualTo(expectedOrder));
        Assert.That(NativeArena.Read(offsets, experts + 1), Is.EqualTo(expectedOffsets));
    }

    [Test]
    public void GroupByExpertWithUnusedExperts()
    {
        using var arena = new NativeArena();
        int[] ids = [4, 0, 4, 4, 2, 0, 6, 4];
        const int experts = 7;
        int* offsets = arena.Zeros<int>(experts + 1);
        int* order = arena.Zeros<int>(ids.Length);
        HostKernels.GroupByExpert(arena.Copy<int>(ids), offsets, order, ids.Length, experts);
        Assert.That(NativeArena.Read(offsets, experts + 1), Is.EqualTo(new[] { 0, 2, 2, 3, 3, 7, 7, 8 }));
        Assert.That(NativeArena.Read(order, ids.Length), Is.EqualTo(new[] { 1, 5, 4, 0, 2, 3, 7, 6 }));
    }

    [TestCase(TensorDType.F32, 5, 37, 45)]
    [TestCase(TensorDType.F16, 5, 37, 45)]
    [TestCase(TensorDType.BF16, 5, 37, 45)]
    [TestCase(TensorDType.BF16, 1, 37, 45)]
    [TestCase(TensorDType.BF16, 9, 64, 300)]
    [TestCase(TensorDType.F32, 9, 64, 300)]
    public void ExpertFfnWithSomeExpertsAbsent(TensorDType type, int tokens, int h, int inter)
    {
        // 5 experts; expert 1 is absent from this pass (its rows stay as they were), expert 3 gets no tokens.
        const int topK = 2, experts = 5;
        var rng = new Random(tokens * 7 + h);
        var ids = new int[tokens * topK];
        for (int t = 0; t < tokens; t++)
        {
            ids[t * topK] = new[] { 0, 1, 2, 4 }[rng.Next(4)];
            do ids[t * topK + 1] = new[] { 0, 1, 2, 4 }[rng.Next(4)]; while (ids[t * topK + 1] == ids[t * topK]);
        }
        var routerWeights = Enumerable.Range(0, tokens * topK).Select(_ => (float)rng.NextDouble()).ToArray();
        bool[] present = [true, false, true, true, true];
        var x = KernelRig.Random(15, tokens * h);
        var residual0 = KernelRig.Random(16, tokens * h);
        var w1 = Enumerable.Range(0, experts).Select(e => KernelRig.Random(20 + e, inter * h, 0.5f)).ToArray();
        var w3 = Enumerable.Range(0, experts).Select(e => KernelRig.Random(30 + e, inter * h, 0.5f)).ToArray();
        var w2 = Enumerable.Range(0, experts).Select(e => KernelRig.Random(40 + e, h * inter, 0.5f)).ToArray();

        using var arena = new NativeArena();
        var gate = w1.Select(w => arena.Weight(w, type)).ToArray();
        var up = w3.Select(w => arena.Weight(w, type)).ToArray();
        var down = w2.Select(w => arena.Weight(w, type)).ToArray();
        int* idsN = arena.Copy<int>(ids), offsets = arena.Zeros<int>(experts + 1), order = arena.Zeros<int>(tokens * topK);
        HostKernels.GroupByExpert(idsN, offsets, order, tokens * topK, experts);
        float* xN = arena.Copy<float>(x);

        // The reference output of every assignment (absent ones too: they are filled in "elsewhere" below).
        var expectedOutput = new float[tokens * topK * h];
        for (int a = 0; a < tokens * topK; a++)
        {
            int e = ids[a], t = a / topK;
            ExpertKernels.ExpertReference(x.AsSpan(t * h, h), Rounded(w1[e], type), Rounded(w3[e], type), Rounded(w2[e], type), expectedOutput.AsSpan(a * h, h));
        }

        float[]? first = null;
        foreach (int threads in new[] { 1, 2 })
        {
            float* hidden = arena.Copy<float>(Enumerable.Repeat(float.NaN, tokens * topK * inter).ToArray());
            float* output = arena.Copy<float>(Enumerable.Repeat(float.NaN, tokens * topK * h).ToArray());
            HostKernels.ExpertFfn(Pool(threads), xN, idsN, order, offsets, gate, up, down, present, hidden, output, tokens, topK, h, inter);
            var actual = NativeArena.Read(output, tokens * topK * h);
            for (int a = 0; a < tokens * topK; a++)
            {
                var row = actual[(a * h)..((a + 1) * h)];
                if (!present[ids[a]])
                {
                    Assert.That(row, Is.All.NaN, $"assignment {a} of absent expert {ids[a]} untouched");
                    Assert.That(NativeArena.Read(hidden + (long)a * inter, inter), Is.All.NaN);
                    expectedOutput.AsSpan(a * h, h).CopyTo(new Span<float>(output + (long)a * h, h)); // computed in another pass
                }
                else AssertClose(row, expectedOutput[(a * h)..((a + 1) * h)]);
            }
            if (first is null) first = actual;
            else AssertSameFloats(actual, first, "2 threads compute exactly what 1 does");

            // Combine: residual += sum_j w_j * output_j in rank order.
            float* residual = arena.Copy<float>(residual0);
            HostKernels.ExpertCombine(Pool(threads), arena.Copy<float>(routerWeights), output, residual, tokens, topK, h);
            var expected = (float[])residual0.Clone();
            for (int a = 0; a < tokens * topK; a++)
            {
                for (int r = 0; r < h; r++) expected[a / topK * h + r] += routerWeights[a] * expectedOutput[a * h + r];
            }
            AssertClose(NativeArena.Read(residual, tokens * h), expected);
        }
    }

    // ---- Sampling and scoring -----------------------------------------------------------------

    [Test]
    public void SamplingMatchesReferenceRowByRow([Values(1, 2)] int threads, [Values(300, 4096)] int vocab, [Values(5f, 30f)] float scale)
    {
        // Scale 5: flat rows (top-p keeps many tokens); 30: peaked rows (a few tokens hold the mass).
        // Every setting on its own row of one call, each row with its own logits and draw.
        using var arena = new NativeArena();
        (float Temperature, int TopK, float TopP)[] settings = [(0, 0, 1), (1, 0, 1), (0.7f, 40, 1), (1.2f, 0, 0.9f), (0.8f, 50, 0.5f), (1, 1, 1)];
        float[] draws = [0f, 0.13f, 0.5f, 0.87f, 0.9999f];
        int rows = settings.Length * draws.Length;
        var logits = new float[rows * vocab];
        for (int r = 0; r < rows; r++)
        {
            var row = KernelRig.Random(17 + r % 3, vocab, scale);
            row[10] = row[20] = row.Max() + 1; // a tie at the top: lowest id wins greedy
            row.CopyTo(logits, r * vocab);
        }
        var rowSettings = Enumerable.Range(0, rows).Select(r => settings[r / draws.Length]).ToArray();
        var uniform = Enumerable.Range(0, rows).Select(r => draws[r % draws.Length]).ToArray();
        int* tokens = arena.Zeros<int>(rows);
        HostKernels.Sample(Pool(threads), arena.Copy<float>(logits), tokens, arena.Copy<float>(rowSettings.Select(s => s.Temperature).ToArray()),
            arena.Copy<int>(rowSettings.Select(s => s.TopK).ToArray()), arena.Copy<float>(rowSettings.Select(s => s.TopP).ToArray()),
            arena.Copy<float>(uniform), rows, vocab);
        var sampled = NativeArena.Read(tokens, rows);
        for (int r = 0; r < rows; r++)
        {
            var (temperature, topK, topP) = rowSettings[r];
            int expected = SamplingKernels.SampleReference(logits.AsSpan(r * vocab, vocab), temperature, topK, topP, uniform[r]);
            Assert.That(sampled[r], Is.EqualTo(expected), $"row {r}: T={temperature} k={topK} p={topP} u={uniform[r]}");
        }
        Assert.That(sampled[0], Is.EqualTo(10), "greedy: the lowest of the tied ids");
    }

    [Test]
    public void NextTokenNll([Values(1, 2)] int threads, [Values(40, 301)] int vocab)
    {
        using var arena = new NativeArena();
        const int count = 5;
        var logits = KernelRig.Random(18, count * vocab, 6f);
        int[] targets = [5, 39, 0, 7, 22];
        float* nll = arena.Zeros<float>(count);
        HostKernels.NextTokenNll(Pool(threads), arena.Copy<float>(logits), arena.Copy<int>(targets), nll, count, vocab);
        var expected = Enumerable.Range(0, count).Select(t => (float)LossKernels.NllReference(logits.AsSpan(t * vocab, vocab), targets[t])).ToArray();
        AssertClose(NativeArena.Read(nll, count), expected);
    }
}

/// <summary>The worker pool on its own.</summary>
public sealed unsafe class WorkerPoolTests
{
    private struct Counts
    {
        public int* Hits;
        public int ThrowAt;
    }

    private static void Count(void* state, int start, int end)
    {
        var c = (Counts*)state;
        for (int i = start; i < end; i++)
        {
            if (i == c->ThrowAt) throw new InvalidOperationException($"item {i}");
            Interlocked.Increment(ref c->Hits[i]);
        }
    }

    [Test]
    public void ForRunsEveryItemOnce([Values(1, 2, 3, 4)] int threads)
    {
        using var pool = new WorkerPool(threads);
        Assert.That(pool.Threads, Is.EqualTo(threads));
        var hits = new int[1000];
        fixed (int* h = hits)
        {
            var counts = new Counts { Hits = h, ThrowAt = -1 };
            foreach (int count in new[] { 1, 2, 7, 1000 })
            {
                for (int round = 0; round < 50; round++) pool.For(count, &Count, &counts);
            }
        }
        for (int i = 0; i < hits.Length; i++) Assert.That(hits[i], Is.EqualTo(i < 1 ? 200 : i < 2 ? 150 : i < 7 ? 100 : 50), $"item {i}");
    }

    [Test]
    public void ABodyExceptionIsRethrownAndThePoolStaysUsable([Values(1, 2)] int threads)
    {
        using var pool = new WorkerPool(threads);
        var hits = new int[100];
        fixed (int* h = hits)
        {
            var counts = new Counts { Hits = h, ThrowAt = 77 };
            Counts* state = &counts;
            var e = Assert.Throws<InvalidOperationException>(() => pool.For(100, &Count, state));
            Assert.That(e!.Message, Is.EqualTo("item 77"));
            counts.ThrowAt = -1;
            Array.Clear(hits);
            for (int round = 0; round < 10; round++) pool.For(100, &Count, &counts);
        }
        Assert.That(hits, Is.All.EqualTo(10));
    }

    [Test]
    public void SmallJobsRunInlineAndIdleWorkersWakeUp()
    {
        using var pool = new WorkerPool(2);
        var hits = new int[64];
        fixed (int* h = hits)
        {
            var counts = new Counts { Hits = h, ThrowAt = -1 };
            pool.For(64, &Count, &counts, minParallel: 65); // inline
            Thread.Sleep(WorkerPool.SpinMicroseconds / 1000 + 20); // the worker blocks
            pool.For(64, &Count, &counts); // and is woken (or the caller does it all)
        }
        Assert.That(hits, Is.All.EqualTo(2));
    }

    private static void Nested(void* state, int start, int end)
    {
        var pool = (WorkerPool)GCHandle.FromIntPtr((IntPtr)state).Target!;
        var hits = new int[10];
        fixed (int* h = hits)
        {
            var counts = new Counts { Hits = h, ThrowAt = -1 };
            pool.For(10, &Count, &counts); // runs inline: the pool is busy
        }
        if (hits.Any(x => x != 1)) throw new InvalidOperationException("nested job incomplete");
    }

    [Test]
    public void NestedCallsRunInline()
    {
        using var pool = new WorkerPool(2);
        var handle = GCHandle.Alloc(pool);
        try
        {
            pool.For(8, &Nested, (void*)GCHandle.ToIntPtr(handle));
        }
        finally
        {
            handle.Free();
        }
    }

    [Test]
    public void DisposeStopsTheWorkers()
    {
        var pool = new WorkerPool(3);
        pool.Dispose();
        pool.Dispose();
        var counts = new Counts();
        Counts* state = &counts;
        Assert.Throws<ObjectDisposedException>(() => pool.For(10, &Count, state));
    }
}
