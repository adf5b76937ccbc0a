using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace eMoE.Compute.Host;

/// <summary>
/// exp on vectors, inlined into the kernels (Cephes' expf: x = n ln 2 + r, a degree-6 polynomial
/// in r, times 2^n; about 1 ulp). The BCL's generic vector exp starts as unoptimised Tier-0 code
/// (microseconds per call) until tiering replaces it, which made the first few hundred kernel calls
/// up to 10x slower; this one is compiled with the kernel that uses it. Inputs below -87.3 give 0
/// (so exp(-inf) = 0), above 88 give exp(88) (the kernels only take exp of values up to about 0).
/// </summary>
internal static class HostMath
{
    private const float Log2E = 1.44269504088896341f, Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    private const float Min = -87.33654f, Max = 88.0f;
    private const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f, P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

    /// <summary>e^x lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<float> Exp(Vector<float> x)
    {
        var tiny = Vector.LessThan(x, new Vector<float>(Min));
        x = Vector.Min(x, new Vector<float>(Max));
        x = Vector.Max(x, new Vector<float>(Min));
        var n = Vector.Floor(Vector.MultiplyAddEstimate(x, new Vector<float>(Log2E), new Vector<float>(0.5f)));
        var r = Vector.MultiplyAddEstimate(n, new Vector<float>(-Ln2Hi), x);
        r = Vector.MultiplyAddEstimate(n, new Vector<float>(-Ln2Lo), r);
        var p = Vector.MultiplyAddEstimate(new Vector<float>(P0), r, new Vector<float>(P1));
        p = Vector.MultiplyAddEstimate(p, r, new Vector<float>(P2));
        p = Vector.MultiplyAddEstimate(p, r, new Vector<float>(P3));
        p = Vector.MultiplyAddEstimate(p, r, new Vector<float>(P4));
        p = Vector.MultiplyAddEstimate(p, r, new Vector<float>(P5));
        p = Vector.MultiplyAddEstimate(p, r * r, r) + Vector<float>.One;
        var scale = Vector.AsVectorSingle(Vector.ShiftLeft(Vector.ConvertToInt32(n) + new Vector<int>(127), 23));
        return Vector.ConditionalSelect(tiny, Vector<float>.Zero, p * scale);
    }

    /// <summary>e^x lane by lane (the same computation on four lanes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp(Vector128<float> x)
    {
        var tiny = Vector128.LessThan(x, Vector128.Create(Min));
        x = Vector128.Min(x, Vector128.Create(Max));
        x = Vector128.Max(x, Vector128.Create(Min));
        var n = Vector128.Floor(Vector128.MultiplyAddEstimate(x, Vector128.Create(Log2E), Vector128.Create(0.5f)));
        var r = Vector128.MultiplyAddEstimate(n, Vector128.Create(-Ln2Hi), x);
        r = Vector128.MultiplyAddEstimate(n, Vector128.Create(-Ln2Lo), r);
        var p = Vector128.MultiplyAddEstimate(Vector128.Create(P0), r, Vector128.Create(P1));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P2));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P3));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P4));
        p = Vector128.MultiplyAddEstimate(p, r, Vector128.Create(P5));
        p = Vector128.MultiplyAddEstimate(p, r * r, r) + Vector128<float>.One;
        var scale = Vector128.ShiftLeft(Vector128.ConvertToInt32(n) + Vector128.Create(127), 23).AsSingle();
        return Vector128.ConditionalSelect(tiny, Vector128<float>.Zero, p * scale);
    }

    /// <summary>e^x for one value, computed exactly like a lane of <see cref="Exp(Vector128{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Exp(float x) => Exp(Vector128.Create(x)).ToScalar();
}
