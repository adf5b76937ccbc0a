using System.Numerics;
using System.Runtime.CompilerServices;

namespace eMoE.Compute.Host;

internal static unsafe partial class HostKernels
{
    private struct SampleJob
    {
        public float* Logits, Temperature, TopP, Uniform;
        public int* Tokens, TopK;
        public int Vocab;
    }

    /// <summary>
    /// The token of each of <paramref name="rows"/> rows of logits [R, V], with the row's own
    /// temperature (0 or less: greedy, argmax with the lowest id on ties), top-k (0 = off), top-p
    /// (1 = off) and uniform draw in [0, 1): the algorithm of <see cref="Kernels.SamplingKernels.Sample"/>
    /// (bisection over the order keys of the logits for both thresholds, then a walk in id order),
    /// so it picks the token <see cref="Kernels.SamplingKernels.SampleReference"/> picks. Each row
    /// computes its keys and unnormalised probabilities once; every bisection step is a vector pass.
    /// </summary>
    public static void Sample(WorkerPool pool, float* logits, int* tokens, float* temperature, int* topK, float* topP, float* uniform, int rows, int vocab)
    {
        if (rows <= 0) return;
        ArgumentOutOfRangeException.ThrowIfLessThan(vocab, 1);
        var job = new SampleJob { Logits = logits, Temperature = temperature, TopP = topP, Uniform = uniform, Tokens = tokens, TopK = topK, Vocab = vocab };
        long work = 0;
        for (int r = 0; r < rows; r++) work += temperature[r] <= 0f || topK[r] == 1 ? vocab : 40L * vocab;
        pool.For(rows, &SampleRows, &job, MinParallel(pool, work, ParallelElements));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SampleRows(void* state, int start, int end)
    {
        var j = (SampleJob*)state;
        for (int r = start; r < end; r++)
            j->Tokens[r] = SampleRow(j->Logits + (long)r * j->Vocab, j->Vocab, j->Temperature[r], j->TopK[r], j->TopP[r], j->Uniform[r]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int SampleRow(float* logits, int vocab, float temperature, int topK, float topP, float uniform)
    {
        int best = ArgMax(logits, vocab);
        if (temperature <= 0f || topK == 1) return best;
        float max = logits[best];
        float invT = 1.0f / temperature;
        int maxKey = OrderKey(max);
        int vw = Vector<float>.Count;
        int* keys = HostScratch.Ints(HostScratch.Keys, vocab);
        int i = 0;
        for (; i <= vocab - vw; i += vw)
        {
            var bits = Vector.AsVectorInt32(Vector.Load(logits + i));
            Vector.Store(bits ^ (Vector.ShiftRightArithmetic(bits, 31) & new Vector<int>(0x7FFFFFFF)), keys + i);
        }
        for (; i < vocab; i++) keys[i] = OrderKey(logits[i]);

        // The candidates, in id order with exp((l - max) / T): the top k (and ties), or every token.
        int* ids = HostScratch.Ints(HostScratch.CandidateIds, vocab), candidateKeys = HostScratch.Ints(HostScratch.CandidateKeys, vocab);
        float* weights = HostScratch.Floats(HostScratch.Weights, vocab);
        int n, lo;
        float kMass;
        if (topK > 0 && topK < vocab)
        {
            // Top-k: the largest threshold that still keeps at least k tokens. A threshold that keeps
            // k already (found by widening a bracket below the max) limits the bisection to the few above it.
            int bracket = Bracket(keys, null, vocab, max, 0.5f, topK, out _);
            n = Collect(keys, null, vocab, bracket, ids, candidateKeys, null);
            lo = TopKThreshold(candidateKeys, n, topK, bracket, maxKey);
            int kept = 0;
            for (int c = 0; c < n; c++)
            {
                if (candidateKeys[c] < lo) continue;
                ids[kept] = ids[c];
                candidateKeys[kept++] = candidateKeys[c];
            }
            n = kept;
            kMass = 0f;
            for (int c = 0; c < n; c++) kMass += weights[c] = HostMath.Exp((logits[ids[c]] - max) * invT);
        }
        else
        {
            float* all = HostScratch.Floats(HostScratch.Probabilities, vocab);
            var maxV = new Vector<float>(max);
            var invTV = new Vector<float>(invT);
            for (i = 0; i <= vocab - vw; i += vw) Vector.Store(HostMath.Exp((Vector.Load(logits + i) - maxV) * invTV), all + i);
            for (; i < vocab; i++) all[i] = HostMath.Exp((logits[i] - max) * invT);
            kMass = MassAtLeast(keys, all, vocab, int.MinValue);
            lo = int.MinValue;
            int kept = vocab;
            if (topP < 1f)
                lo = Bracket(keys, all, vocab, max, 0.5f * temperature, topP * kMass, out kept);
            if (topP < 1f && 4 * kept < vocab)
            {
                // Only the tokens above a threshold whose mass already reaches p can be kept: a few, usually.
                n = Collect(keys, all, vocab, lo, ids, candidateKeys, weights);
            }
            else
            {
                n = vocab;
                ids = null;
                candidateKeys = keys;
                weights = all;
            }
        }

        // Top-p: the largest threshold whose kept mass still reaches p of the top-k mass.
        int key = topP < 1f ? TopPThreshold(candidateKeys, weights, n, lo, maxKey, topP * kMass) : lo;

        // The draw: the first kept token, in id order, at which the cumulative mass passes uniform x the kept mass.
        float target = uniform * MassAtLeast(candidateKeys, weights, n, key);
        float cumulative = 0f;
        int chosen = best;
        var keyV = new Vector<int>(key);
        for (int c = 0; c < n; c += vw)
        {
            if (c <= n - vw && !Vector.GreaterThanOrEqualAny(Vector.Load(candidateKeys + c), keyV)) continue;
            for (int l = c, e = Math.Min(n, c + vw); l < e; l++)
            {
                if (candidateKeys[l] < key) continue;
                chosen = ids == null ? l : ids[l];
                cumulative += weights[l];
                if (cumulative > target) return chosen;
            }
        }
        return chosen;
    }

    /// <summary>
    /// A key threshold max - s, s = <paramref name="spread"/>, 2 s, 4 s, ..., that keeps at least
    /// <paramref name="need"/> tokens (or, with <paramref name="weights"/>, that much mass); int.MinValue if none does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Bracket(int* keys, float* weights, int n, float max, float spread, float need, out int kept)
    {
        for (int step = 0; step < 64; step++, spread *= 2)
        {
            float t = max - spread;
            if (float.IsNegativeInfinity(t) || float.IsNaN(t)) break;
            int key = OrderKey(t);
            if (weights == null)
            {
                kept = CountAtLeast(keys, n, key);
                if (kept >= need) return key;
            }
            else if (MassAtLeast(keys, weights, n, key, out kept) >= need) return key;
        }
        kept = n;
        return int.MinValue;
    }

    /// <summary>The tokens whose key is at least <paramref name="threshold"/>, in id order: ids, keys (and weights); returns how many.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Collect(int* keys, float* weights, int n, int threshold, int* ids, int* outKeys, float* outWeights)
    {
        int vw = Vector<int>.Count, count = 0;
        var t = new Vector<int>(threshold);
        for (int i = 0; i < n; i += vw)
        {
            if (i <= n - vw && !Vector.GreaterThanOrEqualAny(Vector.Load(keys + i), t)) continue;
            for (int l = i, e = Math.Min(n, i + vw); l < e; l++)
            {
                if (keys[l] < threshold) continue;
                ids[count] = l;
                outKeys[count] = keys[l];
                if (weights != null) outWeights[count] = weights[l];
                count++;
            }
        }
        return count;
    }

    /// <summary>
    /// The largest key threshold in [<paramref name="lo"/>, <paramref name="hi"/>] that keeps at
    /// least <paramref name="k"/> of the keys (the kernel's bisection; lo must keep k); the keys
    /// still undecided are compacted away when down to an eighth, so the passes shrink.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int TopKThreshold(int* keys, int n, int k, long lo, long hi)
    {
        int* work = HostScratch.Ints(HostScratch.WorkKeys, n);
        int* current = keys;
        int length = n, above = 0, atLeastLo = n, aboveHi = 0; // counts within current: key >= lo, key > hi
        while (lo < hi)
        {
            long mid = lo + (hi - lo + 1) / 2;
            int count = CountAtLeast(current, length, (int)mid);
            if (above + count >= k)
            {
                lo = mid;
                atLeastLo = count;
            }
            else
            {
                hi = mid - 1;
                aboveHi = count;
            }
            int undecided = atLeastLo - aboveHi;
            if (8 * undecided < length) // a scalar pass: worth it once the vector passes would cover 8x more
            {
                int kept = 0;
                for (int i = 0; i < length; i++)
                {
                    int key = current[i];
                    if (key >= lo && key <= hi) work[kept++] = key;
                }
                above += aboveHi;
                current = work;
                length = atLeastLo = kept;
                aboveHi = 0;
            }
        }
        return (int)lo;
    }

    /// <summary>
    /// The largest key threshold in [<paramref name="lo"/>, <paramref name="hi"/>] whose kept mass
    /// still reaches <paramref name="need"/> (the kernel's bisection), compacting like <see cref="TopKThreshold"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int TopPThreshold(int* keys, float* weights, int n, long lo, long hi, float need)
    {
        int* workKeys = HostScratch.Ints(HostScratch.WorkKeys, n);
        float* workWeights = HostScratch.Floats(HostScratch.WorkWeights, n);
        int* currentKeys = keys;
        float* currentWeights = weights;
        int length = n, atLeastLo = n, aboveHi = 0;
        float above = 0f, massAboveHi = 0f;
        while (lo < hi)
        {
            long mid = lo + (hi - lo + 1) / 2;
            float mass = MassAtLeast(currentKeys, currentWeights, length, (int)mid, out int count);
            if (above + mass >= need)
            {
                lo = mid;
                atLeastLo = count;
            }
            else
            {
                hi = mid - 1;
                aboveHi = count;
                massAboveHi = mass;
            }
            int undecided = atLeastLo - aboveHi;
            if (8 * undecided < length) // a scalar pass: worth it once the vector passes would cover 8x more
            {
                int kept = 0;
                for (int i = 0; i < length; i++)
                {
                    int key = currentKeys[i];
                    if (key < lo || key > hi) continue;
                    workKeys[kept] = key;
                    workWeights[kept++] = currentWeights[i];
                }
                above += massAboveHi;
                currentKeys = workKeys;
                currentWeights = workWeights;
                length = atLeastLo = kept;
                aboveHi = 0;
                massAboveHi = 0f;
            }
        }
        return (int)lo;
    }

    /// <summary>An integer that orders like the float (as <see cref="Kernels.SamplingKernels.OrderKey"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int OrderKey(float value)
    {
        int bits = BitConverter.SingleToInt32Bits(value);
        return bits >= 0 ? bits : bits ^ 0x7FFFFFFF;
    }

    /// <summary>The first index of the largest logit (a later equal value does not replace it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int ArgMax(float* x, int n)
    {
        float max = Max(x, n);
        int vw = Vector<float>.Count, i = 0;
        var mv = new Vector<float>(max);
        for (; i <= n - vw; i += vw)
        {
            if (Vector.EqualsAny(Vector.Load(x + i), mv)) break;
        }
        for (; i < n; i++)
        {
            if (x[i] == max) return i;
        }
        return 0; // only NaNs: the kernel keeps index 0
    }

    /// <summary>How many keys are at least <paramref name="threshold"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int CountAtLeast(int* keys, int n, int threshold)
    {
        int vw = Vector<int>.Count, i = 0;
        var t = new Vector<int>(threshold);
        var count = Vector<int>.Zero;
        for (; i <= n - vw; i += vw) count -= Vector.GreaterThanOrEqual(Vector.Load(keys + i), t); // true lanes are -1
        int total = Vector.Sum(count);
        for (; i < n; i++)
        {
            if (keys[i] >= threshold) total++;
        }
        return total;
    }

    /// <summary>Sum of the weights whose key is at least <paramref name="threshold"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MassAtLeast(int* keys, float* weights, int n, int threshold) => MassAtLeast(keys, weights, n, threshold, out _);

    /// <summary>Sum and number of the weights whose key is at least <paramref name="threshold"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float MassAtLeast(int* keys, float* weights, int n, int threshold, out int count)
    {
        int vw = Vector<float>.Count, i = 0;
        var t = new Vector<int>(threshold);
        var sum = Vector<float>.Zero;
        var counts = Vector<int>.Zero;
        for (; i <= n - vw; i += vw)
        {
            var kept = Vector.GreaterThanOrEqual(Vector.Load(keys + i), t);
            sum += Vector.ConditionalSelect(kept, Vector.Load(weights + i), Vector<float>.Zero);
            counts -= kept;
        }
        float total = Vector.Sum(sum);
        count = Vector.Sum(counts);
        for (; i < n; i++)
        {
            if (keys[i] < threshold) continue;
            total += weights[i];
            count++;
        }
        return total;
    }

    private struct NllJob
    {
        public float* Logits, Nll;
        public int* Targets;
        public int Vocab;
    }

    /// <summary>
    /// nll[r] = logsumexp(logits[r]) - logits[r][targets[r]] for <paramref name="count"/> rows of
    /// logits [R, V], like <see cref="Kernels.LossKernels.NextTokenNll"/>.
    /// </summary>
    public static void NextTokenNll(WorkerPool pool, float* logits, int* targets, float* nll, int count, int vocab)
    {
        if (count <= 0) return;
        ArgumentOutOfRangeException.ThrowIfLessThan(vocab, 1);
        var job = new NllJob { Logits = logits, Nll = nll, Targets = targets, Vocab = vocab };
        pool.For(count, &NllRows, &job, MinParallel(pool, (long)count * vocab * 4, ParallelElements));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void NllRows(void* state, int start, int end)
    {
        var j = (NllJob*)state;
        int vocab = j->Vocab, vw = Vector<float>.Count;
        for (int r = start; r < end; r++)
        {
            float* row = j->Logits + (long)r * vocab;
            int target = j->Targets[r];
            if ((uint)target >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(NllJob.Targets), $"row {r}: target {target} outside a vocabulary of {vocab}");
            float max = Max(row, vocab);
            var mv = new Vector<float>(max);
            var acc = Vector<float>.Zero;
            int i = 0;
            for (; i <= vocab - vw; i += vw) acc += HostMath.Exp(Vector.Load(row + i) - mv);
            float sum = Vector.Sum(acc);
            for (; i < vocab; i++) sum += HostMath.Exp(row[i] - max);
            j->Nll[r] = max + MathF.Log(sum) - row[target];
        }
    }
}
