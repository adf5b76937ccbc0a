using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>Negative log-likelihood of next tokens, for perplexity.</summary>
public static class LossKernels
{
    /// <summary>
    /// nll[r] = logsumexp(logits[r]) - logits[r][targets[r]] for r in 0..count-1 (logits [R, V];
    /// targets [R]: the token that follows each row's position). One thread per row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void NextTokenNll(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> nll, int count, int vocab)
    {
        int stride = Lanes.Stride;
        for (int t = Grid.GlobalIndex.X; t < count; t += stride)
        {
            long row = (long)t * vocab;
            float max = float.NegativeInfinity;
            for (int v = 0; v < vocab; v++) max = XMath.Max(max, logits[row + v]);
            float sum = 0f;
            for (int v = 0; v < vocab; v++) sum += XMath.Exp(logits[row + v] - max);
            nll[t] = max + XMath.Log(sum) - logits[row + targets[t]];
        }
    }

    /// <summary>Plain C# reference of <see cref="NextTokenNll"/> for one position.</summary>
    public static double NllReference(ReadOnlySpan<float> logits, int target)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits) max = Math.Max(max, l);
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp(l - max);
        return max + Math.Log(sum) - logits[target];
    }
}
