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
/// With expert parallelism each device's store holds only the experts its placement gives it, so
/// host memory holds every expert once whatever the device count.
/// </summary>
internal sealed unsafe class HostExpertStore : IDisposable
{
    private byte* _slab;
    private readonly PageLockScope<byte>? _pageLock;
    private readonly int _experts;
    private readonly int[] _index; // [layer * E + expert]: the expert's place in the slab, -1 when another device owns it

    /// <summary>Bytes of one expert.</summary>
    public long ExpertBytes { get; }

    /// <summary>Element type of every expert.</summary>
    public TensorDType DType { get; }

    /// <param name="device">The device the experts are copied to.</param>
    /// <param name="c">The model.</param>
    /// <param name="checkpoint">Where the weights are read.</param>
    /// <param name="owns">The experts to hold; null: every expert.</param>
    public HostExpertStore(IlgpuBackend device, ModelConfig c, Checkpoint checkpoint, Func<ExpertKey, bool>? owns = null)
    {
        _experts = c.NumExperts;
        _index = new int[c.NumLayers * c.NumExperts];
        int held = 0;
        for (int i = 0; i < _index.Length; i++) _index[i] = owns is null || owns(new ExpertKey(i / c.NumExperts, i % c.NumExperts)) ? held++ : -1;
        var first = checkpoint.Require(WeightLayout.Expert(c, 0, 0).Gate, c.ExpertIntermediateSize, c.HiddenSize);
        DType = first.DType;
        ExpertBytes = 3L * c.ExpertIntermediateSize * c.HiddenSize * DType.ItemSize();
        long total = Math.Max(1, ExpertBytes * held);
        _slab = (byte*)NativeMemory.AlignedAlloc((nuint)total, 4096);
        try
        {
            for (int l = 0; l < c.NumLayers; l++)
            {
                for (int e = 0; e < c.NumExperts; e++)
                {
                    if (_index[l * c.NumExperts + e] < 0) continue;
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
    /// <exception cref="ArgumentException">The store does not hold the expert (another device owns it).</exception>
    public IntPtr Pointer(ExpertKey key)
    {
        int index = _index[key.Layer * _experts + key.Expert];
        if (index < 0) throw new ArgumentException($"expert {key.Expert} of layer {key.Layer} is placed on another device");
        return (IntPtr)(_slab + index * ExpertBytes);
    }

    public void Dispose()
    {
        _pageLock?.Dispose();
        if (_slab != null) NativeMemory.AlignedFree(_slab);
        _slab = null;
    }
}
