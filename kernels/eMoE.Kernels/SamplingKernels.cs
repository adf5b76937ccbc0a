using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>Arguments of <see cref="SamplingKernels.Sample"/>.</summary>
public struct SampleArgs
{
    /// <summary>Logits of the position to sample [V].</summary>
    public ArrayView<float> Logits;
    /// <summary>Output [1]: the chosen token.</summary>
    public ArrayView<int> Token;
    /// <summary>V.</summary>
    public int Vocab;
    /// <summary>Temperature; 0 or less means greedy (argmax, lowest id on ties).</summary>
    public float Temperature;
    /// <summary>Keep only the k most likely tokens (ties at the k-th value kept); 0 = off.</summary>
    public int TopK;
    /// <summary>Keep the smallest most-likely set whose probability reaches p; 1 = off.</summary>
    public float TopP;
    /// <summary>A uniform random number in [0, 1) drawn by the host from the seeded generator.</summary>
    public float Uniform;
}

/// <summary>
/// Sampling as Hugging Face orders it: temperature, then top-k, then top-p, then a draw. Thresholds
/// are found by bisection over the order-preserving integer image of the logits, so no sort is needed
/// and the result is exact.
/// </summary>
public static class SamplingKernels
{
    /// <summary>Single-thread kernel (V passes of a few dozen bisection steps; negligible next to the LM head).</summary>
    public static void Sample(SampleArgs a)
    {
        if (Grid.GlobalIndex.X != 0) return;
        int best = 0;
        for (int i = 1; i < a.Vocab; i++)
        {
            if (a.Logits[i] > a.Logits[best]) best = i;
        }
        if (a.Temperature <= 0f || a.TopK == 1)
        {
            a.Token[0] = best;
            return;
        }
        float max = a.Logits[best];
        float invT = 1.0f / a.Temperature;

        // Top-k: the largest threshold that still keeps at least k tokens.
        int kKey = int.MinValue;
        if (a.TopK > 0 && a.TopK < a.Vocab)
        {
            long lo = int.MinValue, hi = OrderKey(max);
            while (lo < hi)
            {
                long mid = lo + (hi - lo + 1) / 2;
                int count = 0;
                for (int i = 0; i < a.Vocab; i++)
                {
                    if (OrderKey(a.Logits[i]) >= mid) count++;
                }
                if (count >= a.TopK) lo = mid; else hi = mid - 1;
            }
            kKey = (int)lo;
        }
        float kMass = Mass(a, kKey, max, invT);

        // Top-p: the largest threshold whose kept mass still reaches p of the top-k mass.
        int key = kKey;
        if (a.TopP < 1f)
        {
            long lo = kKey, hi = OrderKey(max);
            while (lo < hi)
            {
                long mid = lo + (hi - lo + 1) / 2;
                if (Mass(a, (int)mid, max, invT) >= a.TopP * kMass) lo = mid; else hi = mid - 1;
            }
            key = (int)lo;
        }

        float target = a.Uniform * Mass(a, key, max, invT);
        float cumulative = 0f;
        int chosen = best;
        for (int i = 0; i < a.Vocab; i++)
        {
            if (OrderKey(a.Logits[i]) < key) continue;
            chosen = i;
            cumulative += XMath.Exp((a.Logits[i] - max) * invT);
            if (cumulative > target) break;
        }
        a.Token[0] = chosen;
    }

    private static float Mass(SampleArgs a, int minKey, float max, float invT)
    {
        float sum = 0f;
        for (int i = 0; i < a.Vocab; i++)
        {
            if (OrderKey(a.Logits[i]) >= minKey) sum += XMath.Exp((a.Logits[i] - max) * invT);
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
