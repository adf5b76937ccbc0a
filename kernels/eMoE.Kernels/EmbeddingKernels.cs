using System.Runtime.CompilerServices;
using ILGPU;

namespace eMoE.Kernels;

/// <summary>Token embedding lookup.</summary>
public static class EmbeddingKernels
{
    /// <summary>x[t, :] = table[tokens[t], :] for t in 0..tokens-1 (table [V, H], x [T, H]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Gather(ArrayView<int> tokens, WeightView table, ArrayView<float> x, int count, int hidden)
    {
        int total = count * hidden;
        int stride = Lanes.Stride;
        for (int item = Grid.GlobalIndex.X; item < total; item += stride)
        {
            int t = item / hidden;
            int h = item % hidden;
            x[item] = table[(long)tokens[t] * hidden + h];
        }
    }

    /// <summary>Plain C# reference of <see cref="Gather"/>.</summary>
    public static void GatherReference(ReadOnlySpan<int> tokens, ReadOnlySpan<float> table, Span<float> x, int hidden)
    {
        for (int t = 0; t < tokens.Length; t++)
            table.Slice(tokens[t] * hidden, hidden).CopyTo(x.Slice(t * hidden, hidden));
    }
}
