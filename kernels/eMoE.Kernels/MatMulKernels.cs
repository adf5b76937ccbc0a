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
    /// <summary>Tokens one worker computes together (up to 8: <see cref="Quads.DotTile8"/>).</summary>
    public const int TokenTile = 8;

    /// <summary>Weight rows one worker computes together.</summary>
    public const int RowTile = 4;

    /// <summary>Work items of <see cref="MatMul"/>: (tile of weight rows, tile of tokens).</summary>
    public static long Items(int tokens, int n) => (long)((tokens + TokenTile - 1) / TokenTile) * ((n + RowTile - 1) / RowTile);

    /// <summary>
    /// One worker per (tile of up to 4 weight rows, tile of up to 8 tokens): each weight quad is read
    /// once for the tile's tokens and each activation quad once for its rows, so a batch of decode
    /// tokens or a prefill chunk reads the weights once per tile instead of once per token
    /// (<see cref="Quads.DotTileOf"/>). Each dot product still sums k in the same order, so a token's
    /// result does not depend on which tokens or rows share its tile. Items are ordered row-major so
    /// that workers side by side read neighbouring weight rows. K must be a multiple of 4 (rows are
    /// read four values at a time, <see cref="Quads"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MatMul(MatMulArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int tokenTiles = (a.Tokens + TokenTile - 1) / TokenTile;
        long total = Items(a.Tokens, a.N);
        var x = a.X.Cast<Float4>();
        var weights = a.W.Quads;
        int quads = a.K / 4;
        int stride = Lanes.Workers(lanes);
        int lastToken = a.Tokens - 1, lastRow = a.N - 1;
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int n = (int)(item / tokenTiles) * RowTile;
            int t0 = (int)(item % tokenTiles) * TokenTile;
            int count = XMath.Min(TokenTile, a.Tokens - t0);
            // A short tile repeats its last token and its last row; only real results are written.
            TileRows rows = default;
            for (int j = 0; j < TokenTile; j++) rows.SetActivation(j, (long)XMath.Min(t0 + j, lastToken) * quads);
            rows.W0 = (long)n * quads;
            rows.W1 = (long)XMath.Min(n + 1, lastRow) * quads;
            rows.W2 = (long)XMath.Min(n + 2, lastRow) * quads;
            rows.W3 = (long)XMath.Min(n + 3, lastRow) * quads;
            var d = Quads.DotTileOf(count, x, weights, rows, quads, lane, lanes);
            if (lane != 0) continue;
            for (int j = 0; j < count; j++) Store(a, t0 + j, n, d.Activation(j));
        }
    }

    /// <summary>Token t's outputs n..n+3 (those below N).</summary>
    private static void Store(MatMulArgs a, int t, int n, Float4 dots)
    {
        long y = (long)t * a.N + n;
        Store(a, y, dots.X);
        if (n + 1 < a.N) Store(a, y + 1, dots.Y);
        if (n + 2 < a.N) Store(a, y + 2, dots.Z);
        if (n + 3 < a.N) Store(a, y + 3, dots.W);
    }

    private static void Store(MatMulArgs a, long y, float dot) => a.Y[y] = a.Accumulate != 0 ? a.Y[y] + dot : dot;

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
