using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>Arguments of <see cref="SamplingKernels.Sample"/>: one row per sequence, each with its own settings.</summary>
public struct SampleArgs
{
    /// <summary>Logits of the rows to sample [R, V].</summary>
    public ArrayView<float> Logits;
    /// <summary>Output [R]: the chosen token of each row.</summary>
    public ArrayView<int> Tokens;
    /// <summary>Temperature of each row [R]; 0 or less means greedy (argmax, lowest id on ties).</summary>
    public ArrayView<float> Temperature;
    /// <summary>Keep only the k most likely tokens (ties at the k-th value kept); 0 = off [R].</summary>
    public ArrayView<int> TopK;
    /// <summary>Keep the smallest most-likely set whose probability reaches p; 1 = off [R].</summary>
    public ArrayView<float> TopP;
    /// <summary>A uniform random number in [0, 1) per row [R], drawn by the host from the sequence's seeded generator.</summary>
    public ArrayView<float> Uniform;
    /// <summary>R.</summary>
    public int Rows;
    /// <summary>V.</summary>
    public int Vocab;
}

/// <summary>
/// Sampling as Hugging Face orders it: temperature, then top-k, then top-p, then a draw. Thresholds
/// are found by bisection over the order-preserving integer image of the logits, so no sort is needed
/// and the result is exact.
/// </summary>
public static class SamplingKernels
{
    /// <summary>One thread per row (V passes of a few dozen bisection steps each; negligible next to the LM head).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Sample(SampleArgs a)
    {
        int stride = Lanes.Stride;
        for (int r = Grid.GlobalIndex.X; r < a.Rows; r += stride)
            a.Tokens[r] = SampleRow(a.Logits.SubView((long)r * a.Vocab, a.Vocab), a.Vocab, a.Temperature[r], a.TopK[r], a.TopP[r], a.Uniform[r]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int SampleRow(ArrayView<float> logits, int vocab, float temperature, int topK, float topP, float uniform)
    {
        int best = 0;
        for (int i = 1; i < vocab; i++)
        {
            if (logits[i] > logits[best]) best = i;
        }
        if (temperature <= 0f || topK == 1) return best;
        float max = logits[best];
        float invT = 1.0f / temperature;

        // Top-k: the largest threshold that still keeps at least k tokens.
        int kKey = int.MinValue;
        if (topK > 0 && topK < vocab)
        {
            long lo = int.MinValue, hi = OrderKey(max);
            while (lo < hi)
            {
                long mid = lo + (hi - lo + 1) / 2;
                int count = 0;
                for (int i = 0; i < vocab; i++)
                {
                    if (OrderKey(logits[i]) >= mid) count++;
                }
                if (count >= topK) lo = mid; else hi = mid - 1;
            }
            kKey = (int)lo;
        }
        float kMass = Mass(logits, vocab, kKey, max, invT);

        // Top-p: the largest threshold whose kept mass still reaches p of the top-k mass.
        int key = kKey;
        if (topP < 1f)
        {
            long lo = kKey, hi = OrderKey(max);
            while (lo < hi)
            {
                long mid = lo + (hi - lo + 1) / 2;
                if (Mass(logits, vocab, (int)mid, max, invT) >= topP * kMass) lo = mid; else hi = mid - 1;
            }
            key = (int)lo;
        }

        float target = uniform * Mass(logits, vocab, key, max, invT);
        float cumulative = 0f;
        int chosen = best;
        for (int i = 0; i < vocab; i++)
        {
            if (OrderKey(logits[i]) < key) continue;
            chosen = i;
            cumulative += XMath.Exp((logits[i] - max) * invT);
            if (cumulative > target) break;
        }
        return chosen;
    }

    private static float Mass(ArrayView<float> logits, int vocab, int minKey, float max, float invT)
    {
        float sum = 0f;
        for (int i = 0; i < vocab; i++)
        {
            if (OrderKey(logits[i]) >= minKey) sum += XMath.Exp((logits[i] - max) * invT);
        }
        return sum;
    }

    /// <summary>An integer that orders like the float (for finite values and infinities).</summary>
    public static int OrderKey(float value)
    {
        int bits = (int)Interop.FloatAsInt(value);
        return bits >= 0 ? bits : bits ^ 0x7FFFFFFF;
    }

    /// <summary>
    /// Plain C# reference: sorts instead of bisecting. Same inputs give the same token.
    /// </summary>
    public static int SampleReference(ReadOnlySpan<float> logits, float temperature, int topK, float topP, float uniform)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best]) best = i;
        }
        if (temperature <= 0f || topK == 1) return best;
        var sorted = logits.ToArray();
        Array.Sort(sorted, (x, y) => y.CompareTo(x));
        float kThreshold = topK > 0 && topK < logits.Length ? sorted[topK - 1] : float.NegativeInfinity;
        float max = logits[best];
        double Weight(float l) => Math.Exp((l - max) / (double)temperature);
        double kMass = sorted.Where(l => l >= kThreshold).Sum(Weight);
        float threshold = kThreshold;
        if (topP < 1f)
        {
            // Walk down the distinct values until the kept mass reaches p (ties kept together).
            double mass = 0;
            for (int i = 0; i < sorted.Length && sorted[i] >= kThreshold; i++)
            {
                mass += Weight(sorted[i]);
                bool lastOfValue = i + 1 == sorted.Length || sorted[i + 1] != sorted[i];
                if (lastOfValue && mass >= topP * kMass)
                {
                    threshold = sorted[i];
                    break;
                }
            }
        }
        double total = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            if (logits[i] >= threshold) total += Weight(logits[i]);
        }
        double target = uniform * total, cumulative = 0;
        int chosen = best;
        for (int i = 0; i < logits.Length; i++)
        {
            if (logits[i] < threshold) continue;
            chosen = i;
            cumulative += Weight(logits[i]);
            if (cumulative > target) break;
        }
        return chosen;
    }
}
