using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace eMoE.Compute.Host;

/// <summary>
/// Register-blocked dot products of weight rows (read in place in their format) with activation
/// rows (F32, paired for the 16-bit formats): 4 weight rows x 2 activation rows per sweep over K
/// for several tokens (each weight element loaded is used twice, each activation element four
/// times), 8 weight rows x 1 activation row for a single token; smaller shapes finish the edges.
/// </summary>
/// <remarks>
/// The kernels are calls, not inlined (the JIT refuses to inline them into the large work-item
/// bodies anyway), each compiled fully optimised on first use rather than through the tiers.
/// Every kernel computes each dot product with the same operations in the same order (one vector
/// accumulator per output: first vector, second vector of each block; the lane sum of
/// <see cref="Reduce4"/>; the tail in order), so a result depends neither on the tile it was computed in nor on the thread: a token's
/// output is the same alone or in a batch.
/// </remarks>
internal static unsafe class HostDot
{
    /// <summary>Weight rows per work item (a block): two 4-row tiles, or one 8-row single-token tile.</summary>
    public const int Rows = 8;

    /// <summary>
    /// y0[r] = w_r . x0 and y1[r] = w_r . x1 for the 4 rows at <paramref name="w"/> (row r at
    /// w + r * <paramref name="rowBytes"/>). Meanwhile [<paramref name="prefetch"/>, +
    /// <paramref name="prefetchBytes"/>) (a share of the next block of rows, or null) is prefetched
    /// a few lines per step, so the weight stream overlaps the arithmetic instead of stalling at
    /// the start of each block (+50% GEMV bandwidth measured on a 29 MB BF16 matrix).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot4x2<TW>(byte* w, long rowBytes, float* x0, float* x1, int k, byte* prefetch, long prefetchBytes,
        out Vector128<float> y0, out Vector128<float> y1)
        where TW : struct, IWeightFormat
    {
        int vw = Vector<float>.Count, block = 2 * vw, whole = WeightFormat.WholeBlocks(k);
        byte* w1 = w + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        Vector<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector<float> a20 = default, a21 = default, a30 = default, a31 = default;
        long bytes = 0, blockBytes = (long)block * TW.ItemSize;
        var ahead = new Prefetch(prefetch, prefetchBytes, whole / block);
        for (int i = 0; i < whole; i += block, bytes += blockBytes)
        {
            ahead.Step();
            var p0 = Vector.Load(x0 + i);
            var q0 = Vector.Load(x0 + i + vw);
            var p1 = Vector.Load(x1 + i);
            var q1 = Vector.Load(x1 + i + vw);
            TW.Load(w + bytes, out var f, out var s);
            a00 = Vector.MultiplyAddEstimate(f, p0, a00);
            a01 = Vector.MultiplyAddEstimate(f, p1, a01);
            a00 = Vector.MultiplyAddEstimate(s, q0, a00);
            a01 = Vector.MultiplyAddEstimate(s, q1, a01);
            TW.Load(w1 + bytes, out f, out s);
            a10 = Vector.MultiplyAddEstimate(f, p0, a10);
            a11 = Vector.MultiplyAddEstimate(f, p1, a11);
            a10 = Vector.MultiplyAddEstimate(s, q0, a10);
            a11 = Vector.MultiplyAddEstimate(s, q1, a11);
            TW.Load(w2 + bytes, out f, out s);
            a20 = Vector.MultiplyAddEstimate(f, p0, a20);
            a21 = Vector.MultiplyAddEstimate(f, p1, a21);
            a20 = Vector.MultiplyAddEstimate(s, q0, a20);
            a21 = Vector.MultiplyAddEstimate(s, q1, a21);
            TW.Load(w3 + bytes, out f, out s);
            a30 = Vector.MultiplyAddEstimate(f, p0, a30);
            a31 = Vector.MultiplyAddEstimate(f, p1, a31);
            a30 = Vector.MultiplyAddEstimate(s, q0, a30);
            a31 = Vector.MultiplyAddEstimate(s, q1, a31);
        }
        y0 = Reduce4(a00, a10, a20, a30);
        y1 = Reduce4(a01, a11, a21, a31);
        if (whole == k) return;
        float s00 = y0[0], s10 = y0[1], s20 = y0[2], s30 = y0[3], s01 = y1[0], s11 = y1[1], s21 = y1[2], s31 = y1[3];
        for (int i = whole; i < k; i++)
        {
            float v0 = x0[i], v1 = x1[i];
            float e0 = TW.At(w, i), e1 = TW.At(w1, i), e2 = TW.At(w2, i), e3 = TW.At(w3, i);
            s00 += e0 * v0;
            s01 += e0 * v1;
            s10 += e1 * v0;
            s11 += e1 * v1;
            s20 += e2 * v0;
            s21 += e2 * v1;
            s30 += e3 * v0;
            s31 += e3 * v1;
        }
        y0 = Vector128.Create(s00, s10, s20, s30);
        y1 = Vector128.Create(s01, s11, s21, s31);
    }

    /// <summary>y[r] = w_r . x for the 4 rows at <paramref name="w"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Vector128<float> Dot4x1<TW>(byte* w, long rowBytes, float* x, int k) where TW : struct, IWeightFormat
    {
        int vw = Vector<float>.Count, block = 2 * vw, whole = WeightFormat.WholeBlocks(k);
        byte* w1 = w + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
        long bytes = 0, blockBytes = (long)block * TW.ItemSize;
        for (int i = 0; i < whole; i += block, bytes += blockBytes)
        {
            var p = Vector.Load(x + i);
            var q = Vector.Load(x + i + vw);
            TW.Load(w + bytes, out var f, out var s);
            a0 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a0));
            TW.Load(w1 + bytes, out f, out s);
            a1 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a1));
            TW.Load(w2 + bytes, out f, out s);
            a2 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a2));
            TW.Load(w3 + bytes, out f, out s);
            a3 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a3));
        }
        var y = Reduce4(a0, a1, a2, a3);
        if (whole == k) return y;
        float s0 = y[0], s1 = y[1], s2 = y[2], s3 = y[3];
        for (int i = whole; i < k; i++)
        {
            float v = x[i];
            s0 += TW.At(w, i) * v;
            s1 += TW.At(w1, i) * v;
            s2 += TW.At(w2, i) * v;
            s3 += TW.At(w3, i) * v;
        }
        return Vector128.Create(s0, s1, s2, s3);
    }

    /// <summary>
    /// y0[r] = w_r . x for rows 0..3 and y1[r] = w_(4+r) . x for rows 4..7 at <paramref name="w"/>:
    /// the single-token (decode) kernel, 8 independent accumulator chains; prefetches like
    /// <see cref="Dot4x2"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot8x1<TW>(byte* w, long rowBytes, float* x, int k, byte* prefetch, long prefetchBytes, out Vector128<float> y0, out Vector128<float> y1)
        where TW : struct, IWeightFormat
    {
        int vw = Vector<float>.Count, block = 2 * vw, whole = WeightFormat.WholeBlocks(k);
        byte* w1 = w + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes, w4 = w3 + rowBytes, w5 = w4 + rowBytes, w6 = w5 + rowBytes, w7 = w6 + rowBytes;
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        long bytes = 0, blockBytes = (long)block * TW.ItemSize;
        var ahead = new Prefetch(prefetch, prefetchBytes, whole / block);
        for (int i = 0; i < whole; i += block, bytes += blockBytes)
        {
            ahead.Step();
            var p = Vector.Load(x + i);
            var q = Vector.Load(x + i + vw);
            TW.Load(w + bytes, out var f, out var s);
            a0 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a0));
            TW.Load(w1 + bytes, out f, out s);
            a1 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a1));
            TW.Load(w2 + bytes, out f, out s);
            a2 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a2));
            TW.Load(w3 + bytes, out f, out s);
            a3 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a3));
            TW.Load(w4 + bytes, out f, out s);
            a4 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a4));
            TW.Load(w5 + bytes, out f, out s);
            a5 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a5));
            TW.Load(w6 + bytes, out f, out s);
            a6 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a6));
            TW.Load(w7 + bytes, out f, out s);
            a7 = Vector.MultiplyAddEstimate(s, q, Vector.MultiplyAddEstimate(f, p, a7));
        }
        y0 = Reduce4(a0, a1, a2, a3);
        y1 = Reduce4(a4, a5, a6, a7);
        if (whole == k) return;
        float s0 = y0[0], s1 = y0[1], s2 = y0[2], s3 = y0[3], s4 = y1[0], s5 = y1[1], s6 = y1[2], s7 = y1[3];
        for (int i = whole; i < k; i++)
        {
            float v = x[i];
            s0 += TW.At(w, i) * v;
            s1 += TW.At(w1, i) * v;
            s2 += TW.At(w2, i) * v;
            s3 += TW.At(w3, i) * v;
            s4 += TW.At(w4, i) * v;
            s5 += TW.At(w5, i) * v;
            s6 += TW.At(w6, i) * v;
            s7 += TW.At(w7, i) * v;
        }
        y0 = Vector128.Create(s0, s1, s2, s3);
        y1 = Vector128.Create(s4, s5, s6, s7);
    }

    /// <summary>w . x for the one row at <paramref name="w"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot1x1<TW>(byte* w, float* x, int k) where TW : struct, IWeightFormat
    {
        int vw = Vector<float>.Count, block = 2 * vw, whole = WeightFormat.WholeBlocks(k);
        Vector<float> a = default;
        long bytes = 0, blockBytes = (long)block * TW.ItemSize;
        for (int i = 0; i < whole; i += block, bytes += blockBytes)
        {
            TW.Load(w + bytes, out var f, out var s);
            a = Vector.MultiplyAddEstimate(s, Vector.Load(x + i + vw), Vector.MultiplyAddEstimate(f, Vector.Load(x + i), a));
        }
        float sum = Reduce1(a);
        for (int i = whole; i < k; i++) sum += TW.At(w, i) * x[i];
        return sum;
    }

    /// <summary>Share <paramref name="part"/> of <paramref name="parts"/> of the region [p, p + bytes), in whole cache lines.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Share(byte* p, long bytes, int part, int parts, out long shareBytes)
    {
        if (p == null || parts <= 0)
        {
            shareBytes = 0;
            return null;
        }
        long from = bytes * part / parts & ~63L, to = part + 1 == parts ? bytes : bytes * (part + 1) / parts & ~63L;
        shareBytes = to - from;
        return p + from;
    }

    /// <summary>Issues the prefetches of a region spread over the steps of a loop (x86; nothing elsewhere).</summary>
    private struct Prefetch
    {
        private readonly byte* _p;
        private readonly long _bytes, _perStep;
        private long _due, _issued;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Prefetch(byte* p, long bytes, int steps)
        {
            _p = Sse.IsSupported && steps > 0 && bytes > 0 ? p : null;
            _bytes = bytes;
            _perStep = steps > 0 ? (bytes + steps - 1) / steps : 0;
            _due = _issued = 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Step()
        {
            if (_p == null) return;
            _due = Math.Min(_due + _perStep, _bytes);
            for (; _issued < _due; _issued += 64) Sse.Prefetch0(_p + _issued);
        }
    }

    /// <summary>
    /// The lane sums of four accumulators. On AVX, a tree of horizontal adds (5 instructions for
    /// all four); elsewhere <see cref="Vector.Sum{T}(Vector{T})"/> of each. <see cref="Reduce1"/>
    /// adds the lanes of one accumulator in exactly the same order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Reduce4(Vector<float> a0, Vector<float> a1, Vector<float> a2, Vector<float> a3)
    {
        if (Vector<float>.Count == 8 && Avx.IsSupported)
        {
            var h = Avx.HorizontalAdd(Avx.HorizontalAdd(a0.AsVector256(), a1.AsVector256()), Avx.HorizontalAdd(a2.AsVector256(), a3.AsVector256()));
            return h.GetLower() + h.GetUpper();
        }
        return Vector128.Create(Vector.Sum(a0), Vector.Sum(a1), Vector.Sum(a2), Vector.Sum(a3));
    }

    /// <summary>The lane sum of one accumulator, in <see cref="Reduce4"/>'s order (its first lane with the others zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Reduce1(Vector<float> a) => Reduce4(a, default, default, default).ToScalar();
}
