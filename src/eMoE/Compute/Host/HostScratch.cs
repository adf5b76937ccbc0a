using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace eMoE.Compute.Host;

/// <summary>
/// Per-thread scratch memory for the host kernels: a few numbered slots, each a pinned array that
/// grows (to a power of two) when a larger one is asked for and is otherwise reused, so kernels
/// allocate nothing once warm. A slot's contents are only valid until the same thread asks for
/// the same slot again; the slots of one operation must differ (see the constants).
/// </summary>
internal static unsafe class HostScratch
{
    /// <summary>Activations reshaped for a weight format, shared by every thread of one operation (caller's slot).</summary>
    public const int SharedInput = 0;

    /// <summary>A second shared buffer (the experts' intermediate activations).</summary>
    public const int SharedHidden = 1;

    /// <summary>Attention scores of one work item.</summary>
    public const int Scores = 2;

    /// <summary>Order keys of one sampled row.</summary>
    public const int Keys = 3;

    /// <summary>Unnormalised probabilities of one sampled row's candidates, or a widened norm weight.</summary>
    public const int Weights = 4;

    /// <summary>Token ids of one sampled row's top-k candidates.</summary>
    public const int CandidateIds = 5;

    /// <summary>Order keys of one sampled row's top-k candidates.</summary>
    public const int CandidateKeys = 6;

    /// <summary>The shrinking key set of a sampling bisection.</summary>
    public const int WorkKeys = 7;

    /// <summary>The shrinking weight set of a sampling bisection.</summary>
    public const int WorkWeights = 8;

    /// <summary>Unnormalised probabilities of every token of one sampled row.</summary>
    public const int Probabilities = 9;

    private const int Slots = 10;

    [ThreadStatic] private static byte[]?[]? t_slots;

    /// <summary>At least <paramref name="count"/> floats of slot <paramref name="slot"/> on this thread (contents undefined).</summary>
    public static float* Floats(int slot, long count) => (float*)Bytes(slot, count * sizeof(float));

    /// <summary>At least <paramref name="count"/> ints of slot <paramref name="slot"/> on this thread (contents undefined).</summary>
    public static int* Ints(int slot, long count) => (int*)Bytes(slot, count * sizeof(int));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static byte* Bytes(int slot, long bytes)
    {
        var slots = t_slots ??= new byte[]?[Slots];
        var buffer = slots[slot];
        if (buffer is null || buffer.LongLength < bytes)
        {
            long size = Math.Max(4096, (long)BitOperations.RoundUpToPowerOf2((ulong)bytes));
            if (size > Array.MaxLength) size = bytes;
            buffer = GC.AllocateUninitializedArray<byte>(checked((int)size), pinned: true);
            slots[slot] = buffer;
        }
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
    }
}
