using ILGPU;
using ILGPU.Runtime;

namespace eMoE.Compute.Ilgpu;

/// <summary>A device allocation whose bytes are counted by its backend.</summary>
internal sealed class DeviceBuffer<T> : Buffer<T> where T : unmanaged
{
    private readonly IlgpuBackend _device;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;
    private readonly long _bytes;

    public DeviceBuffer(IlgpuBackend device, long length) : base(length)
    {
        _device = device;
        _buffer = device.Accelerator.Allocate1D<T>(Math.Max(1, length));
        _bytes = _buffer.LengthInBytes;
        device.Account(_bytes);
    }

    public new ArrayView<T> View => Buffer.View.AsContiguous();

    private MemoryBuffer1D<T, Stride1D.Dense> Buffer => _buffer ?? throw new ObjectDisposedException(nameof(DeviceBuffer<T>));

    /// <summary>Copies host data into the buffer starting at <paramref name="offset"/> (synchronous).</summary>
    /// <remarks>
    /// The host memory is pinned for the copy: ILGPU turns the reference into a raw address, and a
    /// garbage collection on another thread could otherwise move a managed array mid-copy.
    /// </remarks>
    public unsafe void Upload(ReadOnlySpan<T> data, long offset = 0)
    {
        if (data.IsEmpty) return;
        fixed (T* source = data) View.SubView(offset, data.Length).CopyFromCPU(ref *source, data.Length);
    }

    /// <summary>Copies the first <paramref name="destination"/>.Length elements back to the host (synchronous, pinned).</summary>
    public unsafe void Download(Span<T> destination, long offset = 0)
    {
        if (destination.IsEmpty) return;
        fixed (T* target = destination) View.SubView(offset, destination.Length).CopyToCPU(ref *target, destination.Length);
    }

    public override void Dispose()
    {
        if (_buffer is null) return;
        _buffer.Dispose();
        _buffer = null;
        _device.Account(-_bytes);
    }
}
