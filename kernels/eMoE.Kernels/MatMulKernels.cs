using ILGPU;

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
    /// <summary>
    /// One worker per output element (n, t). Items are ordered n-major so that workers side by
    /// side read the same weight row for different tokens during prefill.
    /// </summary>
    public static void MatMul(MatMulArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        long total = (long)a.Tokens * a.N;
        for (long item = Lanes.Worker(lanes); item < total; item += Lanes.Workers(lanes))
        {
            int n = (int)(item / a.Tokens);
            int t = (int)(item % a.Tokens);
            float dot = Lanes.Sum(Lanes.PartialDot(a.X, (long)t * a.K, a.W, (long)n * a.K, a.K, lane, lanes), lanes);
            if (lane == 0)
            {
                long y = (long)t * a.N + n;
                a.Y[y] = a.Accumulate != 0 ? a.Y[y] + dot : dot;
            }
        }
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
