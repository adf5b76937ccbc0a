using System.Numerics;
using System.Runtime.CompilerServices;

namespace eMoE.Compute.Host;

internal static unsafe partial class HostKernels
{
    private struct AttentionJob
    {
        public float* Q, KCache, VCache, Output;
        public int* Positions, SequenceOf, BlockTables;
        public int Heads, KvHeads, HeadDim, BlockSize, MaxBlocks;
        public float Scale;
    }

    /// <summary>
    /// Causal grouped-query attention over a paged KV cache for a ragged batch, like
    /// <see cref="Kernels.AttentionKernels.CausalAttention"/>: token t attends positions
    /// 0..positions[t] of its sequence (block table row sequenceOf[t] of
    /// <paramref name="blockTables"/> [sequences, maxBlocks]; position p lives in pool row
    /// table[p / blockSize] * blockSize + p % blockSize). One work item per (token, KV head): the
    /// query heads sharing that KV head read each key and value row once between them. Scores live
    /// in per-thread scratch (<paramref name="maxSeq"/> only bounds the positions).
    /// </summary>
    public static void Attention(WorkerPool pool, float* q, float* kCache, float* vCache, int* positions, int* sequenceOf,
        int* blockTables, float* output, int tokens, int heads, int kvHeads, int headDim, int maxSeq, int blockSize, int maxBlocks)
    {
        if (tokens <= 0) return;
        if (kvHeads <= 0 || heads % kvHeads != 0) throw new ArgumentException($"{heads} query heads do not split over {kvHeads} KV heads", nameof(kvHeads));
        long work = 0;
        for (int t = 0; t < tokens; t++)
        {
            if ((uint)positions[t] >= (uint)maxSeq) throw new ArgumentOutOfRangeException(nameof(positions), $"token {t} is at position {positions[t]}; a sequence holds {maxSeq}");
            work += positions[t] + 1L;
        }
        var job = new AttentionJob
        {
            Q = q, KCache = kCache, VCache = vCache, Output = output, Positions = positions, SequenceOf = sequenceOf, BlockTables = blockTables,
            Heads = heads, KvHeads = kvHeads, HeadDim = headDim, BlockSize = blockSize, MaxBlocks = maxBlocks,
            Scale = 1.0f / MathF.Sqrt(headDim),
        };
        pool.For(tokens * kvHeads, &AttendItems, &job, MinParallel(pool, work * heads * headDim * 2));
    }

    /// <summary>Items [start, end) of an <see cref="AttentionJob"/>: item = token * kvHeads + KV head.</summary>
    private static void AttendItems(void* state, int start, int end)
    {
        var j = (AttentionJob*)state;
        int d = j->HeadDim, group = j->Heads / j->KvHeads, kvDim = j->KvHeads * d, blockSize = j->BlockSize;
        for (int item = start; item < end; item++)
        {
            int t = item / j->KvHeads, g = item % j->KvHeads;
            int last = j->Positions[t], length = last + 1;
            int* table = j->BlockTables + (long)j->SequenceOf[t] * j->MaxBlocks;
            float* q = j->Q + ((long)t * j->Heads + g * group) * d;          // the group's query heads, one after another
            float* output = j->Output + ((long)t * j->Heads + g * group) * d;
            float* scores = HostScratch.Floats(HostScratch.Scores, (long)group * length);   // [group, length]
            long column = (long)g * d;

            // Scores, a block of positions at a time: one table read per block, no division per position.
            for (int block = 0, first = 0; first <= last; block++, first += blockSize)
            {
                float* keys = j->KCache + (long)table[block] * blockSize * kvDim + column;
                int count = Math.Min(blockSize, length - first);
                for (int p = 0; p < count; p++, keys += kvDim)
                {
                    for (int h = 0; h < group; h++) scores[(long)h * length + first + p] = Dot(q + h * d, keys, d) * j->Scale;
                }
            }

            // Softmax numerators; the 1/sum is applied to the output.
            for (int h = 0; h < group; h++) ExpMinusMax(scores + (long)h * length, length);
            new Span<float>(output, group * d).Clear();
            for (int block = 0, first = 0; first <= last; block++, first += blockSize)
            {
                float* values = j->VCache + (long)table[block] * blockSize * kvDim + column;
                int count = Math.Min(blockSize, length - first);
                for (int p = 0; p < count; p++, values += kvDim)
                {
                    for (int h = 0; h < group; h++) AddScaled(output + h * d, values, scores[(long)h * length + first + p], d);
                }
            }
            for (int h = 0; h < group; h++)
            {
                float sum = Sum(scores + (long)h * length, length);
                Multiply(output + h * d, 1.0f / sum, d);
            }
        }
    }

    /// <summary>x . y over <paramref name="n"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* x, float* y, int n)
    {
        int vw = Vector<float>.Count, i = 0;
        var a = Vector<float>.Zero;
        var b = Vector<float>.Zero;
        for (; i <= n - 2 * vw; i += 2 * vw)
        {
            a = Vector.MultiplyAddEstimate(Vector.Load(x + i), Vector.Load(y + i), a);
            b = Vector.MultiplyAddEstimate(Vector.Load(x + i + vw), Vector.Load(y + i + vw), b);
        }
        for (; i <= n - vw; i += vw) a = Vector.MultiplyAddEstimate(Vector.Load(x + i), Vector.Load(y + i), a);
        float sum = Vector.Sum(a + b);
        for (; i < n; i++) sum += x[i] * y[i];
        return sum;
    }

    /// <summary>y += s * x over <paramref name="n"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddScaled(float* y, float* x, float s, int n)
    {
        int vw = Vector<float>.Count, i = 0;
        var sv = new Vector<float>(s);
        for (; i <= n - vw; i += vw) Vector.Store(Vector.MultiplyAddEstimate(Vector.Load(x + i), sv, Vector.Load(y + i)), y + i);
        for (; i < n; i++) y[i] += s * x[i];
    }

    /// <summary>x *= s over <paramref name="n"/> floats.</summary>
    private static void Multiply(float* x, float s, int n)
    {
        int vw = Vector<float>.Count, i = 0;
        var sv = new Vector<float>(s);
        for (; i <= n - vw; i += vw) Vector.Store(Vector.Load(x + i) * sv, x + i);
        for (; i < n; i++) x[i] *= s;
    }

    /// <summary>The largest of <paramref name="n"/> &gt; 0 floats.</summary>
    private static float Max(float* x, int n)
    {
        int vw = Vector<float>.Count, i = 0;
        float max = float.NegativeInfinity;
        if (n >= vw)
        {
            var m = Vector.Load(x);
            for (i = vw; i <= n - vw; i += vw) m = Vector.Max(m, Vector.Load(x + i));
            for (int l = 0; l < vw; l++) max = Math.Max(max, m[l]);
        }
        for (; i < n; i++) max = Math.Max(max, x[i]);
        return max;
    }

    /// <summary>Sum of <paramref name="n"/> floats.</summary>
    private static float Sum(float* x, int n)
    {
        int vw = Vector<float>.Count, i = 0;
        var a = Vector<float>.Zero;
        for (; i <= n - vw; i += vw) a += Vector.Load(x + i);
        float sum = Vector.Sum(a);
        for (; i < n; i++) sum += x[i];
        return sum;
    }

    /// <summary>x[i] = exp(x[i] - max(x)) in place.</summary>
    private static void ExpMinusMax(float* x, int n)
    {
        float max = Max(x, n);
        int vw = Vector<float>.Count, i = 0;
        var mv = new Vector<float>(max);
        for (; i <= n - vw; i += vw) Vector.Store(Vector.Exp(Vector.Load(x + i) - mv), x + i);
        for (; i < n; i++) x[i] = MathF.Exp(x[i] - max);
    }
}
