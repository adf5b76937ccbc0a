using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using eMoE.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace eMoE.GpuCheck.Workloads;

/// <summary>
/// One device with the engine's kernels and the buffers a benchmark allocates on it, freed
/// together. Every benchmark sets its buffers up through this, the same way the engine does.
/// </summary>
internal sealed class DeviceRig : IDisposable
{
    private readonly List<IDisposable> _buffers = [];
    private ulong _seed = 0x9E3779B97F4A7C15UL;

    public IlgpuBackend Device { get; }
    public KernelSet Kernels => Device.Kernels;
    public AcceleratorStream Stream => Device.Accelerator.DefaultStream;

    /// <summary>Threads per work item the engine uses on this device (1 on the CPU accelerator, the warp size on GPUs).</summary>
    public int Lanes => Device.Lanes;

    public DeviceRig(DeviceSpec device) => Device = IlgpuBackend.Create(device);

    /// <summary>The engine's launch shape for <paramref name="items"/> work items.</summary>
    public KernelConfig Launch(long items, int lanes = 1) => Device.Launch(items, lanes);

    /// <summary>Waits until every queued kernel has finished.</summary>
    public void Synchronize() => Device.Synchronize();

    public ArrayView<T> Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        var buffer = Own(Device.AllocateDevice<T>(data.Length));
        buffer.Upload(data);
        return buffer.View;
    }

    public ArrayView<T> Zeros<T>(long length) where T : unmanaged => Upload<T>(new T[length]);

    /// <summary>Uniform random F32 values in [-scale, scale).</summary>
    public ArrayView<float> Random(long length, float scale = 1f)
    {
        var buffer = Own(Device.AllocateDevice<float>(length));
        FillInChunks(length, (chunk, offset) =>
        {
            var values = new float[chunk];
            for (int i = 0; i < chunk; i++) values[i] = NextFloat(scale);
            buffer.Upload(values, offset);
        });
        return buffer.View;
    }

    /// <summary>
    /// Uniform random weights in [-scale, scale) stored as <paramref name="type"/> (F32 or BF16),
    /// uploaded in chunks so that a Mixtral-sized matrix needs no full host copy.
    /// </summary>
    public WeightView RandomWeights(long length, int type, float scale = 0.02f)
    {
        if (type == WeightType.F32) return WeightView.FromF32(Random(length, scale));
        if (type != WeightType.BF16) throw new ArgumentOutOfRangeException(nameof(type), "benchmarks use F32 or BF16 weights");
        var buffer = Own(Device.AllocateDevice<ushort>(length));
        FillInChunks(length, (chunk, offset) =>
        {
            var bits = new ushort[chunk];
            for (int i = 0; i < chunk; i++) bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(NextFloat(scale)) >> 16);
            buffer.Upload(bits, offset);
        });
        return WeightView.From16(buffer.View, type);
    }

    private static void FillInChunks(long length, Action<int, long> fill)
    {
        const int Chunk = 1 << 22;
        for (long offset = 0; offset < length; offset += Chunk) fill((int)Math.Min(Chunk, length - offset), offset);
    }

    // xorshift64*: fast and reproducible; the values only need to be finite and varied.
    private float NextFloat(float scale)
    {
        _seed ^= _seed >> 12;
        _seed ^= _seed << 25;
        _seed ^= _seed >> 27;
        uint bits = (uint)((_seed * 0x2545F4914F6CDD1DUL) >> 40); // 24 random bits
        return (bits * (2f / (1 << 24)) - 1f) * scale;
    }

    private DeviceBuffer<T> Own<T>(DeviceBuffer<T> buffer) where T : unmanaged
    {
        _buffers.Add(buffer);
        return buffer;
    }

    public void Dispose()
    {
        foreach (var buffer in _buffers) buffer.Dispose();
        _buffers.Clear();
        Device.Dispose();
    }
}
