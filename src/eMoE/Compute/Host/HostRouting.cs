using System.Runtime.CompilerServices;

namespace eMoE.Compute.Host;

internal static unsafe partial class HostKernels
{
    /// <summary>
    /// Softmax over each token's router logits [T, E], then its top <paramref name="topK"/> experts
    /// (best first, ties to the lower id) and their probabilities into ids and weights [T, K],
    /// renormalised to sum to one when <paramref name="renormalize"/>; like
    /// <see cref="Kernels.RouterKernels.SoftmaxTopK"/>. Tiny (T x E), so on the calling thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SoftmaxTopK(float* logits, int* ids, float* weights, int tokens, int experts, int topK, bool renormalize)
    {
        if (topK > experts) throw new ArgumentOutOfRangeException(nameof(topK), $"top-{topK} of {experts} experts");
        for (int t = 0; t < tokens; t++)
        {
            float* row = logits + (long)t * experts;
            int* chosen = ids + (long)t * topK;
            float* p = weights + (long)t * topK;
            float max = float.NegativeInfinity;
            for (int e = 0; e < experts; e++) max = Math.Max(max, row[e]);
            float sum = 0f;
            for (int e = 0; e < experts; e++) sum += MathF.Exp(row[e] - max);

            float chosenSum = 0f;
            for (int j = 0; j < topK; j++)
            {
                int best = -1;
                float bestLogit = float.NegativeInfinity;
                for (int e = 0; e < experts; e++)
                {
                    float l = row[e];
                    if ((best < 0 || l > bestLogit) && !Contains(chosen, j, e))
                    {
                        best = e;
                        bestLogit = l;
                    }
                }
                chosen[j] = best;
                p[j] = MathF.Exp(bestLogit - max) / sum;
                chosenSum += p[j];
            }
            if (renormalize)
            {
                for (int j = 0; j < topK; j++) p[j] /= chosenSum;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Contains(int* ids, int count, int id)
    {
        for (int j = 0; j < count; j++)
        {
            if (ids[j] == id) return true;
        }
        return false;
    }

    /// <summary>
    /// Groups the assignments per expert, exactly like <see cref="Kernels.RouterKernels.GroupByExpert"/>:
    /// offsets [E + 1] with offsets[e] = the number of ids below e and offsets[E] = assignments;
    /// order [assignments] holding expert e's assignment indices, ascending, in
    /// order[offsets[e] .. offsets[e + 1]). A counting sort: O(assignments + experts).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GroupByExpert(int* expertIds, int* offsets, int* order, int assignments, int experts)
    {
        if (experts <= 0) return;
        new Span<int>(offsets, experts + 1).Clear();
        int below = 0; // ids under 0 count below every expert, as in the kernel
        for (int i = 0; i < assignments; i++)
        {
            int id = expertIds[i];
            if (id < 0) below++;
            else if (id < experts) offsets[id + 1]++;
        }
        offsets[0] = below;
        for (int e = 1; e < experts; e++) offsets[e] += offsets[e - 1]; // offsets[e] = start of expert e
        for (int i = 0; i < assignments; i++)
        {
            int id = expertIds[i];
            if ((uint)id < (uint)experts) order[offsets[id]++] = i;     // offsets[e] walks to expert e's end
        }
        for (int e = experts - 1; e >= 1; e--) offsets[e] = offsets[e - 1]; // an end is the next expert's start
        offsets[0] = below;
        offsets[experts] = assignments;
    }
}
