using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>Arguments of <see cref="AttentionKernels.CausalAttention"/>.</summary>
public struct AttentionArgs
{
    /// <summary>Rotated queries [T, heads * D].</summary>
    public ArrayView<float> Q;
    /// <summary>This layer's key pool [blocks * blockSize, kvHeads * D], already holding this step's keys.</summary>
    public ArrayView<float> KCache;
    /// <summary>This layer's value pool [blocks * blockSize, kvHeads * D].</summary>
    public ArrayView<float> VCache;
    /// <summary>Position of each token [T]: token t attends positions 0..Positions[t] of its own sequence.</summary>
    public ArrayView<int> Positions;
    /// <summary>Which row of <see cref="BlockTables"/> each token's sequence uses [T].</summary>
    public ArrayView<int> SequenceOf;
    /// <summary>
    /// Block tables [sequences, MaxBlocks]: position p of sequence s lives in pool row
    /// BlockTables[s, p / BlockSize] * BlockSize + p % BlockSize.
    /// </summary>
    public ArrayView<int> BlockTables;
    /// <summary>Scratch for attention scores [T, heads, maxSeq].</summary>
    public ArrayView<float> Scores;
    /// <summary>Output [T, heads * D].</summary>
    public ArrayView<float> Output;
    /// <summary>T: tokens in this step (of any sequences).</summary>
    public int Tokens;
    /// <summary>Query heads.</summary>
    public int Heads;
    /// <summary>Key/value heads; query head h reads kv head h / (heads / kvHeads).</summary>
    public int KvHeads;
    /// <summary>D: head size.</summary>
    public int HeadDim;
    /// <summary>Positions one sequence may hold (row stride of <see cref="Scores"/>).</summary>
    public int MaxSeq;
    /// <summary>Positions per KV block.</summary>
    public int BlockSize;
    /// <summary>Columns of <see cref="BlockTables"/>: blocks one sequence may hold.</summary>
    public int MaxBlocks;
}

/// <summary>
/// Causal grouped-query attention over a paged KV cache, for a ragged batch: every token reads its
/// own sequence's positions through that sequence's block table, so prefill chunks and decode
/// tokens of different sequences share one launch with no padding.
/// </summary>
public static class AttentionKernels
{
    /// <summary>
    /// One worker per (token, query head); lanes split positions and head dimensions. Query, key and
    /// value rows are read four values at a time (<see cref="Quads"/>): HeadDim is a multiple of 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalAttention(AttentionArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int groupSize = a.Heads / a.KvHeads;
        int kvDim = a.KvHeads * a.HeadDim;
        float scale = 1.0f / XMath.Sqrt(a.HeadDim);
        int total = a.Tokens * a.Heads;
        var queries = a.Q.Cast<Float4>();
        var keys = a.KCache.Cast<Float4>();
        var values = a.VCache.Cast<Float4>();
        int quads = a.HeadDim / 4;
        int stride = Lanes.Workers(lanes);
        for (int item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int t = item / a.Heads;
            int h = item % a.Heads;
            int kvCol = h / groupSize * a.HeadDim;
            int last = a.Positions[t];
            long table = (long)a.SequenceOf[t] * a.MaxBlocks;
            long q = (long)t * a.Heads * a.HeadDim + h * a.HeadDim;
            long query = q / 4; // the same row in quads
            long scores = (long)item * a.MaxSeq;

            float max = float.NegativeInfinity;
            for (int p = lane; p <= last; p += lanes)
            {
                long k = (Row(a, table, p) * kvDim + kvCol) / 4;
                float dot = 0f;
                for (int d = 0; d < quads; d++) dot = Quads.Dot(dot, queries[query + d], keys[k + d]);
                dot *= scale;
                a.Scores[scores + p] = dot;
                max = XMath.Max(max, dot);
            }
            max = MaxOverLanes(max, lanes);

            float sum = 0f;
            for (int p = lane; p <= last; p += lanes)
            {
                float e = XMath.Exp(a.Scores[scores + p] - max);
                a.Scores[scores + p] = e;
                sum += e;
            }
            sum = Lanes.Sum(sum, lanes);
            if (lanes > 1) Warp.Barrier(); // every lane's probabilities are written before any lane reads them

            float inv = 1.0f / sum;
            for (int d = lane; d < quads; d += lanes)
            {
                // Positions in order, a block at a time: one block-table read per block, no division per position.
                // Four dimensions per pass share each probability read.
                float acc0 = 0f, acc1 = 0f, acc2 = 0f, acc3 = 0f;
                for (int block = 0; block * a.BlockSize <= last; block++)
                {
                    long row = ((long)a.BlockTables[table + block] * a.BlockSize * kvDim + kvCol) / 4 + d;
                    int first = block * a.BlockSize, end = XMath.Min(first + a.BlockSize - 1, last);
                    for (int p = first; p <= end; p++, row += kvDim / 4)
                    {
                        float weight = a.Scores[scores + p];
                        var v = values[row];
                        acc0 += weight * v.X;
                        acc1 += weight * v.Y;
                        acc2 += weight * v.Z;
                        acc3 += weight * v.W;
                    }
                }
                long o = q + 4L * d;
                a.Output[o] = acc0 * inv;
                a.Output[o + 1] = acc1 * inv;
                a.Output[o + 2] = acc2 * inv;
                a.Output[o + 3] = acc3 * inv;
            }
        }
    }

    /// <summary>Pool row of position <paramref name="p"/> of the sequence whose block table starts at <paramref name="table"/>.</summary>
    private static long Row(AttentionArgs a, long table, int p) => (long)a.BlockTables[table + p / a.BlockSize] * a.BlockSize + p % a.BlockSize;

    private static float MaxOverLanes(float value, int lanes)
    {
        if (lanes == 1) return value;
        for (int offset = lanes / 2; offset > 0; offset /= 2)
            value = XMath.Max(value, Warp.ShuffleXor(value, offset));
        return value;
    }

    /// <summary>
    /// Plain C# reference for the whole paged kernel: for every token and query head, that token's own
    /// sequence is gathered from the pool in position order (as an unpaged cache would hold it) and
    /// attended by <see cref="AttendReference"/>. Shapes as in <see cref="AttentionArgs"/>: q [T, Hq, D],
    /// pools [rows, Hkv, D], block tables [sequences, maxBlocks]. Returns [T, Hq, D].
    /// </summary>
    public static float[] PagedAttentionReference(float[] q, float[] kPool, float[] vPool, int[] positions, int[] sequenceOf, int[] blockTables,
        int heads, int kvHeads, int d, int blockSize, int maxBlocks)
    {
        int tokens = positions.Length;
        var expected = new float[tokens * heads * d];
        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                int kvHead = h / (heads / kvHeads), last = positions[t];
                var keys = new float[(last + 1) * d];
                var values = new float[(last + 1) * d];
                for (int p = 0; p <= last; p++)
                {
                    int row = blockTables[sequenceOf[t] * maxBlocks + p / blockSize] * blockSize + p % blockSize;
                    Array.Copy(kPool, (row * kvHeads + kvHead) * d, keys, p * d, d);
                    Array.Copy(vPool, (row * kvHeads + kvHead) * d, values, p * d, d);
                }
                AttendReference(q.AsSpan((t * heads + h) * d, d), keys, values, last, expected.AsSpan((t * heads + h) * d, d));
            }
        }
        return expected;
    }

    /// <summary>
    /// Plain C# reference for one query head: softmax(q . k_p / sqrt(D)) over positions 0..last,
    /// weighted sum of v_p. Keys/values are [positions, D] for that head, in position order.
    /// </summary>
    public static void AttendReference(ReadOnlySpan<float> q, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int last, Span<float> output)
    {
        int d = q.Length;
        var scores = new double[last + 1];
        double max = double.NegativeInfinity;
        for (int p = 0; p <= last; p++)
        {
            double dot = 0;
            for (int i = 0; i < d; i++) dot += q[i] * keys[p * d + i];
            scores[p] = dot / Math.Sqrt(d);
            max = Math.Max(max, scores[p]);
        }
        double sum = 0;
        for (int p = 0; p <= last; p++) sum += scores[p] = Math.Exp(scores[p] - max);
        for (int i = 0; i < d; i++)
        {
            double acc = 0;
            for (int p = 0; p <= last; p++) acc += scores[p] * values[p * d + i];
            output[i] = (float)(acc / sum);
        }
    }
}
