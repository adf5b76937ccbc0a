using eMoE.Kernels;
using NUnit.Framework;
using Half = System.Half;

namespace eMoE.Tests.Kernels;

/// <summary>Each kernel on the CPU accelerator against its plain C# reference, in both launch shapes.</summary>
[TestFixtureSource(typeof(KernelRig), nameof(KernelRig.LaneShapes))]
public sealed class KernelReferenceTests(int lanes)
{
    private KernelRig _rig = null!;
    private const float Tolerance = 1e-4f;

    [OneTimeSetUp] public void Open() => _rig = new KernelRig(lanes);
    [OneTimeTearDown] public void Close() => _rig.Dispose();

    private static void AssertClose(float[] actual, float[] expected, float tolerance = Tolerance)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(tolerance * Math.Max(1, Math.Abs(expected[i]))), $"element {i}");
    }

    [Test]
    public void EmbeddingGather([Values(WeightType.F32, WeightType.BF16)] int type)
    {
        const int vocab = 50, hidden = 24;
        var table = KernelRig.Random(1, vocab * hidden);
        int[] tokens = [3, 49, 0, 3];
        var x = _rig.Zeros<float>(tokens.Length * hidden);
        _rig.Kernels.Embedding(_rig.Stream, _rig.Launch(tokens.Length * hidden), _rig.Upload(tokens), _rig.Weights(table, type), x, tokens.Length, hidden);
        var expected = new float[tokens.Length * hidden];
        EmbeddingKernels.GatherReference(tokens, KernelRig.Rounded(table, type), expected, hidden);
        AssertClose(_rig.Read(x), expected, 0);
    }

    [Test]
    public void RmsNorm([Values(7, 64)] int size)
    {
        const int rows = 5;
        var input = KernelRig.Random(2, rows * size, 3f);
        var weight = KernelRig.Random(3, size);
        var output = _rig.Zeros<float>(rows * size);
        _rig.Kernels.RmsNorm(_rig.Stream, _rig.Launch(rows, lanes), _rig.Upload(input), _rig.Weights(weight, WeightType.F32), output, rows, size, 1e-5f, lanes);
        var expected = new float[rows * size];
        NormKernels.RmsNormReference(input, weight, expected, size, 1e-5f);
        AssertClose(_rig.Read(output), expected);
    }

    [Test]
    public void MatMul([Values(WeightType.F32, WeightType.F16, WeightType.BF16)] int type, [Values(false, true)] bool accumulate,
        [Values(1, 6)] int tokens)
    {
        // 6 tokens: a whole tile of 4 and a short one of 2.
        const int n = 37, k = 45;
        var x = KernelRig.Random(4, tokens * k);
        var w = KernelRig.Random(5, n * k);
        var y0 = KernelRig.Random(6, tokens * n);
        var y = _rig.Upload((float[])y0.Clone());
        _rig.Kernels.MatMul(_rig.Stream, _rig.Launch(tokens * n, lanes), new MatMulArgs
        {
            X = _rig.Upload(x), W = _rig.Weights(w, type), Y = y, Tokens = tokens, N = n, K = k, Accumulate = accumulate ? 1 : 0,
        }, lanes);
        var expected = (float[])y0.Clone();
        MatMulKernels.MatMulReference(x, KernelRig.Rounded(w, type), expected, tokens, n, k, accumulate);
        AssertClose(_rig.Read(y), expected);
    }

    [Test]
    public void RopeRotatesAndFillsCacheRowsOfRaggedTokens()
    {
        // Three tokens of two sequences: their own positions, written to scattered pool rows.
        const int tokens = 3, heads = 4, kvHeads = 2, d = 8, maxSeq = 10, rows = 12;
        int[] positions = [4, 5, 0];
        int[] cacheRows = [9, 2, 6];
        var (cos, sin) = RopeKernels.Tables(maxSeq, d, 10000f);
        var q = KernelRig.Random(7, tokens * heads * d);
        var k = KernelRig.Random(8, tokens * kvHeads * d);
        var v = KernelRig.Random(9, tokens * kvHeads * d);
        var args = new RopeArgs
        {
            Q = _rig.Upload((float[])q.Clone()), K = _rig.Upload((float[])k.Clone()), V = _rig.Upload(v),
            KCache = _rig.Zeros<float>(rows * kvHeads * d), VCache = _rig.Zeros<float>(rows * kvHeads * d),
            Positions = _rig.Upload(positions), CacheRows = _rig.Upload(cacheRows),
            Cos = _rig.Upload(cos), Sin = _rig.Upload(sin), Tokens = tokens, Heads = heads, KvHeads = kvHeads, HeadDim = d,
        };
        _rig.Kernels.RopeAndCache(_rig.Stream, _rig.Launch(tokens * (heads + kvHeads) * d / 2), args);

        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++) RopeKernels.RotateReference(q.AsSpan((t * heads + h) * d, d), positions[t], cos, sin);
            for (int h = 0; h < kvHeads; h++) RopeKernels.RotateReference(k.AsSpan((t * kvHeads + h) * d, d), positions[t], cos, sin);
        }
        AssertClose(_rig.Read(args.Q), q);
        var kCache = _rig.Read(args.KCache);
        var vCache = _rig.Read(args.VCache);
        int kv = kvHeads * d;
        for (int t = 0; t < tokens; t++)
        {
            AssertClose(kCache[(cacheRows[t] * kv)..((cacheRows[t] + 1) * kv)], k[(t * kv)..((t + 1) * kv)]);
            AssertClose(vCache[(cacheRows[t] * kv)..((cacheRows[t] + 1) * kv)], v[(t * kv)..((t + 1) * kv)]);
        }
        for (int row = 0; row < rows; row++)
        {
            if (!cacheRows.Contains(row)) Assert.That(kCache[(row * kv)..((row + 1) * kv)], Is.All.EqualTo(0f), $"row {row} untouched");
        }
    }

    [Test]
    public void CausalAttentionOverPagedBlocksOfSeveralSequences()
    {
        // Sequence 0 holds 7 positions in blocks [5, 1] (block size 4); sequence 1 holds 3 in block [3].
        // The step: two prefill tokens of sequence 0 (positions 5, 6) and one decode token of sequence 1 (position 2).
        const int heads = 4, kvHeads = 2, d = 8, maxSeq = 8, blockSize = 4, maxBlocks = 2, blocks = 6;
        int[] positions = [5, 6, 2];
        int[] sequenceOf = [0, 0, 1];
        int[] blockTables = [5, 1, 3, 0];
        int tokens = positions.Length;
        var q = KernelRig.Random(10, tokens * heads * d);
        var kPool = KernelRig.Random(11, blocks * blockSize * kvHeads * d);
        var vPool = KernelRig.Random(12, blocks * blockSize * kvHeads * d);
        var output = _rig.Zeros<float>(tokens * heads * d);
        _rig.Kernels.Attention(_rig.Stream, _rig.Launch(tokens * heads, lanes), new AttentionArgs
        {
            Q = _rig.Upload(q), KCache = _rig.Upload(kPool), VCache = _rig.Upload(vPool),
            Positions = _rig.Upload(positions), SequenceOf = _rig.Upload(sequenceOf), BlockTables = _rig.Upload(blockTables),
            Scores = _rig.Zeros<float>(tokens * heads * maxSeq), Output = output, Tokens = tokens,
            Heads = heads, KvHeads = kvHeads, HeadDim = d, MaxSeq = maxSeq, BlockSize = blockSize, MaxBlocks = maxBlocks,
        }, lanes);

        var expected = new float[tokens * heads * d];
        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                // Gather the token's own sequence in position order, as an unpaged cache would hold it.
                int kvHead = h / (heads / kvHeads), last = positions[t];
                var keys = new float[(last + 1) * d];
                var values = new float[(last + 1) * d];
                for (int p = 0; p <= last; p++)
                {
                    int row = blockTables[sequenceOf[t] * maxBlocks + p / blockSize] * blockSize + p % blockSize;
                    Array.Copy(kPool, (row * kvHeads + kvHead) * d, keys, p * d, d);
                    Array.Copy(vPool, (row * kvHeads + kvHead) * d, values, p * d, d);
                }
                AttentionKernels.AttendReference(q.AsSpan((t * heads + h) * d, d), keys, values, last, expected.AsSpan((t * heads + h) * d, d));
            }
        }
        AssertClose(_rig.Read(output), expected);
    }

    [Test]
    public void RouterTopKAndGrouping([Values(false, true)] bool renormalize)
    {
        const int tokens = 6, experts = 8, topK = 3;
        var logits = KernelRig.Random(13, tokens * experts, 4f);
        var ids = _rig.Zeros<int>(tokens * topK);
        var weights = _rig.Zeros<float>(tokens * topK);
        _rig.Kernels.SoftmaxTopK(_rig.Stream, _rig.Launch(tokens), new RouterArgs
        {
            Logits = _rig.Upload(logits), ExpertIds = ids, ExpertWeights = weights, Tokens = tokens,
            Experts = experts, TopK = topK, Renormalize = renormalize ? 1 : 0,
        });
        var offsets = _rig.Zeros<int>(experts + 1);
        var order = _rig.Zeros<int>(tokens * topK);
        _rig.Kernels.GroupByExpert(_rig.Stream, _rig.Launch(experts), new GroupArgs
        {
            ExpertIds = ids, Offsets = offsets, Order = order, Assignments = tokens * topK, Experts = experts,
        });

        var expectedIds = new int[tokens * topK];
        var expectedWeights = new float[tokens * topK];
        for (int t = 0; t < tokens; t++)
        {
            RouterKernels.SoftmaxTopKReference(logits.AsSpan(t * experts, experts), topK, renormalize,
                expectedIds.AsSpan(t * topK, topK), expectedWeights.AsSpan(t * topK, topK));
        }
        var actualIds = _rig.Read(ids);
        Assert.That(actualIds, Is.EqualTo(expectedIds));
        AssertClose(_rig.Read(weights), expectedWeights);

        // Grouping: a stable sort of assignments by expert, offsets = exclusive prefix counts.
        var expectedOrder = Enumerable.Range(0, tokens * topK).OrderBy(a => actualIds[a]).ToArray();
        var expectedOffsets = Enumerable.Range(0, experts + 1).Select(e => actualIds.Count(id => id < e)).ToArray();
        Assert.That(_rig.Read(order), Is.EqualTo(expectedOrder));
        Assert.That(_rig.Read(offsets), Is.EqualTo(expectedOffsets));
    }

    [Test]
    public void ExpertFfnOverGroupedTokens([Values(WeightType.F32, WeightType.BF16)] int type)
    {
        const int tokens = 4, topK = 2, experts = 3, h = 16, inter = 12;
        long slotSize = 3L * inter * h;
        var slab = KernelRig.Random(14, experts * slotSize, 0.5f);
        var x = KernelRig.Random(15, tokens * h);
        int[] ids = [2, 0, 0, 1, 2, 1, 0, 2];
        float[] weights = [0.7f, 0.3f, 0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f];
        int[] slotOfExpert = [1, 2, 0]; // experts live in permuted slots, as in a cache
        var order = Enumerable.Range(0, tokens * topK).OrderBy(a => ids[a]).ToArray();
        var residual0 = KernelRig.Random(16, tokens * h);
        var args = new ExpertArgs
        {
            X = _rig.Upload(x), ExpertIds = _rig.Upload(ids), ExpertWeights = _rig.Upload(weights), Order = _rig.Upload(order),
            SlotOfExpert = _rig.Upload(slotOfExpert), Slab = _rig.Weights(slab, type), Hidden = _rig.Zeros<float>(tokens * topK * inter),
            Output = _rig.Zeros<float>(tokens * topK * h), Residual = _rig.Upload((float[])residual0.Clone()), Tokens = tokens, TopK = topK, HiddenSize = h, Intermediate = inter,
        };
        // Two passes, as a small expert cache runs them: experts {0, 2} first, then expert 1.
        var passTable = _rig.Upload(new[] { slotOfExpert[0], -1, slotOfExpert[2] });
        foreach (var table in new[] { passTable, _rig.Upload(new[] { -1, slotOfExpert[1], -1 }) })
        {
            var pass = args with { SlotOfExpert = table };
            _rig.Kernels.ExpertGateUp(_rig.Stream, _rig.Launch(tokens * topK * inter, lanes), pass, lanes);
            _rig.Kernels.ExpertDown(_rig.Stream, _rig.Launch(tokens * topK * h, lanes), pass, lanes);
        }
        _rig.Kernels.ExpertCombine(_rig.Stream, _rig.Launch(tokens * h), args);

        var rounded = KernelRig.Rounded(slab, type);
        var expected = (float[])residual0.Clone();
        var output = new float[h];
        for (int a = 0; a < tokens * topK; a++)
        {
            // Reference order: per token, experts in rank order.
            int t = a / topK;
            var slot = rounded.AsSpan((int)(slotOfExpert[ids[a]] * slotSize), (int)slotSize);
            ExpertKernels.ExpertReference(x.AsSpan(t * h, h), slot[..(inter * h)], slot.Slice(inter * h, inter * h), slot[(2 * inter * h)..], output);
            for (int r = 0; r < h; r++) expected[t * h + r] += weights[a] * output[r];
        }
        AssertClose(_rig.Read(args.Residual), expected);
    }

    [Test]
    public void SamplingMatchesReferenceRowByRow()
    {
        // Every setting on its own row of one launch, each row with its own logits and draw.
        const int vocab = 300;
        (float Temperature, int TopK, float TopP)[] settings = [(0, 0, 1), (1, 0, 1), (0.7f, 40, 1), (1.2f, 0, 0.9f), (0.8f, 50, 0.5f), (1, 1, 1)];
        float[] draws = [0f, 0.13f, 0.5f, 0.87f, 0.9999f];
        int rows = settings.Length * draws.Length;
        var logits = new float[rows * vocab];
        for (int r = 0; r < rows; r++)
        {
            var row = KernelRig.Random(17 + r % 3, vocab, 5f);
            row[10] = row[20] = row.Max() + 1; // a tie at the top: lowest id wins greedy
            row.CopyTo(logits, r * vocab);
        }
        var rowSettings = Enumerable.Range(0, rows).Select(r => settings[r / draws.Length]).ToArray();
        var uniform = Enumerable.Range(0, rows).Select(r => draws[r % draws.Length]).ToArray();
        var tokens = _rig.Zeros<int>(rows);
        _rig.Kernels.Sample(_rig.Stream, _rig.Launch(rows), new SampleArgs
        {
            Logits = _rig.Upload(logits), Tokens = tokens, Rows = rows, Vocab = vocab,
            Temperature = _rig.Upload(rowSettings.Select(s => s.Temperature).ToArray()), TopK = _rig.Upload(rowSettings.Select(s => s.TopK).ToArray()),
            TopP = _rig.Upload(rowSettings.Select(s => s.TopP).ToArray()), Uniform = _rig.Upload(uniform),
        });
        var sampled = _rig.Read(tokens);
        for (int r = 0; r < rows; r++)
        {
            var (temperature, topK, topP) = rowSettings[r];
            int expected = SamplingKernels.SampleReference(logits.AsSpan(r * vocab, vocab), temperature, topK, topP, uniform[r]);
            Assert.That(sampled[r], Is.EqualTo(expected), $"row {r}: T={temperature} k={topK} p={topP} u={uniform[r]}");
        }
        Assert.That(SamplingKernels.SampleReference(logits.AsSpan(0, vocab), 0, 0, 1, 0.5f), Is.EqualTo(10));
    }

    [Test]
    public void NextTokenNll()
    {
        const int count = 5, vocab = 40;
        var logits = KernelRig.Random(18, count * vocab, 6f);
        int[] targets = [5, 39, 0, 7, 22];
        var nll = _rig.Zeros<float>(count);
        _rig.Kernels.NextTokenNll(_rig.Stream, _rig.Launch(count), _rig.Upload(logits), _rig.Upload(targets), nll, count, vocab);
        var expected = Enumerable.Range(0, count).Select(t => (float)LossKernels.NllReference(logits.AsSpan(t * vocab, vocab), targets[t])).ToArray();
        AssertClose(_rig.Read(nll), expected);
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
