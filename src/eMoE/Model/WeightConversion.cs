using System.Runtime.InteropServices;

namespace eMoE.Model;

/// <summary>Widening of F16/BF16 weights to F32 on the host (references, tests, small tensors).</summary>
public static class WeightConversion
{
    /// <summary>bfloat16 bits to float: they are the upper half of an F32.</summary>
    public static float Bf16ToF32(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>IEEE half bits to float.</summary>
    public static float F16ToF32(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Widens raw little-endian tensor bytes of <paramref name="dtype"/> into <paramref name="destination"/>.</summary>
    public static void ToF32(ReadOnlySpan<byte> source, TensorDType dtype, Span<float> destination)
    {
        switch (dtype)
        {
            case TensorDType.F32:
                MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                break;
            case TensorDType.BF16:
                var b = MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < b.Length; i++) destination[i] = Bf16ToF32(b[i]);
                break;
            case TensorDType.F16:
                var h = MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < h.Length; i++) destination[i] = F16ToF32(h[i]);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }
}
