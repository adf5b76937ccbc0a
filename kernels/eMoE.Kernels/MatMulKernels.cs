using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>Arguments of <see cref="MatMulKernels.MatMul"/>: y[T, N] (+)= x[T, K] . W[N, K]^T.</summary>
public struct MatMulArgs
{
    /// <summary>Input activations [T, K].</summary>
    public ArrayView<float> X;
    /// <summary>Weight [N, K] as stored in the checkpoint ([out_features, in_features]).</summary>
    public WeightView W;
    /// <summary>Output [T, N].</summary>
    public ArrayView<float> Y;
    /// <summary>T: rows of x.</summary>
    public int Tokens;
    /// <summary>N: output features.</summary>
    public int N;
    /// <summary>K: input features.</summary>
    public int K;
    /// <summary>1: add into y (residual connection); 0: overwrite y.</summary>
    public int Accumulate;
}

/// <summary>Dense projections: decode is a matrix-vector product (T = 1), prefill a small GEMM.</summary>
public static class MatMulKernels
{
    /// <summary>Tokens one worker computes against each weight row it reads (a register tile).</summary>
    public const int TokenTile = 4;

    /// <summary>
    /// One worker per (weight row n, tile of up to <see cref="TokenTile"/> tokens): each weight
    /// element is read once for the whole tile, so a batch of decode tokens reads the weights once
    /// per tile instead of once per token. Each dot product still sums k in the same order, so a
    /// token's result does not depend on which tokens share its tile. Items are ordered n-major so
    /// that workers side by side read neighbouring weight rows. K must be a multiple of 4 (rows are
    /// read four values at a time, <see cref="Quads"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MatMul(MatMulArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int tiles = (a.Tokens + TokenTile - 1) / TokenTile;
        long total = (long)tiles * a.N;
        var x = a.X.Cast<Float4>();
        var weights = a.W.Quads;
        int quads = a.K / 4;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int n = (int)(item / tiles);
            int t0 = (int)(item % tiles) * TokenTile;
            // A short last tile repeats its last token; only real tokens are written.
            int last = a.Tokens - 1;
            long x0 = (long)t0 * quads, x1 = (long)XMath.Min(t0 + 1, last) * quads, x2 = (long)XMath.Min(t0 + 2, last) * quads, x3 = (long)XMath.Min(t0 + 3, last) * quads;
            long w = (long)n * quads;
            var d = Quads.DotFourRows(x, x0, x1, x2, x3, weights, w, quads, lane, lanes);
            if (lane != 0) continue;
            Store(a, t0, n, d.X);
            if (t0 + 1 <= last) Store(a, t0 + 1, n, d.Y);
            if (t0 + 2 <= last) Store(a, t0 + 2, n, d.Z);
            if (t0 + 3 <= last) Store(a, t0 + 3, n, d.W);
        }
    }

    private static void Store(MatMulArgs a, int t, int n, float dot)
    {
        long y = (long)t * a.N + n;
        a.Y[y] = a.Accumulate != 0 ? a.Y[y] + dot : dot;
    }

    /// <summary>Plain C# reference of <see cref="MatMul"/>.</summary>
    public static void MatMulReference(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int tokens, int n, int k, bool accumulate)
    {
        for (int t = 0; t < tokens; t++)
        {
            for (int o = 0; o < n; o++)
            {
                double acc = 0;
                for (int i = 0; i < k; i++) acc += x[t * k + i] * w[o * k + i];
                y[t * n + o] = accumulate ? y[t * n + o] + (float)acc : (float)acc;
            }
        }
    }
}
