using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using eMoE.Model;

namespace eMoE.Compute.Host;

internal static unsafe partial class HostKernels
{
    /// <summary>
    /// y[T, N] (+)= x[T, K] . W[N, K]^T, like <see cref="Kernels.MatMulKernels.MatMul"/>, with W read
    /// in place in its dtype. Rows of W are split over the pool in blocks of 8; each block is
    /// multiplied with the tokens two at a time (a single token: all 8 rows at once; see
    /// <see cref="HostDot"/>), tiled so that the weight rows and token rows in use stay in cache.
    /// Runs on the calling thread when small. A token's result does not depend on the other tokens.
    /// </summary>
    public static void MatMul(WorkerPool pool, float* x, HostWeight w, float* y, int tokens, int n, int k, bool accumulate)
    {
        if (tokens <= 0 || n <= 0) return;
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (w.Elements < (long)n * k) throw new ArgumentException($"the weight has {w.Elements} elements; [{n}, {k}] needs {(long)n * k}", nameof(w));
        switch (w.DType)
        {
            case TensorDType.F32: MatMul<F32Weights>(pool, x, w, y, tokens, n, k, accumulate); break;
            case TensorDType.BF16: MatMul<BF16Weights>(pool, x, w, y, tokens, n, k, accumulate); break;
            default: MatMul<F16Weights>(pool, x, w, y, tokens, n, k, accumulate); break;
        }
    }

    private struct MatMulJob
    {
        public float* X;          // [T, K], paired for 16-bit weights
        public byte* W;           // [N, K]
        public long RowBytes;
        public float* Y;          // [T, N]
        public int Tokens, N, K;
        public int TileTokens;    // tokens per cache tile
        public int GroupBlocks;   // row blocks per cache tile
        public bool Accumulate;
    }

    private static void MatMul<TW>(WorkerPool pool, float* x, HostWeight w, float* y, int tokens, int n, int k, bool accumulate)
        where TW : struct, IWeightFormat
    {
        var job = new MatMulJob
        {
            X = PairedRows<TW>(x, tokens, k, HostScratch.SharedInput), W = (byte*)w.Data, RowBytes = (long)k * TW.ItemSize, Y = y,
            Tokens = tokens, N = n, K = k, Accumulate = accumulate,
            // About 128 KiB of activations and 128 KiB of weights per tile (L2 of one core).
            TileTokens = Math.Clamp(32768 / Math.Max(k, 1) & ~1, 2, 256),
            GroupBlocks = (int)Math.Clamp(16384 / Math.Max((long)k * TW.ItemSize, 1), 1, 64),
        };
        pool.For((n + HostDot.Rows - 1) / HostDot.Rows, &MatMulRows<TW>, &job, MinParallel(pool, (long)tokens * n * k));
    }

    /// <summary>The activation rows as the format reads them: paired (in scratch slot <paramref name="slot"/>) for 16-bit weights, else as they are.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float* PairedRows<TW>(float* x, int rows, int k, int slot) where TW : struct, IWeightFormat
    {
        if (!TW.Paired || k < WeightFormat.Block) return x;
        float* paired = HostScratch.Floats(slot, (long)rows * k);
        for (int r = 0; r < rows; r++) WeightFormat.Pair(x + (long)r * k, paired + (long)r * k, k);
        return paired;
    }

    /// <summary>Row blocks [start, end) of a <see cref="MatMulJob"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MatMulRows<TW>(void* state, int start, int end) where TW : struct, IWeightFormat
    {
        var j = (MatMulJob*)state;
        int tokens = j->Tokens;
        for (int g0 = start; g0 < end; g0 += j->GroupBlocks)
        {
            int g1 = Math.Min(end, g0 + j->GroupBlocks);
            for (int t0 = 0; t0 < tokens; t0 += j->TileTokens)
            {
                int t1 = Math.Min(tokens, t0 + j->TileTokens);
                for (int block = g0; block < g1; block++) MatMulBlock<TW>(j, block, t0, t1);
            }
        }
    }

    /// <summary>Rows block * 8 .. + 7 of W against tokens [t0, t1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MatMulBlock<TW>(MatMulJob* j, int block, int t0, int t1) where TW : struct, IWeightFormat
    {
        int n = j->N, k = j->K, n0 = block * HostDot.Rows, rows = Math.Min(HostDot.Rows, n - n0);
        long rowBytes = j->RowBytes;
        byte* w = j->W + n0 * rowBytes;
        bool accumulate = j->Accumulate;
        int r = 0;
        if (rows == HostDot.Rows)
        {
            // The next block's rows stream in while these are multiplied, a share per kernel call
            // (first token tile only: later ones find them in cache).
            long blockBytes = HostDot.Rows * rowBytes;
            byte* next = t0 == 0 && n0 + 2 * HostDot.Rows <= n ? w + blockBytes : null;
            int calls = (t1 - t0) / 2 * 2 + (t1 - t0) % 2;
            int t = t0, call = 0;
            for (; t + 2 <= t1; t += 2)
            {
                float* x0 = j->X + (long)t * k, y0 = j->Y + (long)t * n + n0;
                byte* p = HostDot.Share(next, blockBytes, call++, calls, out long pBytes);
                HostDot.Dot4x2<TW>(w, rowBytes, x0, x0 + k, k, p, pBytes, out var a0, out var a1);
                p = HostDot.Share(next, blockBytes, call++, calls, out pBytes);
                HostDot.Dot4x2<TW>(w + 4 * rowBytes, rowBytes, x0, x0 + k, k, p, pBytes, out var b0, out var b1);
                Store4(y0, a0, accumulate);
                Store4(y0 + 4, b0, accumulate);
                Store4(y0 + n, a1, accumulate);
                Store4(y0 + n + 4, b1, accumulate);
            }
            if (t < t1)
            {
                float* y0 = j->Y + (long)t * n + n0;
                byte* p = HostDot.Share(next, blockBytes, call, calls, out long pBytes);
                HostDot.Dot8x1<TW>(w, rowBytes, j->X + (long)t * k, k, p, pBytes, out var a0, out var b0);
                Store4(y0, a0, accumulate);
                Store4(y0 + 4, b0, accumulate);
            }
            return;
        }
        if (rows >= 4)
        {
            int t = t0;
            for (; t + 2 <= t1; t += 2)
            {
                float* x0 = j->X + (long)t * k, y0 = j->Y + (long)t * n + n0;
                HostDot.Dot4x2<TW>(w, rowBytes, x0, x0 + k, k, null, 0, out var a0, out var a1);
                Store4(y0, a0, accumulate);
                Store4(y0 + n, a1, accumulate);
            }
            if (t < t1) Store4(j->Y + (long)t * n + n0, HostDot.Dot4x1<TW>(w, rowBytes, j->X + (long)t * k, k), accumulate);
            r = 4;
        }
        for (; r < rows; r++)
        {
            for (int t = t0; t < t1; t++)
            {
                float dot = HostDot.Dot1x1<TW>(w + r * rowBytes, j->X + (long)t * k, k);
                float* y = j->Y + (long)t * n + n0 + r;
                *y = accumulate ? *y + dot : dot;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store4(float* destination, Vector128<float> value, bool accumulate)
    {
        if (accumulate) value += Vector128.Load(destination);
        value.Store(destination);
    }
}
