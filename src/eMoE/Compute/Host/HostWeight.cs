using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using eMoE.Model;

namespace eMoE.Compute.Host;

/// <summary>
/// Weight data in its checkpoint dtype, read in place (a memory-mapped safetensors file or any
/// native memory the caller keeps alive). Row-major. F16 and BF16 stay 16-bit: kernels widen them
/// in registers, or a chunk at a time with <see cref="Widen"/>; there is never an F32 copy.
/// </summary>
internal readonly unsafe struct HostWeight
{
    /// <summary>Wraps <paramref name="elements"/> elements of <paramref name="dtype"/> at <paramref name="data"/>.</summary>
    public HostWeight(void* data, long elements, TensorDType dtype)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elements);
        if (dtype is not (TensorDType.F32 or TensorDType.F16 or TensorDType.BF16)) throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "F32, F16 or BF16");
        if (data == null && elements > 0) throw new ArgumentNullException(nameof(data));
        Data = data;
        Elements = elements;
        DType = dtype;
    }

    /// <summary>The first element.</summary>
    public void* Data { get; }

    /// <summary>Number of elements.</summary>
    public long Elements { get; }

    /// <summary>Element type.</summary>
    public TensorDType DType { get; }

    /// <summary>Bytes per element.</summary>
    public int ItemSize => DType == TensorDType.F32 ? 4 : 2;

    /// <summary>Elements [<paramref name="elementOffset"/>, + <paramref name="elements"/>) as a weight of their own.</summary>
    public HostWeight Slice(long elementOffset, long elements)
    {
        if (elementOffset < 0 || elements < 0 || elementOffset > Elements - elements)
            throw new ArgumentOutOfRangeException(nameof(elementOffset), $"[{elementOffset}, +{elements}) is outside {Elements} elements");
        return new HostWeight((byte*)Data + elementOffset * ItemSize, elements, DType);
    }

    /// <summary>Element <paramref name="i"/> widened to F32 (scalar: for references, tests and tiny operations).</summary>
    public float this[long i]
    {
        get
        {
            if ((ulong)i >= (ulong)Elements) throw new ArgumentOutOfRangeException(nameof(i), $"{i} is outside {Elements} elements");
            return DType switch
            {
                TensorDType.F32 => ((float*)Data)[i],
                TensorDType.BF16 => BitConverter.Int32BitsToSingle(((ushort*)Data)[i] << 16),
                _ => (float)BitConverter.UInt16BitsToHalf(((ushort*)Data)[i]),
            };
        }
    }

    /// <summary>
    /// Widens elements [<paramref name="elementOffset"/>, + destination.Length) into
    /// <paramref name="destination"/>, in order (SIMD; F16 exactly as <see cref="System.Half"/> converts).
    /// </summary>
    public void Widen(long elementOffset, Span<float> destination)
    {
        if (elementOffset < 0 || elementOffset > Elements - destination.Length)
            throw new ArgumentOutOfRangeException(nameof(elementOffset), $"[{elementOffset}, +{destination.Length}) is outside {Elements} elements");
        int n = destination.Length;
        switch (DType)
        {
            case TensorDType.F32:
                new ReadOnlySpan<float>((float*)Data + elementOffset, n).CopyTo(destination);
                break;
            case TensorDType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)Data + elementOffset, n), destination);
                break;
            default:
                fixed (float* d = destination) WidenBF16((ushort*)Data + elementOffset, d, n);
                break;
        }
    }

    /// <summary>bfloat16 to F32 in order: each value becomes the upper half of a float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WidenBF16(ushort* source, float* destination, int n)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int step = Vector<ushort>.Count;
            for (; i <= n - step; i += step)
            {
                Vector.Widen(Vector.Load(source + i), out var low, out var high);
                Vector.Store(Vector.AsVectorSingle(Vector.ShiftLeft(low, 16)), destination + i);
                Vector.Store(Vector.AsVectorSingle(Vector.ShiftLeft(high, 16)), destination + i + step / 2);
            }
        }
        for (; i < n; i++) destination[i] = BitConverter.Int32BitsToSingle(source[i] << 16);
    }
}
