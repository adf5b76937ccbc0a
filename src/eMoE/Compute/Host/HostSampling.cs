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

        // Once per row: order keys and exp((l - max) / T); the bisections then only compare and add.
        int* keys = HostScratch.Ints(HostScratch.Keys, vocab);
        float* weights = HostScratch.Floats(HostScratch.Weights, vocab);
        int vw = Vector<float>.Count, i = 0;
        var maxV = new Vector<float>(max);
        var invTV = new Vector<float>(invT);
        for (; i <= vocab - vw; i += vw)
        {
            var l = Vector.Load(logits + i);
            var bits = Vector.AsVectorInt32(l);
            Vector.Store(bits ^ (Vector.ShiftRightArithmetic(bits, 31) & new Vector<int>(0x7FFFFFFF)), keys + i);
            Vector.Store(HostMath.Exp((l - maxV) * invTV), weights + i);
        }
        for (; i < vocab; i++)
        {
            keys[i] = OrderKey(logits[i]);
            weights[i] = HostMath.Exp((logits[i] - max) * invT);
        }

        // Top-k: the largest threshold that still keeps at least k tokens.
        int kKey = int.MinValue;
        int maxKey = OrderKey(max);
        if (topK > 0 && topK < vocab)
        {
            long lo = int.MinValue, hi = maxKey;
            while (lo < hi)
            {
                long mid = lo + (hi - lo + 1) / 2;
                if (CountAtLeast(keys, vocab, (int)mid) >= topK) lo = mid; else hi = mid - 1;
            }
            kKey = (int)lo;
        }
        float kMass = MassAtLeast(keys, weights, vocab, kKey);

        // Top-p: the largest threshold whose kept mass still reaches p of the top-k mass.
        int key = kKey;
        if (topP < 1f)
        {
            long lo = kKey, hi = maxKey;
            while (lo < hi)
            {
                long mid = lo + (hi - lo + 1) / 2;
                if (MassAtLeast(keys, weights, vocab, (int)mid) >= topP * kMass) lo = mid; else hi = mid - 1;
            }
            key = (int)lo;
        }

        float target = uniform * MassAtLeast(keys, weights, vocab, key);
        float cumulative = 0f;
        int chosen = best;
        for (i = 0; i < vocab; i++)
        {
            if (keys[i] < key) continue;
            chosen = i;
            cumulative += weights[i];
            if (cumulative > target) break;
        }
        return chosen;
    }

    /// <summary>An integer that orders like the float (as <see cref="Kernels.SamplingKernels.OrderKey"/>).</summary>
    private static int OrderKey(float value)
    {
        int bits = BitConverter.SingleToInt32Bits(value);
        return bits >= 0 ? bits : bits ^ 0x7FFFFFFF;
    }

    /// <summary>The first index of the largest logit (a later equal value does not replace it).</summary>
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
    private static float MassAtLeast(int* keys, float* weights, int n, int threshold)
    {
        int vw = Vector<float>.Count, i = 0;
        var t = new Vector<int>(threshold);
        var sum = Vector<float>.Zero;
        for (; i <= n - vw; i += vw)
            sum += Vector.ConditionalSelect(Vector.GreaterThanOrEqual(Vector.Load(keys + i), t), Vector.Load(weights + i), Vector<float>.Zero);
        float total = Vector.Sum(sum);
        for (; i < n; i++)
        {
            if (keys[i] >= threshold) total += weights[i];
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
