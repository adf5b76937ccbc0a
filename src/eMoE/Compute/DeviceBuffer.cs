using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace eMoE.Compute;

/// <summary>A device allocation whose bytes are counted by its <see cref="ComputeDevice"/>.</summary>
internal sealed class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    private readonly ComputeDevice _device;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;
    private readonly long _bytes;

    public DeviceBuffer(ComputeDevice device, long length)
    {
        _device = device;
        _buffer = device.Accelerator.Allocate1D<T>(Math.Max(1, length));
        _bytes = _buffer.LengthInBytes;
        device.Account(_bytes);
    }

    public long Length => Buffer.Length;

    public ArrayView<T> View => Buffer.View.AsContiguous();

    private MemoryBuffer1D<T, Stride1D.Dense> Buffer => _buffer ?? throw new ObjectDisposedException(nameof(DeviceBuffer<T>));

    /// <summary>Copies host data into the buffer starting at <paramref name="offset"/> (synchronous).</summary>
    public void Upload(ReadOnlySpan<T> data, long offset = 0)
    {
        if (data.IsEmpty) return;
        View.SubView(offset, data.Length).CopyFromCPU(ref MemoryMarshal.GetReference(data), data.Length);
    }

    /// <summary>Copies the first <paramref name="destination"/>.Length elements back to the host (synchronous).</summary>
    public void Download(Span<T> destination, long offset = 0)
    {
        if (destination.IsEmpty) return;
        View.SubView(offset, destination.Length).CopyToCPU(ref MemoryMarshal.GetReference(destination), destination.Length);
    }

    public void Dispose()
    {
        if (_buffer is null) return;
        _buffer.Dispose();
        _buffer = null;
        _device.Account(-_bytes);
    }
}
