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
    /// One weight row dotted with four activation rows of <paramref name="x"/> (quad offsets
    /// <paramref name="x0"/>..<paramref name="x3"/>), summed over the lanes: each weight quad is read
    /// once for the four. Each sum runs element by element in order, as <see cref="Dot"/> does; its
    /// steps are written out because the JIT does not inline <see cref="Dot"/> into this loop.
    /// </summary>
    public static Float4 DotFourRows(ArrayView<Float4> x, long x0, long x1, long x2, long x3, WeightQuads w, long row, int quads, int lane, int lanes)
    {
        float d0 = 0f, d1 = 0f, d2 = 0f, d3 = 0f;
        for (int q = lane; q < quads; q += lanes)
        {
            var wq = w[row + q];
            var v0 = x[x0 + q];
            var v1 = x[x1 + q];
            var v2 = x[x2 + q];
            var v3 = x[x3 + q];
            d0 += v0.X * wq.X;
            d0 += v0.Y * wq.Y;
            d0 += v0.Z * wq.Z;
            d0 += v0.W * wq.W;
            d1 += v1.X * wq.X;
            d1 += v1.Y * wq.Y;
            d1 += v1.Z * wq.Z;
            d1 += v1.W * wq.W;
            d2 += v2.X * wq.X;
            d2 += v2.Y * wq.Y;
            d2 += v2.Z * wq.Z;
            d2 += v2.W * wq.W;
            d3 += v3.X * wq.X;
            d3 += v3.Y * wq.Y;
            d3 += v3.Z * wq.Z;
            d3 += v3.W * wq.W;
        }
        Float4 sums;
        sums.X = Lanes.Sum(d0, lanes);
        sums.Y = Lanes.Sum(d1, lanes);
        sums.Z = Lanes.Sum(d2, lanes);
        sums.W = Lanes.Sum(d3, lanes);
        return sums;
    }
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
