using System.Numerics;
using System.Runtime.CompilerServices;
using eMoE.Model;

namespace eMoE.Compute.Host;

/// <summary>
/// The forward pass's operations on the host, natively: each computes what its ILGPU kernel in
/// eMoE.Kernels computes (same shapes and layouts, see ForwardPass), vectorised with
/// <see cref="Vector{T}"/> (AVX2 or SSE on x64, NEON on Arm) and spread over a
/// <see cref="WorkerPool"/> when the work is large enough to repay a dispatch (a few microseconds);
/// smaller operations run on the calling thread. Every pointer is native memory the caller owns;
/// weights are read in place in their dtype. Sums are ordered for SIMD, so results match the
/// kernels to rounding, not bit for bit; selections (top-k, sampling, argmax) follow the kernels' rules.
/// </summary>
/// <remarks>This file: thresholds and the element-wise operations (embedding, RMSNorm, RoPE).</remarks>
internal static unsafe partial class HostKernels
{
    /// <summary>Multiply-adds (or comparable element operations) below which an operation runs on the calling thread.</summary>
    public const long ParallelWork = 1 << 15;

    /// <summary>Element copies or updates below which a memory-bound operation runs on the calling thread.</summary>
    public const long ParallelElements = 1 << 16;

    /// <summary>The minParallel of <see cref="WorkerPool.For"/> for a job of <paramref name="work"/> units: 1 when worth spreading (or the pool says so), else never.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int MinParallel(WorkerPool pool, long work, long threshold = ParallelWork) => pool.ParallelizeSmall || work >= threshold ? 1 : int.MaxValue;

    // ---- Embedding --------------------------------------------------------------------------

    private struct GatherJob
    {
        public int* Tokens;
        public HostWeight Table;
        public float* X;
        public int Hidden;
    }

    /// <summary>
    /// x[t, :] = table[tokens[t], :] widened, for t in 0..count-1 (the embedding lookup; with an F32
    /// table over activations, a gather of rows), like <see cref="Kernels.EmbeddingKernels.Gather"/>.
    /// </summary>
    public static void Gather(WorkerPool pool, int* tokens, HostWeight table, float* x, int count, int hidden)
    {
        if (count <= 0 || hidden <= 0) return;
        var job = new GatherJob { Tokens = tokens, Table = table, X = x, Hidden = hidden };
        pool.For(count, &GatherRows, &job, MinParallel(pool, (long)count * hidden, ParallelElements));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GatherRows(void* state, int start, int end)
    {
        var j = (GatherJob*)state;
        for (int t = start; t < end; t++)
            j->Table.Widen((long)j->Tokens[t] * j->Hidden, new Span<float>(j->X + (long)t * j->Hidden, j->Hidden));
    }

    // ---- RMSNorm ----------------------------------------------------------------------------

    private struct NormJob
    {
        public float* Input, Weight, Output;
        public int Size;
        public float Eps;
    }

    /// <summary>
    /// RMSNorm of <paramref name="rows"/> rows of <paramref name="size"/>: output[r] = input[r] *
    /// rsqrt(mean(input[r]^2) + eps) * weight, like <see cref="Kernels.NormKernels.RmsNorm"/>.
    /// <paramref name="input"/> and <paramref name="output"/> may be the same rows (q/k norm in place).
    /// </summary>
    public static void RmsNorm(WorkerPool pool, float* input, HostWeight weight, float* output, int rows, int size, float eps)
    {
        if (rows <= 0 || size <= 0) return;
        if (weight.Elements < size) throw new ArgumentException($"the norm weight has {weight.Elements} elements; rows of {size} need as many", nameof(weight));
        float* w = (float*)weight.Data;
        if (weight.DType != TensorDType.F32)
        {
            w = HostScratch.Floats(HostScratch.Weights, size);
            weight.Widen(0, new Span<float>(w, size));
        }
        var job = new NormJob { Input = input, Weight = w, Output = output, Size = size, Eps = eps };
        pool.For(rows, &NormRows, &job, MinParallel(pool, (long)rows * size, ParallelElements));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void NormRows(void* state, int start, int end)
    {
        var j = (NormJob*)state;
        int size = j->Size, vw = Vector<float>.Count;
        float* weight = j->Weight;
        for (int r = start; r < end; r++)
        {
            float* x = j->Input + (long)r * size, y = j->Output + (long)r * size;
            int i = 0;
            var acc = Vector<float>.Zero;
            for (; i <= size - vw; i += vw)
            {
                var v = Vector.Load(x + i);
                acc = Vector.MultiplyAddEstimate(v, v, acc);
            }
            float sumSq = Vector.Sum(acc);
            for (; i < size; i++) sumSq += x[i] * x[i];
            float scale = 1f / MathF.Sqrt(sumSq / size + j->Eps);
            var scaleV = new Vector<float>(scale);
            i = 0;
            for (; i <= size - vw; i += vw) Vector.Store(Vector.Load(x + i) * scaleV * Vector.Load(weight + i), y + i);
            for (; i < size; i++) y[i] = x[i] * scale * weight[i];
        }
    }

    // ---- RoPE and the KV cache --------------------------------------------------------------

    private struct RopeJob
    {
        public float* Q, K, V, KCache, VCache, Cos, Sin;
        public int* Positions, CacheRows;
        public int Heads, KvHeads, HeadDim;
    }

    /// <summary>
    /// Rotary embedding (Hugging Face rotate_half: element i pairs with i + D/2) of q [T, heads * D]
    /// and k [T, kvHeads * D] in place at positions[t], then k's and v's rows copied into
    /// <paramref name="kCache"/> and <paramref name="vCache"/> ([rows, kvHeads * D]) at row
    /// cacheRows[t], like <see cref="Kernels.RopeKernels.RopeAndCache"/>. cos and sin are [maxSeq, D/2].
    /// </summary>
    public static void RopeAndCache(WorkerPool pool, float* q, float* k, float* v, float* kCache, float* vCache, int* positions,
        int* cacheRows, float* cos, float* sin, int tokens, int heads, int kvHeads, int headDim)
    {
        if (tokens <= 0) return;
        var job = new RopeJob
        {
            Q = q, K = k, V = v, KCache = kCache, VCache = vCache, Cos = cos, Sin = sin, Positions = positions, CacheRows = cacheRows,
            Heads = heads, KvHeads = kvHeads, HeadDim = headDim,
        };
        pool.For(tokens, &RopeTokens, &job, MinParallel(pool, (long)tokens * (heads + 2 * kvHeads) * headDim, ParallelElements));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RopeTokens(void* state, int start, int end)
    {
        var j = (RopeJob*)state;
        int d = j->HeadDim, half = d / 2, kvDim = j->KvHeads * d;
        for (int t = start; t < end; t++)
        {
            int pos = j->Positions[t];
            float* c = j->Cos + (long)pos * half, s = j->Sin + (long)pos * half;
            float* q = j->Q + (long)t * j->Heads * d;
            for (int h = 0; h < j->Heads; h++) Rotate(q + h * d, c, s, half);
            float* k = j->K + (long)t * kvDim;
            for (int h = 0; h < j->KvHeads; h++) Rotate(k + h * d, c, s, half);
            long row = (long)j->CacheRows[t] * kvDim;
            Buffer.MemoryCopy(k, j->KCache + row, kvDim * sizeof(float), kvDim * sizeof(float));
            Buffer.MemoryCopy(j->V + (long)t * kvDim, j->VCache + row, kvDim * sizeof(float), kvDim * sizeof(float));
        }
    }

    /// <summary>Rotates one head in place: (x1, x2) = (x1 c - x2 s, x2 c + x1 s) for i &lt; half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rotate(float* head, float* cos, float* sin, int half)
    {
        int vw = Vector<float>.Count, i = 0;
        for (; i <= half - vw; i += vw)
        {
            var x1 = Vector.Load(head + i);
            var x2 = Vector.Load(head + half + i);
            var c = Vector.Load(cos + i);
            var s = Vector.Load(sin + i);
            Vector.Store(x1 * c - x2 * s, head + i);
            Vector.Store(x2 * c + x1 * s, head + half + i);
        }
        for (; i < half; i++)
        {
            float x1 = head[i], x2 = head[i + half], c = cos[i], s = sin[i];
            head[i] = x1 * c - x2 * s;
            head[i + half] = x2 * c + x1 * s;
        }
    }
}
