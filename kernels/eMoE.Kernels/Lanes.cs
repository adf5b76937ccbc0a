using ILGPU;

namespace eMoE.Kernels;

/// <summary>
/// How kernels spread work over threads. Every kernel is a grid-stride loop over work items
/// (rows, tokens, ...); <c>lanes</c> threads cooperate on one item. On CUDA lanes = warp size
/// (coalesced reads of a weight row, then a warp reduction); on the CPU accelerator lanes = 1 and a
/// few heavy threads each loop over many items, because every simulated thread costs an OS-thread step.
/// Kernels read the grid-stride step once, before their loop: on the CPU accelerator (ILGPU 1.5.3)
/// every read of <c>Grid.DimX</c> or <c>Group.DimX</c> also looks up an error-message resource, which
/// cost about a tenth of a batched decode step when it ran once per item. Kernel entry points carry
/// <c>AggressiveOptimization</c>: the CPU accelerator runs them as .NET code, and without it the
/// runtime's tiered JIT runs the hot loops unoptimised (tier 0, then instrumented) for the first
/// seconds of every process. GPU backends ignore the flag.
/// </summary>
public static class Lanes
{
    /// <summary>This thread's worker index (which item it starts at).</summary>
    public static int Worker(int lanes) => Grid.GlobalIndex.X / lanes;

    /// <summary>This thread's lane inside its worker, 0..lanes-1.</summary>
    public static int Lane(int lanes) => Grid.GlobalIndex.X % lanes;

    /// <summary>Threads in the whole launch: the grid-stride step of a kernel whose items take one thread each.</summary>
    public static int Stride => Grid.DimX * Group.DimX;

    /// <summary>Number of workers in the whole launch: the grid-stride step.</summary>
    public static int Workers(int lanes) => Stride / lanes;

    /// <summary>Sum of <paramref name="value"/> over the lanes of a worker; every lane gets the total.</summary>
    /// <remarks>lanes is 1 or the warp size, and a worker's lanes are one whole warp.</remarks>
    public static float Sum(float value, int lanes)
    {
        if (lanes == 1) return value;
        for (int offset = lanes / 2; offset > 0; offset /= 2)
            value += Warp.ShuffleXor(value, offset);
        return value;
    }
}
