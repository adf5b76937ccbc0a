using System.Numerics;
using System.Runtime.CompilerServices;

namespace eMoE.Compute.Host;

/// <summary>
/// How a dot-product kernel reads one weight dtype in place: a block of
/// <see cref="WeightFormat.Block"/> elements becomes two F32 vectors in registers. The 16-bit
/// formats widen with one shift or mask per vector by taking the even elements of a block into
/// the first vector and the odd ones into the second; the activations they meet are laid out the
/// same way beforehand (<see cref="WeightFormat.Pair"/>), which costs O(K) per activation row
/// instead of O(N K) shuffles.
/// </summary>
internal unsafe interface IWeightFormat
{
    /// <summary>Bytes per element.</summary>
    static abstract int ItemSize { get; }

    /// <summary>True when <see cref="Load"/> splits a block into even and odd elements (the activations must be paired).</summary>
    static abstract bool Paired { get; }

    /// <summary>One block at <paramref name="p"/>: elements 0..W-1 and W..2W-1, or the even and the odd elements when <see cref="Paired"/>.</summary>
    static abstract void Load(byte* p, out Vector<float> first, out Vector<float> second);

    /// <summary>Element <paramref name="i"/> of the row at <paramref name="row"/>, widened.</summary>
    static abstract float At(byte* row, int i);
}

/// <summary>F32 weights: plain loads.</summary>
internal readonly unsafe struct F32Weights : IWeightFormat
{
    public static int ItemSize => 4;
    public static bool Paired => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* p, out Vector<float> first, out Vector<float> second)
    {
        first = Vector.Load((float*)p);
        second = Vector.Load((float*)p + Vector<float>.Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => ((float*)row)[i];
}

/// <summary>bfloat16 weights: a 32-bit lane holds elements 2j (low half) and 2j + 1 (high half); shift and mask make floats.</summary>
internal readonly unsafe struct BF16Weights : IWeightFormat
{
    public static int ItemSize => 2;
    public static bool Paired => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* p, out Vector<float> first, out Vector<float> second)
    {
        var lanes = Vector.Load((uint*)p);
        first = Vector.AsVectorSingle(Vector.ShiftLeft(lanes, 16));
        second = Vector.AsVectorSingle(lanes & new Vector<uint>(0xFFFF0000u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => BitConverter.Int32BitsToSingle(((ushort*)row)[i] << 16);
}

/// <summary>
/// IEEE half weights, widened like bfloat16 into the upper half of each lane, then converted: the
/// exponent and mantissa shifted into place and scaled by 2^112 (exact for normal and subnormal
/// values), infinities and NaNs given the all-ones exponent, the sign put back.
/// </summary>
internal readonly unsafe struct F16Weights : IWeightFormat
{
    public static int ItemSize => 2;
    public static bool Paired => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* p, out Vector<float> first, out Vector<float> second)
    {
        var lanes = Vector.Load((uint*)p);
        first = FromUpperHalf(Vector.ShiftLeft(lanes, 16));
        second = FromUpperHalf(lanes & new Vector<uint>(0xFFFF0000u));
    }

    /// <summary>Half bits in the upper 16 bits of each lane (lower bits zero) to floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<float> FromUpperHalf(Vector<uint> h)
    {
        var magnitude = Vector.ShiftRightLogical(h & new Vector<uint>(0x7FFF0000u), 3);
        var scaled = Vector.AsVectorUInt32(Vector.AsVectorSingle(magnitude) * new Vector<float>(5.192297e+33f)); // 2^112
        var special = Vector.Equals(h & new Vector<uint>(0x7C000000u), new Vector<uint>(0x7C000000u));
        var bits = Vector.ConditionalSelect(special, magnitude | new Vector<uint>(0x7F800000u), scaled);
        return Vector.AsVectorSingle(bits | (h & new Vector<uint>(0x80000000u)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => (float)BitConverter.UInt16BitsToHalf(((ushort*)row)[i]);
}

/// <summary>Block size and the paired activation layout of the 16-bit formats.</summary>
internal static unsafe class WeightFormat
{
    /// <summary>Elements per block: two F32 vectors.</summary>
    public static int Block => 2 * Vector<float>.Count;

    /// <summary>Elements of a row of <paramref name="k"/> that fall in whole blocks (the rest is read in order).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int WholeBlocks(int k) => k - k % Block;

    /// <summary>
    /// Copies a row of <paramref name="k"/> activations into the paired layout: in each whole block,
    /// the even elements first, then the odd ones; the tail unchanged.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pair(float* source, float* destination, int k)
    {
        int w = Vector<float>.Count, whole = WholeBlocks(k);
        for (int b = 0; b < whole; b += 2 * w)
        {
            float* s = source + b, d = destination + b;
            for (int j = 0; j < w; j++)
            {
                d[j] = s[2 * j];
                d[w + j] = s[2 * j + 1];
            }
        }
        for (int i = whole; i < k; i++) destination[i] = source[i];
    }

    /// <summary>Where element <paramref name="i"/> of a row of <paramref name="k"/> lives in the paired layout.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PairedIndex(int i, int k)
    {
        int block = Block;
        if (i >= WholeBlocks(k)) return i;
        int j = i % block;
        return i - j + (j >> 1) + (j & 1) * (block >> 1);
    }
}
