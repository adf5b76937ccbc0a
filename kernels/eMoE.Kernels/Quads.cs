using System.Runtime.CompilerServices;
using ILGPU;

namespace eMoE.Kernels;

/// <summary>Four consecutive F32 values, read with one view access.</summary>
public struct Float4
{
    /// <summary>Elements 0..3.</summary>
    public float X, Y, Z, W;
}

/// <summary>Four consecutive raw 16-bit weights (F16 or BF16), read with one view access.</summary>
public struct Bits4
{
    /// <summary>Elements 0..3.</summary>
    public ushort X, Y, Z, W;
}

/// <summary>
/// Dot products four elements at a time. On the CPU accelerator every view access is a call with
/// checks (5-10 ns), so reading four values per access roughly halves a dot product's time; on a
/// GPU a lane's 16-byte read is one vector load. Views read this way must start at a multiple of 4
/// elements and rows must be multiples of 4 long (the backend checks both before it launches).
/// </summary>
public static class Quads
{
    /// <summary>acc + x . w, summed element by element in order, as a scalar loop would.</summary>
    /// <remarks>Inlined: the CPU accelerator runs kernels as .NET code, where a call per quad costs as much as the arithmetic.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float acc, Float4 x, Float4 w)
    {
        acc += x.X * w.X;
        acc += x.Y * w.Y;
        acc += x.Z * w.Z;
        acc += x.W * w.W;
        return acc;
    }

    /// <summary>
    /// A register tile: four weight rows (quad offsets <paramref name="rows"/>.W0..W3) each dotted with
    /// four activation rows of <paramref name="x"/> (<paramref name="rows"/>.X0..X3), summed over the
    /// lanes. Per quad it reads four activation and four weight quads for 64 products, where a row at
    /// a time would read five quads for 16: on the CPU accelerator every view access costs more than
    /// the arithmetic, so this halves a batched projection's time. Each of the 16 sums runs element by
    /// element in order, as <see cref="Dot"/> does, so a result does not depend on its neighbours.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static TileDots DotTile(ArrayView<Float4> x, WeightQuads w, TileRows rows, int quads, int lane, int lanes)
    {
        // r0..r3: weight row k against activation rows 0..3.
        Float4 r0 = default, r1 = default, r2 = default, r3 = default;
        for (int q = lane; q < quads; q += lanes)
        {
            var v0 = x[rows.X0 + q];
            var v1 = x[rows.X1 + q];
            var v2 = x[rows.X2 + q];
            var v3 = x[rows.X3 + q];
            r0 = Dot4(r0, v0, v1, v2, v3, w[rows.W0 + q]);
            r1 = Dot4(r1, v0, v1, v2, v3, w[rows.W1 + q]);
            r2 = Dot4(r2, v0, v1, v2, v3, w[rows.W2 + q]);
            r3 = Dot4(r3, v0, v1, v2, v3, w[rows.W3 + q]);
        }
        return ByActivation(r0, r1, r2, r3, lanes);
    }

    /// <summary>
    /// <see cref="DotTile"/> with eight activation rows (X0..X7 into A0..A7): 12 view reads per quad for
    /// 128 products, for prefill chunks and batches of decode tokens, where the weight reads are the
    /// ones worth sharing further.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static TileDots DotTile8(ArrayView<Float4> x, WeightQuads w, TileRows rows, int quads, int lane, int lanes)
    {
        // r0..r3: weight row k against activation rows 0..3; s0..s3: against rows 4..7.
        Float4 r0 = default, r1 = default, r2 = default, r3 = default, s0 = default, s1 = default, s2 = default, s3 = default;
        for (int q = lane; q < quads; q += lanes)
        {
            var v0 = x[rows.X0 + q];
            var v1 = x[rows.X1 + q];
            var v2 = x[rows.X2 + q];
            var v3 = x[rows.X3 + q];
            var v4 = x[rows.X4 + q];
            var v5 = x[rows.X5 + q];
            var v6 = x[rows.X6 + q];
            var v7 = x[rows.X7 + q];
            var wq = w[rows.W0 + q];
            r0 = Dot4(r0, v0, v1, v2, v3, wq);
            s0 = Dot4(s0, v4, v5, v6, v7, wq);
            wq = w[rows.W1 + q];
            r1 = Dot4(r1, v0, v1, v2, v3, wq);
            s1 = Dot4(s1, v4, v5, v6, v7, wq);
            wq = w[rows.W2 + q];
            r2 = Dot4(r2, v0, v1, v2, v3, wq);
            s2 = Dot4(s2, v4, v5, v6, v7, wq);
            wq = w[rows.W3 + q];
            r3 = Dot4(r3, v0, v1, v2, v3, wq);
            s3 = Dot4(s3, v4, v5, v6, v7, wq);
        }
        var dots = ByActivation(r0, r1, r2, r3, lanes);
        var high = ByActivation(s0, s1, s2, s3, lanes);
        dots.A4 = high.A0;
        dots.A5 = high.A1;
        dots.A6 = high.A2;
        dots.A7 = high.A3;
        return dots;
    }

    /// <summary>acc + (v0 . w, v1 . w, v2 . w, v3 . w), each summed in order (<see cref="Dot"/>): one weight quad against four activation quads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Dot4(Float4 acc, Float4 v0, Float4 v1, Float4 v2, Float4 v3, Float4 w)
    {
        acc.X = Dot(acc.X, v0, w);
        acc.Y = Dot(acc.Y, v1, w);
        acc.Z = Dot(acc.Z, v2, w);
        acc.W = Dot(acc.W, v3, w);
        return acc;
    }

    /// <summary>
    /// Per-weight-row sums (r_k: weight row k against activation rows 0..3), summed over the lanes and
    /// turned into per-activation results A0..A3 (A_j: activation row j against weight rows 0..3).
    /// </summary>
    private static TileDots ByActivation(Float4 r0, Float4 r1, Float4 r2, Float4 r3, int lanes)
    {
        r0 = Sum(r0, lanes);
        r1 = Sum(r1, lanes);
        r2 = Sum(r2, lanes);
        r3 = Sum(r3, lanes);
        TileDots dots = default;
        dots.A0 = Column(r0.X, r1.X, r2.X, r3.X);
        dots.A1 = Column(r0.Y, r1.Y, r2.Y, r3.Y);
        dots.A2 = Column(r0.Z, r1.Z, r2.Z, r3.Z);
        dots.A3 = Column(r0.W, r1.W, r2.W, r3.W);
        return dots;
    }

    private static Float4 Column(float x, float y, float z, float w)
    {
        Float4 v;
        v.X = x;
        v.Y = y;
        v.Z = z;
        v.W = w;
        return v;
    }

    /// <summary>
    /// The dot products of a tile of <paramref name="count"/> activation rows (1..8) against four weight
    /// rows, by the narrowest routine that covers them: <see cref="DotPair"/>, <see cref="DotTile"/> or
    /// <see cref="DotTile8"/>. Results past <paramref name="count"/> are not to be used.
    /// </summary>
    public static TileDots DotTileOf(int count, ArrayView<Float4> x, WeightQuads w, TileRows rows, int quads, int lane, int lanes) =>
        count <= 2 ? DotPair(x, w, rows, quads, lane, lanes)
        : count <= 4 ? DotTile(x, w, rows, quads, lane, lanes)
        : DotTile8(x, w, rows, quads, lane, lanes);

    /// <summary>
    /// <see cref="DotTile"/> for tiles of one or two activation rows (X0, X1; the rest are not read and
    /// A2..A7 stay zero): a decode token alone, or an expert's one or two assignments, where reading
    /// four activation rows would cost more than sharing the weight reads saves.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static TileDots DotPair(ArrayView<Float4> x, WeightQuads w, TileRows rows, int quads, int lane, int lanes)
    {
        Float4 a0 = default, a1 = default;
        for (int q = lane; q < quads; q += lanes)
        {
            var v0 = x[rows.X0 + q];
            var v1 = x[rows.X1 + q];
            var wq = w[rows.W0 + q];
            a0.X = Dot(a0.X, v0, wq); a1.X = Dot(a1.X, v1, wq);
            wq = w[rows.W1 + q];
            a0.Y = Dot(a0.Y, v0, wq); a1.Y = Dot(a1.Y, v1, wq);
            wq = w[rows.W2 + q];
            a0.Z = Dot(a0.Z, v0, wq); a1.Z = Dot(a1.Z, v1, wq);
            wq = w[rows.W3 + q];
            a0.W = Dot(a0.W, v0, wq); a1.W = Dot(a1.W, v1, wq);
        }
        TileDots dots = default;
        dots.A0 = Sum(a0, lanes);
        dots.A1 = Sum(a1, lanes);
        return dots;
    }

    /// <summary>Each element summed over the lanes of a worker (<see cref="Lanes.Sum"/>).</summary>
    private static Float4 Sum(Float4 v, int lanes)
    {
        v.X = Lanes.Sum(v.X, lanes);
        v.Y = Lanes.Sum(v.Y, lanes);
        v.Z = Lanes.Sum(v.Z, lanes);
        v.W = Lanes.Sum(v.W, lanes);
        return v;
    }
}

/// <summary>
/// The rows of a <see cref="Quads.DotTile"/> or <see cref="Quads.DotTile8"/>, as quad offsets:
/// activation rows X0..X7 and weight rows W0..W3. A tile short of activations or weight rows
/// repeats its last one; its caller writes only the real results.
/// </summary>
public struct TileRows
{
    /// <summary>Activation rows 0..7 (4..7 only read by <see cref="Quads.DotTile8"/>).</summary>
    public long X0, X1, X2, X3, X4, X5, X6, X7;
    /// <summary>Weight rows 0..3.</summary>
    public long W0, W1, W2, W3;

    /// <summary>Sets activation row <paramref name="j"/> (0..7) to quad offset <paramref name="offset"/>.</summary>
    public void SetActivation(int j, long offset)
    {
        switch (j)
        {
            case 0: X0 = offset; break;
            case 1: X1 = offset; break;
            case 2: X2 = offset; break;
            case 3: X3 = offset; break;
            case 4: X4 = offset; break;
            case 5: X5 = offset; break;
            case 6: X6 = offset; break;
            default: X7 = offset; break;
        }
    }
}

/// <summary>
/// Results of a <see cref="Quads.DotTileOf"/> tile, one <see cref="Float4"/> per activation row:
/// A1.Z is activation row 1 dotted with weight row 2.
/// </summary>
public struct TileDots
{
    /// <summary>Activation rows 0..7 against weight rows 0..3 (X..W); 4..7 only from <see cref="Quads.DotTile8"/>.</summary>
    public Float4 A0, A1, A2, A3, A4, A5, A6, A7;

    /// <summary>Activation row <paramref name="j"/>'s results (0..7).</summary>
    public readonly Float4 Activation(int j) => j switch
    {
        0 => A0,
        1 => A1,
        2 => A2,
        3 => A3,
        4 => A4,
        5 => A5,
        6 => A6,
        _ => A7,
    };
}

/// <summary>A <see cref="WeightView"/> read four elements at a time (from <see cref="WeightView.Quads"/>).</summary>
public readonly struct WeightQuads
{
    private readonly ArrayView<Float4> _f32;
    private readonly ArrayView<Bits4> _u16;
    private readonly int _type;

    internal WeightQuads(ArrayView<Float4> f32, ArrayView<Bits4> u16, int type)
    {
        _f32 = f32;
        _u16 = u16;
        _type = type;
    }

    /// <summary>Elements 4q..4q+3 widened to F32.</summary>
    public Float4 this[long q]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (_type == WeightType.F32) return _f32[q];
            var bits = _u16[q];
            Float4 v;
            if (_type == WeightType.BF16)
            {
                v.X = WeightView.BFloat16ToFloat(bits.X);
                v.Y = WeightView.BFloat16ToFloat(bits.Y);
                v.Z = WeightView.BFloat16ToFloat(bits.Z);
                v.W = WeightView.BFloat16ToFloat(bits.W);
            }
            else
            {
                v.X = WeightView.HalfToFloat(bits.X);
                v.Y = WeightView.HalfToFloat(bits.Y);
                v.Z = WeightView.HalfToFloat(bits.Z);
                v.W = WeightView.HalfToFloat(bits.W);
            }
            return v;
        }
    }
}
