using ILGPU;

namespace eMoE.Kernels;

/// <summary>Element type codes of <see cref="WeightView"/> (kept as ints: kernels branch on them).</summary>
public static class WeightType
{
    /// <summary>IEEE single precision.</summary>
    public const int F32 = 0;
    /// <summary>IEEE half precision, widened in the kernel.</summary>
    public const int F16 = 1;
    /// <summary>bfloat16, widened in the kernel.</summary>
    public const int BF16 = 2;
}

/// <summary>
/// A weight tensor on the device in its checkpoint dtype. F16/BF16 stay 16-bit in device memory
/// and are widened to F32 element by element inside kernels: there is no F32 copy of the model.
/// </summary>
public readonly struct WeightView
{
    /// <summary>The elements when <see cref="Type"/> is <see cref="WeightType.F32"/>.</summary>
    public readonly ArrayView<float> F32;
    /// <summary>The raw 16-bit elements when <see cref="Type"/> is F16 or BF16.</summary>
    public readonly ArrayView<ushort> U16;
    /// <summary>One of <see cref="WeightType"/>.</summary>
    public readonly int Type;

    private WeightView(ArrayView<float> f32, ArrayView<ushort> u16, int type)
    {
        F32 = f32;
        U16 = u16;
        Type = type;
    }

    /// <summary>Wraps F32 weights.</summary>
    public static WeightView FromF32(ArrayView<float> view) => new(view, default, WeightType.F32);

    /// <summary>Wraps 16-bit weights (<see cref="WeightType.F16"/> or <see cref="WeightType.BF16"/>).</summary>
    public static WeightView From16(ArrayView<ushort> view, int type) => new(default, view, type);

    /// <summary>
    /// The same weights read four elements at a time. Take it once, before a kernel's loop: the cast
    /// is a view operation, not free on the CPU accelerator. The view must start at a multiple of 4.
    /// </summary>
    public WeightQuads Quads => Type == WeightType.F32
        ? new WeightQuads(F32.Cast<Float4>(), default, Type)
        : new WeightQuads(default, U16.Cast<Bits4>(), Type);

    /// <summary>Number of elements.</summary>
    public long Length => Type == WeightType.F32 ? F32.Length : U16.Length;

    /// <summary>Element <paramref name="i"/> widened to F32.</summary>
    public float this[long i] => Type switch
    {
        WeightType.F32 => F32[i],
        WeightType.BF16 => BFloat16ToFloat(U16[i]),
        _ => HalfToFloat(U16[i]),
    };

    /// <summary>bfloat16 bits to F32: the top half of an F32.</summary>
    public static float BFloat16ToFloat(ushort bits) => Interop.IntAsFloat((uint)bits << 16);

    /// <summary>IEEE half bits to F32, by hand so that every backend computes it the same way.</summary>
    public static float HalfToFloat(ushort h)
    {
        uint sign = (uint)(h & 0x8000) << 16;
        uint exponent = (uint)(h >> 10) & 0x1F;
        uint mantissa = (uint)h & 0x3FF;
        if (exponent == 0)
        {
            // Zero or subnormal: mantissa x 2^-24.
            float magnitude = mantissa * (1.0f / 16777216.0f);
            return sign != 0 ? -magnitude : magnitude;
        }
        if (exponent == 31) return Interop.IntAsFloat(sign | 0x7F800000u | (mantissa << 13));
        return Interop.IntAsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
    }
}
