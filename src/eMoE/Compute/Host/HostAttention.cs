using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace eMoE.Compute.Host;

internal static unsafe partial class HostKernels
{
    /// <summary>Tokens of one sequence that share a work item (their queries meet each key and value row together).</summary>
    private const int QueryTile = 4;

    private struct AttentionJob
    {
        public float* Q, KCache, VCache, Output;
        public int* Positions, SequenceOf, BlockTables;
        public int* Tiles;                // [tiles, 2]: first token, tokens
        public int Heads, KvHeads, HeadDim, BlockSize, MaxBlocks;
        public float Scale;
    }

    /// <summary>
    /// Causal grouped-query attention over a paged KV cache for a ragged batch, like
    /// <see cref="Kernels.AttentionKernels.CausalAttention"/>: token t attends positions
    /// 0..positions[t] of its sequence (block table row sequenceOf[t] of
    /// <paramref name="blockTables"/> [sequences, maxBlocks]; position p lives in pool row
    /// table[p / blockSize] * blockSize + p % blockSize). One work item per (tile of up to 4
    /// consecutive tokens of one sequence, KV head): all the query rows of the tile (tokens x the
    /// query heads sharing the KV head) meet each key and value block while it is in L1, the scores
    /// as 4 positions x 2 query rows register tiles. Scores live in per-thread scratch
    /// (<paramref name="maxSeq"/> only bounds the positions).
    /// </summary>
    public static void Attention(WorkerPool pool, float* q, float* kCache, float* vCache, int* positions, int* sequenceOf,
        int* blockTables, float* output, int tokens, int heads, int kvHeads, int headDim, int maxSeq, int blockSize, int maxBlocks)
    {
        if (tokens <= 0) return;
        if (kvHeads <= 0 || heads % kvHeads != 0) throw new ArgumentException($"{heads} query heads do not split over {kvHeads} KV heads", nameof(kvHeads));
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        int* tiles = HostScratch.Ints(HostScratch.SharedInput, 2L * tokens);
        int count = 0;
        long work = 0;
        for (int t = 0; t < tokens; t++)
        {
            if ((uint)positions[t] >= (uint)maxSeq) throw new ArgumentOutOfRangeException(nameof(positions), $"token {t} is at position {positions[t]}; a sequence holds {maxSeq}");
            work += positions[t] + 1L;
            if (count > 0 && tiles[2 * count - 1] < QueryTile && sequenceOf[t] == sequenceOf[tiles[2 * count - 2]]) tiles[2 * count - 1]++;
            else
            {
                tiles[2 * count] = t;
                tiles[2 * count + 1] = 1;
                count++;
            }
        }
        var job = new AttentionJob
        {
            Q = q, KCache = kCache, VCache = vCache, Output = output, Positions = positions, SequenceOf = sequenceOf, BlockTables = blockTables,
            Tiles = tiles, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, BlockSize = blockSize, MaxBlocks = maxBlocks,
            Scale = 1.0f / MathF.Sqrt(headDim),
        };
        pool.For(count * kvHeads, &AttendItems, &job, MinParallel(pool, work * heads * headDim * 2));
    }

    /// <summary>Items [start, end) of an <see cref="AttentionJob"/>: item = tile * kvHeads + KV head.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttendItems(void* state, int start, int end)
    {
        var j = (AttentionJob*)state;
        int d = j->HeadDim, group = j->Heads / j->KvHeads, kvDim = j->KvHeads * d, blockSize = j->BlockSize;
        long rowBytes = (long)kvDim * sizeof(float);
        int maxRows = QueryTile * group;
        float** queries = stackalloc float*[maxRows];
        float** outputs = stackalloc float*[maxRows];
        int* lengths = stackalloc int[maxRows];
        for (int item = start; item < end; item++)
        {
            int tile = item / j->KvHeads, g = item % j->KvHeads;
            int first = j->Tiles[2 * tile], rows = j->Tiles[2 * tile + 1] * group, length = 0;
            for (int r = 0; r < rows; r++)
            {
                int t = first + r / group;
                long head = ((long)t * j->Heads + g * group + r % group) * d;
                queries[r] = j->Q + head;
                outputs[r] = j->Output + head;
                lengths[r] = j->Positions[t] + 1;
                length = Math.Max(length, lengths[r]);
            }
            int* table = j->BlockTables + (long)j->SequenceOf[first] * j->MaxBlocks;
            float* scores = HostScratch.Floats(HostScratch.Scores, (long)rows * length); // [rows, length]
            long column = (long)g * d;

            // Scores, a block of positions at a time (one table read per block), 4 positions x 2 query rows per register tile.
            var scale = Vector128.Create(j->Scale);
            for (int block = 0, p0 = 0; p0 < length; block++, p0 += blockSize)
            {
                float* keys = j->KCache + (long)table[block] * blockSize * kvDim + column;
                int count = Math.Min(blockSize, length - p0), p = 0;
                for (; p + 4 <= count; p += 4)
                {
                    byte* k4 = (byte*)(keys + (long)p * kvDim);
                    int r = 0;
                    for (; r + 2 <= rows; r += 2)
                    {
                        HostDot.Dot4x2<F32Weights>(k4, rowBytes, queries[r], queries[r + 1], d, null, 0, out var s0, out var s1);
                        (s0 * scale).Store(scores + (long)r * length + p0 + p);
                        (s1 * scale).Store(scores + (long)(r + 1) * length + p0 + p);
                    }
                    if (r < rows) (HostDot.Dot4x1<F32Weights>(k4, rowBytes, queries[r], d) * scale).Store(scores + (long)r * length + p0 + p);
                }
                for (; p < count; p++)
                {
                    for (int r = 0; r < rows; r++)
                        scores[(long)r * length + p0 + p] = HostDot.Dot1x1<F32Weights>((byte*)(keys + (long)p * kvDim), queries[r], d) * j->Scale;
                }
            }

            // Softmax numerators over each row's own positions; the 1/sum is applied to the output.
            for (int r = 0; r < rows; r++)
            {
                ExpMinusMax(scores + (long)r * length, lengths[r]);
                new Span<float>(outputs[r], d).Clear();
            }
            for (int block = 0, p0 = 0; p0 < length; block++, p0 += blockSize)
            {
                float* values = j->VCache + (long)table[block] * blockSize * kvDim + column;
                for (int r = 0; r < rows; r++)
                {
                    int count = Math.Min(blockSize, lengths[r] - p0);
                    if (count > 0) AccumulateRows(outputs[r], values, kvDim, scores + (long)r * length + p0, count, d);
                }
            }
            for (int r = 0; r < rows; r++) Multiply(outputs[r], 1.0f / Sum(scores + (long)r * length, lengths[r]), d);
        }
    }

    /// <summary>y[0..d) += sum_p weights[p] * rows[p * stride ..][0..d), 4 vectors of y in registers at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AccumulateRows(float* y, float* rows, int stride, float* weights, int count, int d)
    {
        int vw = Vector<float>.Count, c = 0;
        for (; c + 4 * vw <= d; c += 4 * vw)
        {
            var a0 = Vector.Load(y + c);
            var a1 = Vector.Load(y + c + vw);
            var a2 = Vector.Load(y + c + 2 * vw);
            var a3 = Vector.Load(y + c + 3 * vw);
            float* row = rows + c;
            for (int p = 0; p < count; p++, row += stride)
            {
                var w = new Vector<float>(weights[p]);
                a0 = Vector.MultiplyAddEstimate(Vector.Load(row), w, a0);
                a1 = Vector.MultiplyAddEstimate(Vector.Load(row + vw), w, a1);
                a2 = Vector.MultiplyAddEstimate(Vector.Load(row + 2 * vw), w, a2);
                a3 = Vector.MultiplyAddEstimate(Vector.Load(row + 3 * vw), w, a3);
            }
            Vector.Store(a0, y + c);
            Vector.Store(a1, y + c + vw);
            Vector.Store(a2, y + c + 2 * vw);
            Vector.Store(a3, y + c + 3 * vw);
        }
        for (; c + vw <= d; c += vw)
        {
            var a = Vector.Load(y + c);
            float* row = rows + c;
            for (int p = 0; p < count; p++, row += stride) a = Vector.MultiplyAddEstimate(Vector.Load(row), new Vector<float>(weights[p]), a);
            Vector.Store(a, y + c);
        }
        for (; c < d; c++)
        {
            float a = y[c];
            for (int p = 0; p < count; p++) a += weights[p] * rows[(long)p * stride + c];
            y[c] = a;
        }
    }

    /// <summary>x *= s over <paramref name="n"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Multiply(float* x, float s, int n)
    {
        int vw = Vector<float>.Count, i = 0;
        var sv = new Vector<float>(s);
        for (; i <= n - vw; i += vw) Vector.Store(Vector.Load(x + i) * sv, x + i);
        for (; i < n; i++) x[i] *= s;
    }

    /// <summary>The largest of <paramref name="n"/> &gt; 0 floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ExpMinusMax(float* x, int n)
    {
        float max = Max(x, n);
        int vw = Vector<float>.Count, i = 0;
        var mv = new Vector<float>(max);
        for (; i <= n - vw; i += vw) Vector.Store(HostMath.Exp(Vector.Load(x + i) - mv), x + i);
        for (; i < n; i++) x[i] = HostMath.Exp(x[i] - max);
    }
}
