using System.Runtime.InteropServices;
using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using eMoE.Model;
using ILGPU.Runtime;

namespace eMoE.Experts;

/// <summary>
/// Every expert's weights in one page-locked host slab, each expert contiguous as
/// [gate (I x H) | up (I x H) | down (H x I)] in the checkpoint dtype — the layout of a device
/// slot, so one copy moves one expert. Page-locking (on CUDA) makes those copies truly asynchronous.
/// </summary>
internal sealed unsafe class HostExpertStore : IDisposable
{
    private byte* _slab;
    private readonly PageLockScope<byte>? _pageLock;
    private readonly int _experts;

    /// <summary>Bytes of one expert.</summary>
    public long ExpertBytes { get; }

    /// <summary>Element type of every expert.</summary>
    public TensorDType DType { get; }

    public HostExpertStore(IlgpuBackend device, ModelConfig c, Checkpoint checkpoint)
    {
        _experts = c.NumExperts;
        var first = checkpoint.Require(WeightLayout.Expert(c, 0, 0).Gate, c.ExpertIntermediateSize, c.HiddenSize);
        DType = first.DType;
        ExpertBytes = 3L * c.ExpertIntermediateSize * c.HiddenSize * DType.ItemSize();
        long total = ExpertBytes * c.NumLayers * c.NumExperts;
        _slab = (byte*)NativeMemory.AlignedAlloc((nuint)total, 4096);
        try
        {
            for (int l = 0; l < c.NumLayers; l++)
            {
                for (int e = 0; e < c.NumExperts; e++)
                {
                    var (gate, up, down) = WeightLayout.Expert(c, l, e);
                    byte* dst = (byte*)Pointer(new ExpertKey(l, e));
                    foreach (string name in new[] { gate, up, down })
                    {
                        var bytes = checkpoint.Bytes(checkpoint.Get(name));
                        bytes.CopyTo(new Span<byte>(dst, bytes.Length));
                        dst += bytes.Length;
                    }
                }
            }
            // The CPU accelerator copies with memcpy either way; only CUDA benefits from pinning.
            if (device.Kind == DeviceKind.Cuda) _pageLock = device.Accelerator.CreatePageLockFromPinned<byte>((IntPtr)_slab, total);
        }
        catch
        {
            NativeMemory.AlignedFree(_slab);
            throw;
        }
    }

    /// <summary>Start of one expert's bytes.</summary>
    public IntPtr Pointer(ExpertKey key) => (IntPtr)(_slab + ((long)key.Layer * _experts + key.Expert) * ExpertBytes);

    public void Dispose()
    {
        _pageLock?.Dispose();
        if (_slab != null) NativeMemory.AlignedFree(_slab);
        _slab = null;
    }
}
