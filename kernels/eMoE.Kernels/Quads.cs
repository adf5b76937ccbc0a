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
        Float4 a0 = default, a1 = default, a2 = default, a3 = default;
        for (int q = lane; q < quads; q += lanes)
        {
            var v0 = x[rows.X0 + q];
            var v1 = x[rows.X1 + q];
            var v2 = x[rows.X2 + q];
            var v3 = x[rows.X3 + q];
            var wq = w[rows.W0 + q];
            a0.X = Dot(a0.X, v0, wq); a1.X = Dot(a1.X, v1, wq); a2.X = Dot(a2.X, v2, wq); a3.X = Dot(a3.X, v3, wq);
            wq = w[rows.W1 + q];
            a0.Y = Dot(a0.Y, v0, wq); a1.Y = Dot(a1.Y, v1, wq); a2.Y = Dot(a2.Y, v2, wq); a3.Y = Dot(a3.Y, v3, wq);
            wq = w[rows.W2 + q];
            a0.Z = Dot(a0.Z, v0, wq); a1.Z = Dot(a1.Z, v1, wq); a2.Z = Dot(a2.Z, v2, wq); a3.Z = Dot(a3.Z, v3, wq);
            wq = w[rows.W3 + q];
            a0.W = Dot(a0.W, v0, wq); a1.W = Dot(a1.W, v1, wq); a2.W = Dot(a2.W, v2, wq); a3.W = Dot(a3.W, v3, wq);
        }
        TileDots dots;
        dots.A0 = Sum(a0, lanes);
        dots.A1 = Sum(a1, lanes);
        dots.A2 = Sum(a2, lanes);
        dots.A3 = Sum(a3, lanes);
        return dots;
    }

    /// <summary>
    /// <see cref="DotTile"/> for tiles of one or two activation rows (X0, X1; the rest are not read and
    /// A2, A3 stay zero): a decode token alone, or an expert's one or two assignments, where reading
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
/// The rows of a <see cref="Quads.DotTile"/>, as quad offsets: activation rows X0..X3 and weight rows
/// W0..W3. A tile short of activations or weight rows repeats its last one; its caller writes only
/// the real results.
/// </summary>
public struct TileRows
{
    /// <summary>Activation rows 0..3.</summary>
    public long X0, X1, X2, X3;
    /// <summary>Weight rows 0..3.</summary>
    public long W0, W1, W2, W3;
}

/// <summary>
/// Results of a <see cref="Quads.DotTile"/>, one <see cref="Float4"/> per activation row: A1.Z is
/// activation row 1 dotted with weight row 2.
/// </summary>
public struct TileDots
{
    /// <summary>Activation rows 0..3 against weight rows 0..3 (X..W).</summary>
    public Float4 A0, A1, A2, A3;
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
