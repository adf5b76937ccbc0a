using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>Arguments of <see cref="RouterKernels.SoftmaxTopK"/>.</summary>
public struct RouterArgs
{
    /// <summary>Router logits [T, E] (the gate projection of the normalised hidden state).</summary>
    public ArrayView<float> Logits;
    /// <summary>Chosen experts [T, K], best first.</summary>
    public ArrayView<int> ExpertIds;
    /// <summary>Their weights [T, K].</summary>
    public ArrayView<float> ExpertWeights;
    /// <summary>T: tokens.</summary>
    public int Tokens;
    /// <summary>E: experts.</summary>
    public int Experts;
    /// <summary>K: experts per token.</summary>
    public int TopK;
    /// <summary>1: renormalise the k weights to sum to one (Mixtral, norm_topk_prob).</summary>
    public int Renormalize;
}

/// <summary>Arguments of <see cref="RouterKernels.GroupByExpert"/>.</summary>
public struct GroupArgs
{
    /// <summary>Chosen experts [T * K] (assignment a = t * K + j).</summary>
    public ArrayView<int> ExpertIds;
    /// <summary>Output [E + 1]: assignments of expert e are Order[Offsets[e] .. Offsets[e+1]).</summary>
    public ArrayView<int> Offsets;
    /// <summary>Output [T * K]: assignment indices grouped by expert, in token order within an expert.</summary>
    public ArrayView<int> Order;
    /// <summary>T * K.</summary>
    public int Assignments;
    /// <summary>E.</summary>
    public int Experts;
}

/// <summary>
/// Routing: softmax over the router logits, top-k, optional renormalisation; then dynamic gating,
/// i.e. grouping the token-to-expert assignments per expert with no capacity padding and no drops.
/// </summary>
public static class RouterKernels
{
    /// <summary>One thread per token. Ties go to the lower expert id.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SoftmaxTopK(RouterArgs a)
    {
        int stride = Lanes.Stride;
        for (int t = Grid.GlobalIndex.X; t < a.Tokens; t += stride)
        {
            long row = (long)t * a.Experts;
            float max = float.NegativeInfinity;
            for (int e = 0; e < a.Experts; e++) max = XMath.Max(max, a.Logits[row + e]);
            float sum = 0f;
            for (int e = 0; e < a.Experts; e++) sum += XMath.Exp(a.Logits[row + e] - max);

            float chosenSum = 0f;
            for (int j = 0; j < a.TopK; j++)
            {
                int best = -1;
                float bestLogit = float.NegativeInfinity;
                for (int e = 0; e < a.Experts; e++)
                {
                    float l = a.Logits[row + e];
                    if ((best < 0 || l > bestLogit) && !Chosen(a.ExpertIds, t * a.TopK, j, e))
                    {
                        best = e;
                        bestLogit = l;
                    }
                }
                float p = XMath.Exp(bestLogit - max) / sum;
                a.ExpertIds[t * a.TopK + j] = best;
                a.ExpertWeights[t * a.TopK + j] = p;
                chosenSum += p;
            }
            if (a.Renormalize != 0)
            {
                for (int j = 0; j < a.TopK; j++) a.ExpertWeights[t * a.TopK + j] /= chosenSum;
            }
        }
    }

    private static bool Chosen(ArrayView<int> ids, int start, int count, int expert)
    {
        for (int j = 0; j < count; j++)
        {
            if (ids[start + j] == expert) return true;
        }
        return false;
    }

    /// <summary>One thread per expert; each finds its offset by counting assignments to lower ids.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GroupByExpert(GroupArgs a)
    {
        int stride = Lanes.Stride;
        for (int e = Grid.GlobalIndex.X; e < a.Experts; e += stride)
        {
            int before = 0;
            for (int i = 0; i < a.Assignments; i++)
            {
                if (a.ExpertIds[i] < e) before++;
            }
            a.Offsets[e] = before;
            if (e == a.Experts - 1) a.Offsets[a.Experts] = a.Assignments;
            int next = before;
            for (int i = 0; i < a.Assignments; i++)
            {
                if (a.ExpertIds[i] == e) a.Order[next++] = i;
            }
        }
    }

    /// <summary>Plain C# reference of <see cref="SoftmaxTopK"/> for one token.</summary>
    public static void SoftmaxTopKReference(ReadOnlySpan<float> logits, int topK, bool renormalize, Span<int> ids, Span<float> weights)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits) max = Math.Max(max, l);
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp(l - max);
        var order = Enumerable.Range(0, logits.Length).ToArray();
        var copy = logits.ToArray();
        Array.Sort(order, (x, y) => copy[y] != copy[x] ? copy[y].CompareTo(copy[x]) : x.CompareTo(y));
        double chosen = 0;
        for (int j = 0; j < topK; j++)
        {
            ids[j] = order[j];
            weights[j] = (float)(Math.Exp(copy[order[j]] - max) / sum);
            chosen += weights[j];
        }
        if (renormalize)
        {
            for (int j = 0; j < topK; j++) weights[j] = (float)(weights[j] / chosen);
        }
    }
}
