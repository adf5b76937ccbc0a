using System.Runtime.CompilerServices;
using ILGPU;

namespace eMoE.Kernels;

/// <summary>Arguments of <see cref="RopeKernels.RopeAndCache"/>.</summary>
public struct RopeArgs
{
    /// <summary>Queries [T, heads * D], rotated in place.</summary>
    public ArrayView<float> Q;
    /// <summary>Keys [T, kvHeads * D], rotated in place and then stored in the cache.</summary>
    public ArrayView<float> K;
    /// <summary>Values [T, kvHeads * D], stored in the cache.</summary>
    public ArrayView<float> V;
    /// <summary>This layer's key pool [rows, kvHeads * D].</summary>
    public ArrayView<float> KCache;
    /// <summary>This layer's value pool [rows, kvHeads * D].</summary>
    public ArrayView<float> VCache;
    /// <summary>Position of each token [T] (its own sequence's position).</summary>
    public ArrayView<int> Positions;
    /// <summary>Pool row each token's key and value are written to [T] (from its sequence's block table).</summary>
    public ArrayView<int> CacheRows;
    /// <summary>cos(pos * inv_freq[i]) as [maxSeq, D/2].</summary>
    public ArrayView<float> Cos;
    /// <summary>sin(pos * inv_freq[i]) as [maxSeq, D/2].</summary>
    public ArrayView<float> Sin;
    /// <summary>T: tokens in this step (of any sequences).</summary>
    public int Tokens;
    /// <summary>Query heads.</summary>
    public int Heads;
    /// <summary>Key/value heads.</summary>
    public int KvHeads;
    /// <summary>D: head size.</summary>
    public int HeadDim;
}

/// <summary>
/// Rotary position embedding in Hugging Face's non-interleaved <c>rotate_half</c> form (element i
/// pairs with i + D/2), fused with writing this step's keys and values into the KV cache. Each token
/// carries its own position and cache row, so tokens of different sequences share one launch.
/// </summary>
public static class RopeKernels
{
    /// <summary>One item per (token, head, i &lt; D/2) over query heads then key heads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RopeAndCache(RopeArgs a)
    {
        int half = a.HeadDim / 2;
        int headsAll = a.Heads + a.KvHeads;
        int total = a.Tokens * headsAll * half;
        int stride = Lanes.Stride;
        for (int item = Grid.GlobalIndex.X; item < total; item += stride)
        {
            int i = item % half;
            int head = item / half % headsAll;
            int t = item / (half * headsAll);
            int pos = a.Positions[t];
            float c = a.Cos[pos * half + i];
            float s = a.Sin[pos * half + i];
            if (head < a.Heads)
            {
                long q = (long)t * a.Heads * a.HeadDim + head * a.HeadDim + i;
                float x1 = a.Q[q], x2 = a.Q[q + half];
                a.Q[q] = x1 * c - x2 * s;
                a.Q[q + half] = x2 * c + x1 * s;
            }
            else
            {
                int kvDim = a.KvHeads * a.HeadDim;
                int col = (head - a.Heads) * a.HeadDim + i;
                long k = (long)t * kvDim + col;
                long cache = (long)a.CacheRows[t] * kvDim + col;
                float x1 = a.K[k], x2 = a.K[k + half];
                a.KCache[cache] = a.K[k] = x1 * c - x2 * s;
                a.KCache[cache + half] = a.K[k + half] = x2 * c + x1 * s;
                a.VCache[cache] = a.V[k];
                a.VCache[cache + half] = a.V[k + half];
            }
        }
    }

    /// <summary>The cos and sin tables [maxSeq, D/2] for RoPE base <paramref name="theta"/>, computed as Hugging Face does (float32).</summary>
    public static (float[] Cos, float[] Sin) Tables(int maxSeq, int headDim, float theta)
    {
        int half = headDim / 2;
        var cos = new float[maxSeq * half];
        var sin = new float[maxSeq * half];
        for (int i = 0; i < half; i++)
        {
            float invFreq = 1.0f / MathF.Pow(theta, 2 * i / (float)headDim);
            for (int p = 0; p < maxSeq; p++)
            {
                float angle = p * invFreq;
                cos[p * half + i] = MathF.Cos(angle);
                sin[p * half + i] = MathF.Sin(angle);
            }
        }
        return (cos, sin);
    }

    /// <summary>Plain C# reference: rotates one head vector in place at position <paramref name="pos"/>.</summary>
    public static void RotateReference(Span<float> head, int pos, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = head.Length / 2;
        for (int i = 0; i < half; i++)
        {
            float c = cos[pos * half + i], s = sin[pos * half + i];
            float x1 = head[i], x2 = head[i + half];
            head[i] = x1 * c - x2 * s;
            head[i + half] = x2 * c + x1 * s;
        }
    }
}
