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
                v.X = Interop.IntAsFloat((uint)bits.X << 16);
                v.Y = Interop.IntAsFloat((uint)bits.Y << 16);
                v.Z = Interop.IntAsFloat((uint)bits.Z << 16);
                v.W = Interop.IntAsFloat((uint)bits.W << 16);
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
