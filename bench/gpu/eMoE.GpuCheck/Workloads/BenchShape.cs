namespace eMoE.GpuCheck.Workloads;

/// <summary>The model shapes the kernel benchmarks run at.</summary>
public enum ShapeName
{
    /// <summary>The shipped tiny model (weights/tiny-mixtral): F32 weights.</summary>
    Shipped,
    /// <summary>Mixtral-8x7B: BF16 weights, as it ships; attention at a 1024-position context.</summary>
    Mixtral,
}

/// <summary>Sizes of one model, as the decode step (T = 1) sees them.</summary>
internal sealed record BenchShape(
    int Vocab, int Hidden, int Intermediate, int Heads, int KvHeads, int HeadDim,
    int Experts, int TopK, int Context, int WeightType)
{
    /// <summary>Query width: heads x head_dim.</summary>
    public int QDim => Heads * HeadDim;

    /// <summary>Key/value width: kv heads x head_dim.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Bytes of one weight element.</summary>
    public int WeightBytes => WeightType == Kernels.WeightType.F32 ? 4 : 2;

    /// <summary>Elements of one expert slot: w1 gate, w3 up (I x H each), w2 down (H x I).</summary>
    public long ExpertSlotElements => 3L * Intermediate * Hidden;

    /// <summary>The shapes of <paramref name="name"/>.</summary>
    public static BenchShape Of(ShapeName name) => name switch
    {
        ShapeName.Shipped => new(Vocab: 4096, Hidden: 128, Intermediate: 256, Heads: 4, KvHeads: 2, HeadDim: 32,
            Experts: 16, TopK: 2, Context: 256, Kernels.WeightType.F32),
        ShapeName.Mixtral => new(Vocab: 32000, Hidden: 4096, Intermediate: 14336, Heads: 32, KvHeads: 8, HeadDim: 128,
            Experts: 8, TopK: 2, Context: 1024, Kernels.WeightType.BF16),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };
}
