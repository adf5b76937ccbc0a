using System.Globalization;
using eMoE.Kernels;

namespace eMoE.GpuCheck.Checks;

/// <summary>One comparison of a kernel with its plain C# reference, on random inputs.</summary>
/// <param name="Name">What it checks, with its parameters (a test case name).</param>
/// <param name="Kernels">The kernel entry points it launches (methods of <see cref="Compute.Ilgpu.KernelSet.EntryPoints"/>).</param>
/// <param name="Run">Runs it on a rig; returns the worst error seen (|actual - reference| / max(1, |reference|), 0 where results must be equal); throws <see cref="CheckFailedException"/> on a mismatch.</param>
internal sealed record KernelCase(string Name, string[] Kernels, Func<KernelRig, double> Run)
{
    /// <summary>The allowed error the case compares with (0: results must be equal).</summary>
    public float Tolerance { get; init; } = KernelChecks.Tolerance;

    public override string ToString() => Name;
}

/// <summary>A kernel or engine result that differs from its reference by more than the tolerance.</summary>
internal sealed class CheckFailedException(string message) : Exception(message);

/// <summary>
/// Every kernel of the engine's <see cref="Compute.Ilgpu.KernelSet"/> against its plain C# reference
/// (the <c>*Reference</c> methods beside each kernel), on seeded random inputs. The unit tests
/// (tests/eMoE.Tests/Kernels/KernelReferenceTests.cs) run every case on the CPU accelerator in both
/// launch shapes; the GPU check runs the same cases on CUDA with the engine's launch shapes.
/// </summary>
internal static class KernelChecks
{
    /// <summary>Allowed error: <c>Tolerance * max(1, |reference|)</c> per element.</summary>
    public const float Tolerance = 1e-4f;

    /// <summary>Every case, in a fixed order.</summary>
    public static IReadOnlyList<KernelCase> Cases { get; } = BuildCases();

    /// <summary>The case called <paramref name="name"/>.</summary>
    public static KernelCase Case(string name) => Cases.FirstOrDefault(c => c.Name == name) ?? throw new ArgumentException($"no kernel check called '{name}'");

    private static KernelCase[] BuildCases()
    {
        var cases = new List<KernelCase>();
        foreach (int type in new[] { WeightType.F32, WeightType.BF16 })
            cases.Add(new($"Embedding gather, {TypeName(type)}", [nameof(EmbeddingKernels.Gather)], rig => EmbeddingGather(rig, type)) { Tolerance = 0 });
        foreach (int size in new[] { 7, 64 })
            cases.Add(new($"RmsNorm, size {size}", [nameof(NormKernels.RmsNorm)], rig => RmsNorm(rig, size)));
        foreach (int type in new[] { WeightType.F32, WeightType.F16, WeightType.BF16 })
        {
            foreach (bool accumulate in new[] { false, true })
            {
                foreach (int tokens in new[] { 1, 3, 7, 10 })
                    cases.Add(new($"MatMul, {TypeName(type)}, {(accumulate ? "accumulate" : "overwrite")}, {tokens} token(s)", [nameof(MatMulKernels.MatMul)], rig => MatMul(rig, type, accumulate, tokens)));
            }
        }
        cases.Add(new("RoPE and KV-cache write, ragged tokens", [nameof(RopeKernels.RopeAndCache)], RopeRotatesAndFillsCacheRowsOfRaggedTokens));
        cases.Add(new("Causal attention over paged blocks of several sequences", [nameof(AttentionKernels.CausalAttention)], CausalAttentionOverPagedBlocksOfSeveralSequences));
        foreach (bool renormalize in new[] { false, true })
            cases.Add(new($"Router softmax top-k and grouping, {(renormalize ? "renormalized" : "not renormalized")}", [nameof(RouterKernels.SoftmaxTopK), nameof(RouterKernels.GroupByExpert)], rig => RouterTopKAndGrouping(rig, renormalize)));
        foreach (int type in new[] { WeightType.F32, WeightType.BF16 })
        {
            cases.Add(new($"Expert FFN over grouped tokens, two passes, {TypeName(type)}", [nameof(ExpertKernels.GateUp), nameof(ExpertKernels.Down), nameof(ExpertKernels.Combine)], rig => ExpertFfnOverGroupedTokens(rig, type, SmallRouting)));
            cases.Add(new($"Expert FFN over grouped tokens, 8-wide tiles, two passes, {TypeName(type)}", [nameof(ExpertKernels.GateUp), nameof(ExpertKernels.Down), nameof(ExpertKernels.Combine)], rig => ExpertFfnOverGroupedTokens(rig, type, WideRouting)));
        }
        cases.Add(new("Sampling, every setting row by row", [nameof(SamplingKernels.Sample)], SamplingMatchesReferenceRowByRow));
        cases.Add(new("Next-token NLL", [nameof(LossKernels.NextTokenNll)], NextTokenNll));
        return [.. cases];
    }

    private static string TypeName(int type) => type switch
    {
        WeightType.F32 => "F32",
        WeightType.F16 => "F16",
        WeightType.BF16 => "BF16",
        _ => type.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// Compares element by element; returns the worst |actual - expected| / max(1, |expected|).
    /// </summary>
    /// <exception cref="CheckFailedException">A length differs, or an element is off by more than tolerance * max(1, |expected|).</exception>
    public static double AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, float tolerance = Tolerance, string what = "")
    {
        string prefix = what.Length == 0 ? "" : what + ": ";
        if (actual.Length != expected.Length) throw new CheckFailedException($"{prefix}{actual.Length} elements, the reference has {expected.Length}");
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            float scale = Math.Max(1, Math.Abs(expected[i]));
            float error = Math.Abs(actual[i] - expected[i]);
            if (!(error <= tolerance * scale))
            {
                throw new CheckFailedException(string.Create(CultureInfo.InvariantCulture,
                    $"{prefix}element {i}: {actual[i]:R}, the reference {expected[i]:R} (allowed difference {tolerance * scale:G3})"));
            }
            worst = Math.Max(worst, error / scale);
        }
        return worst;
    }

    /// <exception cref="CheckFailedException">The sequences differ.</exception>
    public static void AssertEqual<T>(IReadOnlyList<T> actual, IReadOnlyList<T> expected, string what) where T : IEquatable<T>
    {
        if (actual.Count != expected.Count) throw new CheckFailedException($"{what}: {actual.Count} values, the reference has {expected.Count}");
        for (int i = 0; i < expected.Count; i++)
        {
            if (!actual[i].Equals(expected[i])) throw new CheckFailedException($"{what}: element {i} is {actual[i]}, the reference {expected[i]}");
        }
    }

    public static double EmbeddingGather(KernelRig rig, int type)
    {
        const int vocab = 50, hidden = 24;
        var table = KernelRig.Random(1, vocab * hidden);
        int[] tokens = [3, 49, 0, 3];
        var x = rig.Zeros<float>(tokens.Length * hidden);
        rig.Kernels.Embedding(rig.Stream, rig.Launch(tokens.Length * hidden), rig.Upload(tokens), rig.Weights(table, type), x, tokens.Length, hidden);
        var expected = new float[tokens.Length * hidden];
        EmbeddingKernels.GatherReference(tokens, KernelRig.Rounded(table, type), expected, hidden);
        return AssertClose(rig.Read(x), expected, 0);
    }

    public static double RmsNorm(KernelRig rig, int size)
    {
        const int rows = 5;
        int lanes = rig.Lanes;
        var input = KernelRig.Random(2, rows * size, 3f);
        var weight = KernelRig.Random(3, size);
        var output = rig.Zeros<float>(rows * size);
        rig.Kernels.RmsNorm(rig.Stream, rig.Launch(rows, lanes), rig.Upload(input), rig.Weights(weight, WeightType.F32), output, rows, size, 1e-5f, lanes);
        var expected = new float[rows * size];
        NormKernels.RmsNormReference(input, weight, expected, size, 1e-5f);
        return AssertClose(rig.Read(output), expected);
    }

    /// <summary>
    /// 37 output rows (the last row tile short), and 1 token (a pair tile), 3 (a 4-wide tile), 7 (a
    /// short 8-wide tile) or 10 (a whole 8-wide tile and a pair).
    /// </summary>
    public static double MatMul(KernelRig rig, int type, bool accumulate, int tokens)
    {
        const int n = 37, k = 44; // K a multiple of 4: rows are read four values at a time
        int lanes = rig.Lanes;
        var x = KernelRig.Random(4, tokens * k);
        var w = KernelRig.Random(5, n * k);
        var y0 = KernelRig.Random(6, tokens * n);
        var y = rig.Upload((float[])y0.Clone());
        rig.Kernels.MatMul(rig.Stream, rig.Launch(tokens * n, lanes), new MatMulArgs
        {
            X = rig.Upload(x), W = rig.Weights(w, type), Y = y, Tokens = tokens, N = n, K = k, Accumulate = accumulate ? 1 : 0,
        }, lanes);
        var expected = (float[])y0.Clone();
        MatMulKernels.MatMulReference(x, KernelRig.Rounded(w, type), expected, tokens, n, k, accumulate);
        return AssertClose(rig.Read(y), expected);
    }

    /// <summary>Three tokens of two sequences: their own positions, written to scattered pool rows.</summary>
    public static double RopeRotatesAndFillsCacheRowsOfRaggedTokens(KernelRig rig)
    {
        const int tokens = 3, heads = 4, kvHeads = 2, d = 8, maxSeq = 10, rows = 12;
        int[] positions = [4, 5, 0];
        int[] cacheRows = [9, 2, 6];
        var (cos, sin) = RopeKernels.Tables(maxSeq, d, 10000f);
        var q = KernelRig.Random(7, tokens * heads * d);
        var k = KernelRig.Random(8, tokens * kvHeads * d);
        var v = KernelRig.Random(9, tokens * kvHeads * d);
        var args = new RopeArgs
        {
            Q = rig.Upload((float[])q.Clone()), K = rig.Upload((float[])k.Clone()), V = rig.Upload(v),
            KCache = rig.Zeros<float>(rows * kvHeads * d), VCache = rig.Zeros<float>(rows * kvHeads * d),
            Positions = rig.Upload(positions), CacheRows = rig.Upload(cacheRows),
            Cos = rig.Upload(cos), Sin = rig.Upload(sin), Tokens = tokens, Heads = heads, KvHeads = kvHeads, HeadDim = d,
        };
        rig.Kernels.RopeAndCache(rig.Stream, rig.Launch(tokens * (heads + kvHeads) * d / 2), args);

        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++) RopeKernels.RotateReference(q.AsSpan((t * heads + h) * d, d), positions[t], cos, sin);
            for (int h = 0; h < kvHeads; h++) RopeKernels.RotateReference(k.AsSpan((t * kvHeads + h) * d, d), positions[t], cos, sin);
        }
        double worst = AssertClose(rig.Read(args.Q), q, what: "rotated q");
        var kCache = rig.Read(args.KCache);
        var vCache = rig.Read(args.VCache);
        int kv = kvHeads * d;
        for (int t = 0; t < tokens; t++)
        {
            worst = Math.Max(worst, AssertClose(kCache.AsSpan(cacheRows[t] * kv, kv), k.AsSpan(t * kv, kv), what: $"k cache row {cacheRows[t]}"));
            worst = Math.Max(worst, AssertClose(vCache.AsSpan(cacheRows[t] * kv, kv), v.AsSpan(t * kv, kv), what: $"v cache row {cacheRows[t]}"));
        }
        for (int row = 0; row < rows; row++)
        {
            if (!cacheRows.Contains(row) && kCache.AsSpan(row * kv, kv).ContainsAnyExcept(0f))
                throw new CheckFailedException($"k cache row {row} was written, but no token maps to it");
        }
        return worst;
    }

    /// <summary>
    /// Sequence 0 holds 7 positions in blocks [5, 1] (block size 4); sequence 1 holds 3 in block [3].
    /// The step: two prefill tokens of sequence 0 (positions 5, 6) and one decode token of sequence 1 (position 2).
    /// </summary>
    public static double CausalAttentionOverPagedBlocksOfSeveralSequences(KernelRig rig)
    {
        const int heads = 4, kvHeads = 2, d = 8, maxSeq = 8, blockSize = 4, maxBlocks = 2, blocks = 6;
        int lanes = rig.Lanes;
        int[] positions = [5, 6, 2];
        int[] sequenceOf = [0, 0, 1];
        int[] blockTables = [5, 1, 3, 0];
        int tokens = positions.Length;
        var q = KernelRig.Random(10, tokens * heads * d);
        var kPool = KernelRig.Random(11, blocks * blockSize * kvHeads * d);
        var vPool = KernelRig.Random(12, blocks * blockSize * kvHeads * d);
        var output = rig.Zeros<float>(tokens * heads * d);
        rig.Kernels.Attention(rig.Stream, rig.Launch(tokens * heads, lanes), new AttentionArgs
        {
            Q = rig.Upload(q), KCache = rig.Upload(kPool), VCache = rig.Upload(vPool),
            Positions = rig.Upload(positions), SequenceOf = rig.Upload(sequenceOf), BlockTables = rig.Upload(blockTables),
            Scores = rig.Zeros<float>(tokens * heads * maxSeq), Output = output, Tokens = tokens,
            Heads = heads, KvHeads = kvHeads, HeadDim = d, MaxSeq = maxSeq, BlockSize = blockSize, MaxBlocks = maxBlocks,
        }, lanes);

        var expected = AttentionKernels.PagedAttentionReference(q, kPool, vPool, positions, sequenceOf, blockTables, heads, kvHeads, d, blockSize, maxBlocks);
        return AssertClose(rig.Read(output), expected);
    }

    /// <summary>Softmax top-k per token, then grouping: a stable sort of assignments by expert, offsets = exclusive prefix counts.</summary>
    public static double RouterTopKAndGrouping(KernelRig rig, bool renormalize)
    {
        const int tokens = 6, experts = 8, topK = 3;
        var logits = KernelRig.Random(13, tokens * experts, 4f);
        var ids = rig.Zeros<int>(tokens * topK);
        var weights = rig.Zeros<float>(tokens * topK);
        rig.Kernels.SoftmaxTopK(rig.Stream, rig.Launch(tokens), new RouterArgs
        {
            Logits = rig.Upload(logits), ExpertIds = ids, ExpertWeights = weights, Tokens = tokens,
            Experts = experts, TopK = topK, Renormalize = renormalize ? 1 : 0,
        });
        var offsets = rig.Zeros<int>(experts + 1);
        var order = rig.Zeros<int>(tokens * topK);
        rig.Kernels.GroupByExpert(rig.Stream, rig.Launch(experts), new GroupArgs
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
        var actualIds = rig.Read(ids);
        AssertEqual(actualIds, expectedIds, "expert ids");
        double worst = AssertClose(rig.Read(weights), expectedWeights, what: "expert weights");

        var expectedOrder = Enumerable.Range(0, tokens * topK).OrderBy(a => actualIds[a]).ToArray();
        var expectedOffsets = Enumerable.Range(0, experts + 1).Select(e => actualIds.Count(id => id < e)).ToArray();
        AssertEqual(rig.Read(order), expectedOrder, "grouped order");
        AssertEqual(rig.Read(offsets), expectedOffsets, "expert offsets");
        return worst;
    }

    /// <summary>
    /// 8 tokens x top-2 over 4 experts holding 7, 2, 6 and 1 assignments: tiles of 7, 2, 6 and 1
    /// (8-wide short, pair, 8-wide short, single).
    /// </summary>
    private static readonly int[] SmallRouting = [0, 1, 0, 2, 2, 0, 0, 2, 2, 0, 3, 2, 0, 1, 2, 0];

    /// <summary>
    /// 12 tokens x top-2 over 4 experts holding 11, 2, 7 and 4 assignments: a whole 8-wide tile and
    /// a short 4-wide one (3), a pair, a short 8-wide tile (7) and a whole 4-wide one.
    /// </summary>
    private static readonly int[] WideRouting = [0, 1, 0, 1, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 3, 0, 3, 0, 3, 3, 2];

    /// <summary>
    /// Gate/up, down and combine for top-2 <paramref name="ids"/> (two per token) over 4 experts in
    /// permuted slots, in two passes as a small expert cache runs them: experts {0, 2} first, then
    /// {1, 3}; router weights 0.7 / 0.3, 0.6 / 0.4, ... per token.
    /// </summary>
    public static double ExpertFfnOverGroupedTokens(KernelRig rig, int type, int[] ids)
    {
        const int topK = 2, experts = 4, h = 16, inter = 12;
        int tokens = ids.Length / topK;
        int lanes = rig.Lanes;
        long slotSize = 3L * inter * h;
        var slab = KernelRig.Random(14, experts * slotSize, 0.5f);
        var x = KernelRig.Random(15, tokens * h);
        var weights = new float[tokens * topK];
        for (int t = 0; t < tokens; t++)
        {
            weights[t * topK] = 0.55f + 0.05f * (t % 8);
            weights[t * topK + 1] = 1 - weights[t * topK];
        }
        int[] slotOfExpert = [1, 3, 0, 2]; // experts live in permuted slots, as in a cache
        var order = Enumerable.Range(0, tokens * topK).OrderBy(a => ids[a]).ToArray();
        var offsets = Enumerable.Range(0, experts + 1).Select(e => ids.Count(id => id < e)).ToArray();
        var residual0 = KernelRig.Random(16, tokens * h);
        var args = new ExpertArgs
        {
            X = rig.Upload(x), ExpertIds = rig.Upload(ids), ExpertWeights = rig.Upload(weights), Order = rig.Upload(order),
            Offsets = rig.Upload(offsets), SlotOfExpert = rig.Upload(slotOfExpert), Slab = rig.Weights(slab, type),
            Hidden = rig.Zeros<float>(tokens * topK * inter), Output = rig.Zeros<float>(tokens * topK * h),
            Residual = rig.Upload((float[])residual0.Clone()), Tokens = tokens, TopK = topK, HiddenSize = h, Intermediate = inter, Experts = experts,
        };
        var passTable = rig.Upload(new[] { slotOfExpert[0], -1, slotOfExpert[2], -1 });
        foreach (var table in new[] { passTable, rig.Upload(new[] { -1, slotOfExpert[1], -1, slotOfExpert[3] }) })
        {
            var pass = args with { SlotOfExpert = table };
            rig.Kernels.ExpertGateUp(rig.Stream, rig.Launch(ExpertKernels.GateUpItems(tokens, topK, experts, inter), lanes), pass, lanes);
            rig.Kernels.ExpertDown(rig.Stream, rig.Launch(ExpertKernels.DownItems(tokens, topK, experts, h), lanes), pass, lanes);
        }
        rig.Kernels.ExpertCombine(rig.Stream, rig.Launch(tokens * h), args);

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
        return AssertClose(rig.Read(args.Residual), expected);
    }

    /// <summary>Every setting on its own row of one launch, each row with its own logits and draw.</summary>
    public static double SamplingMatchesReferenceRowByRow(KernelRig rig)
    {
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
        var tokens = rig.Zeros<int>(rows);
        rig.Kernels.Sample(rig.Stream, rig.Launch(rows), new SampleArgs
        {
            Logits = rig.Upload(logits), Tokens = tokens, Rows = rows, Vocab = vocab,
            Temperature = rig.Upload(rowSettings.Select(s => s.Temperature).ToArray()), TopK = rig.Upload(rowSettings.Select(s => s.TopK).ToArray()),
            TopP = rig.Upload(rowSettings.Select(s => s.TopP).ToArray()), Uniform = rig.Upload(uniform),
        });
        var sampled = rig.Read(tokens);
        for (int r = 0; r < rows; r++)
        {
            var (temperature, topK, topP) = rowSettings[r];
            int expected = SamplingKernels.SampleReference(logits.AsSpan(r * vocab, vocab), temperature, topK, topP, uniform[r]);
            if (sampled[r] != expected)
            {
                throw new CheckFailedException(string.Create(CultureInfo.InvariantCulture,
                    $"row {r}: T={temperature} k={topK} p={topP} u={uniform[r]}: sampled {sampled[r]}, the reference {expected}"));
            }
        }
        int tie = SamplingKernels.SampleReference(logits.AsSpan(0, vocab), 0, 0, 1, 0.5f);
        if (tie != 10) throw new CheckFailedException($"the reference's greedy pick of a tie is {tie}, not the lowest id 10");
        return 0;
    }

    public static double NextTokenNll(KernelRig rig)
    {
        const int count = 5, vocab = 40;
        var logits = KernelRig.Random(18, count * vocab, 6f);
        int[] targets = [5, 39, 0, 7, 22];
        var nll = rig.Zeros<float>(count);
        rig.Kernels.NextTokenNll(rig.Stream, rig.Launch(count), rig.Upload(logits), rig.Upload(targets), nll, count, vocab);
        var expected = Enumerable.Range(0, count).Select(t => (float)LossKernels.NllReference(logits.AsSpan(t * vocab, vocab), targets[t])).ToArray();
        return AssertClose(rig.Read(nll), expected);
    }
}
