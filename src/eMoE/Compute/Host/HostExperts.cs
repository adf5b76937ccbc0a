using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using eMoE.Model;

namespace eMoE.Compute.Host;

internal static unsafe partial class HostKernels
{
    private struct ExpertJob
    {
        public float* X, XPaired;              // [T, H]; paired copy for 16-bit gate/up (or X)
        public int* Order, Offsets, Active;    // Active: the experts that run, ActiveCount of them
        public HostWeight* Gate, Up, Down;     // [E] each
        public float* Hidden, HiddenPaired;    // [T*K, I]; paired copy for 16-bit down (or null)
        public float* Output;                  // [T*K, H]
        public int ActiveCount, TopK, H, I, Blocks;
    }

    /// <summary>
    /// The SwiGLU experts over assignments grouped per expert, like
    /// <see cref="Kernels.ExpertKernels.GateUp"/> then <see cref="Kernels.ExpertKernels.Down"/>:
    /// hidden[a, :] = silu(gate[e] x[t]) * (up[e] x[t]) and output[a, :] = down[e] hidden[a, :] for
    /// every assignment a = t * K + j of expert e = expertIds[a], the assignments of e being
    /// order[offsets[e] .. offsets[e + 1]) (from <see cref="GroupByExpert"/>). gate[e] and up[e]
    /// are [I, H], down[e] is [H, I], each in place in its dtype (gate and up of one expert alike).
    /// Experts with present[e] false are skipped: their rows of hidden and output are not written.
    /// Two passes over the pool (gate/up, then down), each over (expert, block of 8 rows) items, so
    /// a block's weights are read once for all of the expert's tokens.
    /// </summary>
    public static void ExpertFfn(WorkerPool pool, float* x, int* expertIds, int* order, int* offsets, ReadOnlySpan<HostWeight> gate,
        ReadOnlySpan<HostWeight> up, ReadOnlySpan<HostWeight> down, ReadOnlySpan<bool> present, float* hidden, float* output,
        int tokens, int topK, int hiddenSize, int intermediate)
    {
        int experts = present.Length;
        if (gate.Length < experts || up.Length < experts || down.Length < experts)
            throw new ArgumentException($"{experts} experts need as many gate, up and down weights ({gate.Length}, {up.Length}, {down.Length})");
        if (tokens <= 0 || experts == 0) return;
        int h = hiddenSize, inter = intermediate;
        long size = (long)inter * h;
        int* active = HostScratch.Ints(HostScratch.Keys, experts);
        int count = 0;
        long assigned = 0;
        bool pairX = false, pairHidden = false;
        for (int e = 0; e < experts; e++)
        {
            int m = offsets[e + 1] - offsets[e];
            if (!present[e] || m <= 0) continue;
            if (gate[e].Elements < size || up[e].Elements < size || down[e].Elements < size)
                throw new ArgumentException($"expert {e}: weights of {gate[e].Elements}, {up[e].Elements}, {down[e].Elements} elements; [{inter}, {h}] needs {size}");
            if (gate[e].DType != up[e].DType) throw new ArgumentException($"expert {e}: gate is {gate[e].DType}, up is {up[e].DType}");
            Debug.Assert(expertIds[order[offsets[e]]] == e, "order and offsets group the assignments of expertIds");
            pairX |= gate[e].DType != TensorDType.F32;
            pairHidden |= down[e].DType != TensorDType.F32;
            active[count++] = e;
            assigned += m;
        }
        if (count == 0) return;

        int assignments = tokens * topK;
        float* xPaired = x, hiddenPaired = null;
        if (pairX && h >= WeightFormat.Block)
        {
            xPaired = HostScratch.Floats(HostScratch.SharedInput, (long)tokens * h);
            for (int t = 0; t < tokens; t++) WeightFormat.Pair(x + (long)t * h, xPaired + (long)t * h, h);
        }
        if (pairHidden && inter >= WeightFormat.Block) hiddenPaired = HostScratch.Floats(HostScratch.SharedHidden, (long)assignments * inter);
        fixed (HostWeight* g = gate, u = up, d = down)
        {
            var job = new ExpertJob
            {
                X = x, XPaired = xPaired, Order = order, Offsets = offsets, Active = active, Gate = g, Up = u, Down = d,
                Hidden = hidden, HiddenPaired = hiddenPaired, Output = output, ActiveCount = count, TopK = topK, H = h, I = inter,
            };
            int minParallel = MinParallel(pool, assigned * 3 * size);
            job.Blocks = (inter + HostDot.Rows - 1) / HostDot.Rows;
            pool.For(count * job.Blocks, &GateUpItems, &job, minParallel);
            job.Blocks = (h + HostDot.Rows - 1) / HostDot.Rows;
            pool.For(count * job.Blocks, &DownItems, &job, minParallel);
        }
    }

    /// <summary>Items [start, end) of the gate/up pass: item = active expert * blocks + block of 8 intermediate rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GateUpItems(void* state, int start, int end)
    {
        var j = (ExpertJob*)state;
        for (int item = start; item < end; item++)
        {
            int e = j->Active[item / j->Blocks], block = item % j->Blocks;
            switch (j->Gate[e].DType)
            {
                case TensorDType.F32: GateUpBlock<F32Weights>(j, e, block, j->X); break;
                case TensorDType.BF16: GateUpBlock<BF16Weights>(j, e, block, j->XPaired); break;
                default: GateUpBlock<F16Weights>(j, e, block, j->XPaired); break;
            }
        }
    }

    /// <summary>Intermediate rows block * 8 .. + 7 of expert <paramref name="e"/> for all its assignments.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GateUpBlock<TW>(ExpertJob* j, int e, int block, float* x) where TW : struct, IWeightFormat
    {
        int h = j->H, inter = j->I, topK = j->TopK, i0 = block * HostDot.Rows, rows = Math.Min(HostDot.Rows, inter - i0);
        long rowBytes = (long)h * TW.ItemSize;
        byte* gate = (byte*)j->Gate[e].Data + i0 * rowBytes, up = (byte*)j->Up[e].Data + i0 * rowBytes;
        int* list = j->Order + j->Offsets[e];
        int m = j->Offsets[e + 1] - j->Offsets[e], r = 0;
        if (rows == HostDot.Rows)
        {
            // The expert's next block of gate and up rows streams in while these are multiplied, a share per kernel call.
            long blockBytes = HostDot.Rows * rowBytes;
            bool more = i0 + 2 * HostDot.Rows <= inter;
            byte* gateNext = more ? gate + blockBytes : null, upNext = more ? up + blockBytes : null;
            int calls = m / 2 * 2 + m % 2, call = 0;
            int c = 0;
            for (; c + 2 <= m; c += 2)
            {
                int a0 = list[c], a1 = list[c + 1];
                float* x0 = x + (long)(a0 / topK) * h, x1 = x + (long)(a1 / topK) * h;
                for (int half = 0; half < 2; half++, call++)
                {
                    long offset = half * 4 * rowBytes;
                    byte* p = HostDot.Share(gateNext, blockBytes, call, calls, out long pBytes);
                    HostDot.Dot4x2<TW>(gate + offset, rowBytes, x0, x1, h, p, pBytes, out var g0, out var g1);
                    p = HostDot.Share(upNext, blockBytes, call, calls, out pBytes);
                    HostDot.Dot4x2<TW>(up + offset, rowBytes, x0, x1, h, p, pBytes, out var u0, out var u1);
                    StoreHidden(j, a0, i0 + half * 4, Silu(g0) * u0);
                    StoreHidden(j, a1, i0 + half * 4, Silu(g1) * u1);
                }
            }
            if (c < m)
            {
                int a = list[c];
                float* x0 = x + (long)(a / topK) * h;
                byte* p = HostDot.Share(gateNext, blockBytes, call, calls, out long pBytes);
                HostDot.Dot8x1<TW>(gate, rowBytes, x0, h, p, pBytes, out var g0, out var g1);
                p = HostDot.Share(upNext, blockBytes, call, calls, out pBytes);
                HostDot.Dot8x1<TW>(up, rowBytes, x0, h, p, pBytes, out var u0, out var u1);
                StoreHidden(j, a, i0, Silu(g0) * u0);
                StoreHidden(j, a, i0 + 4, Silu(g1) * u1);
            }
            return;
        }
        if (rows >= 4)
        {
            int c = 0;
            for (; c + 2 <= m; c += 2)
            {
                int a0 = list[c], a1 = list[c + 1];
                float* x0 = x + (long)(a0 / topK) * h, x1 = x + (long)(a1 / topK) * h;
                HostDot.Dot4x2<TW>(gate, rowBytes, x0, x1, h, null, 0, out var g0, out var g1);
                HostDot.Dot4x2<TW>(up, rowBytes, x0, x1, h, null, 0, out var u0, out var u1);
                StoreHidden(j, a0, i0, Silu(g0) * u0);
                StoreHidden(j, a1, i0, Silu(g1) * u1);
            }
            if (c < m)
            {
                int a = list[c];
                float* x0 = x + (long)(a / topK) * h;
                StoreHidden(j, a, i0, Silu(HostDot.Dot4x1<TW>(gate, rowBytes, x0, h)) * HostDot.Dot4x1<TW>(up, rowBytes, x0, h));
            }
            r = 4;
        }
        for (; r < rows; r++)
        {
            for (int c = 0; c < m; c++)
            {
                int a = list[c];
                float* x0 = x + (long)(a / topK) * h;
                float g = HostDot.Dot1x1<TW>(gate + r * rowBytes, x0, h), u = HostDot.Dot1x1<TW>(up + r * rowBytes, x0, h);
                float v = (Silu(Vector128.Create(g)) * Vector128.Create(u)).ToScalar(); // the same SiLU as the vector path
                j->Hidden[(long)a * inter + i0 + r] = v;
                if (j->HiddenPaired != null) j->HiddenPaired[(long)a * inter + WeightFormat.PairedIndex(i0 + r, inter)] = v;
            }
        }
    }

    /// <summary>SiLU, x * sigmoid(x), on four values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Silu(Vector128<float> x) => x / (Vector128<float>.One + HostMath.Exp(-x));

    /// <summary>hidden[a, i0 .. i0 + 3] = values, and into the paired copy when the down weights need one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreHidden(ExpertJob* j, int a, int i0, Vector128<float> values)
    {
        int inter = j->I;
        values.Store(j->Hidden + (long)a * inter + i0);
        if (j->HiddenPaired == null) return;
        float* row = j->HiddenPaired + (long)a * inter;
        for (int r = 0; r < 4; r++) row[WeightFormat.PairedIndex(i0 + r, inter)] = values.GetElement(r);
    }

    /// <summary>Items [start, end) of the down pass: item = active expert * blocks + block of 8 output rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DownItems(void* state, int start, int end)
    {
        var j = (ExpertJob*)state;
        for (int item = start; item < end; item++)
        {
            int e = j->Active[item / j->Blocks], block = item % j->Blocks;
            float* paired = j->HiddenPaired != null ? j->HiddenPaired : j->Hidden;
            switch (j->Down[e].DType)
            {
                case TensorDType.F32: DownBlock<F32Weights>(j, e, block, j->Hidden); break;
                case TensorDType.BF16: DownBlock<BF16Weights>(j, e, block, paired); break;
                default: DownBlock<F16Weights>(j, e, block, paired); break;
            }
        }
    }

    /// <summary>Output rows block * 8 .. + 7 of expert <paramref name="e"/>'s down projection for all its assignments.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DownBlock<TW>(ExpertJob* j, int e, int block, float* hidden) where TW : struct, IWeightFormat
    {
        int h = j->H, inter = j->I, r0 = block * HostDot.Rows, rows = Math.Min(HostDot.Rows, h - r0);
        long rowBytes = (long)inter * TW.ItemSize;
        byte* down = (byte*)j->Down[e].Data + r0 * rowBytes;
        int* list = j->Order + j->Offsets[e];
        int m = j->Offsets[e + 1] - j->Offsets[e], r = 0;
        if (rows == HostDot.Rows)
        {
            long blockBytes = HostDot.Rows * rowBytes;
            byte* next = r0 + 2 * HostDot.Rows <= h ? down + blockBytes : null;
            int calls = m / 2 * 2 + m % 2, call = 0;
            int c = 0;
            for (; c + 2 <= m; c += 2)
            {
                int a0 = list[c], a1 = list[c + 1];
                float* x0 = hidden + (long)a0 * inter, x1 = hidden + (long)a1 * inter, y0 = j->Output + (long)a0 * h + r0, y1 = j->Output + (long)a1 * h + r0;
                byte* pf = HostDot.Share(next, blockBytes, call++, calls, out long pfBytes);
                HostDot.Dot4x2<TW>(down, rowBytes, x0, x1, inter, pf, pfBytes, out var p0, out var p1);
                pf = HostDot.Share(next, blockBytes, call++, calls, out pfBytes);
                HostDot.Dot4x2<TW>(down + 4 * rowBytes, rowBytes, x0, x1, inter, pf, pfBytes, out var q0, out var q1);
                p0.Store(y0);
                q0.Store(y0 + 4);
                p1.Store(y1);
                q1.Store(y1 + 4);
            }
            if (c < m)
            {
                int a = list[c];
                float* y0 = j->Output + (long)a * h + r0;
                byte* pf = HostDot.Share(next, blockBytes, call, calls, out long pfBytes);
                HostDot.Dot8x1<TW>(down, rowBytes, hidden + (long)a * inter, inter, pf, pfBytes, out var p0, out var q0);
                p0.Store(y0);
                q0.Store(y0 + 4);
            }
            return;
        }
        if (rows >= 4)
        {
            int c = 0;
            for (; c + 2 <= m; c += 2)
            {
                int a0 = list[c], a1 = list[c + 1];
                HostDot.Dot4x2<TW>(down, rowBytes, hidden + (long)a0 * inter, hidden + (long)a1 * inter, inter, null, 0, out var p0, out var p1);
                p0.Store(j->Output + (long)a0 * h + r0);
                p1.Store(j->Output + (long)a1 * h + r0);
            }
            if (c < m)
            {
                int a = list[c];
                HostDot.Dot4x1<TW>(down, rowBytes, hidden + (long)a * inter, inter).Store(j->Output + (long)a * h + r0);
            }
            r = 4;
        }
        for (; r < rows; r++)
        {
            for (int c = 0; c < m; c++)
            {
                int a = list[c];
                j->Output[(long)a * h + r0 + r] = HostDot.Dot1x1<TW>(down + r * rowBytes, hidden + (long)a * inter, inter);
            }
        }
    }

    private struct CombineJob
    {
        public float* Weights, Output, Residual;
        public int TopK, H;
    }

    /// <summary>
    /// residual[t, r] += sum_j w[t, j] * output[t * K + j, r], the K experts summed in rank order
    /// (as <see cref="Kernels.ExpertKernels.Combine"/>), so the result does not depend on how the
    /// experts were computed.
    /// </summary>
    public static void ExpertCombine(WorkerPool pool, float* expertWeights, float* output, float* residual, int tokens, int topK, int hiddenSize)
    {
        if (tokens <= 0) return;
        var job = new CombineJob { Weights = expertWeights, Output = output, Residual = residual, TopK = topK, H = hiddenSize };
        pool.For(tokens, &CombineTokens, &job, MinParallel(pool, (long)tokens * (topK + 1) * hiddenSize, ParallelElements));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CombineTokens(void* state, int start, int end)
    {
        var j = (CombineJob*)state;
        int h = j->H, topK = j->TopK, vw = Vector<float>.Count;
        for (int t = start; t < end; t++)
        {
            float* residual = j->Residual + (long)t * h, weights = j->Weights + (long)t * topK, output = j->Output + (long)t * topK * h;
            int r = 0;
            for (; r <= h - vw; r += vw)
            {
                var acc = Vector<float>.Zero;
                for (int k = 0; k < topK; k++) acc = Vector.MultiplyAddEstimate(new Vector<float>(weights[k]), Vector.Load(output + (long)k * h + r), acc);
                Vector.Store(Vector.Load(residual + r) + acc, residual + r);
            }
            for (; r < h; r++)
            {
                float acc = 0f;
                for (int k = 0; k < topK; k++) acc += weights[k] * output[(long)k * h + r];
                residual[r] += acc;
            }
        }
    }
}
