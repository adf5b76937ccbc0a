using eMoE.Compute.Ilgpu;
using eMoE.Kernels;
using eMoE.Model;
using ILGPU;
using ILGPU.Runtime;

namespace eMoE.Experts;

/// <summary>
/// Device memory for expert weights: equally sized slots, each holding one expert as
/// [gate (I x H) | up (I x H) | down (H x I)], and a table mapping (layer, expert) to its slot.
/// The expert kernels read experts only through this indirection, so an all-resident model and a
/// budgeted expert cache share the forward pass.
/// </summary>
internal sealed class ExpertSlab : IDisposable
{
    private readonly DeviceTensor _slots;
    private readonly DeviceBuffer<int> _slotTable;
    private readonly ModelConfig _config;

    /// <summary>Elements of one slot: 3 x I x H.</summary>
    public long SlotElements { get; }

    /// <summary>Number of slots.</summary>
    public int SlotCount { get; }

    /// <summary>Bytes of one expert's weights.</summary>
    public long SlotBytes => SlotElements * _slots.DType.ItemSize();

    /// <summary>The slab as the kernels read it.</summary>
    public WeightView Weights => _slots.View;

    public ExpertSlab(IlgpuBackend device, ModelConfig config, TensorDType dtype, int slotCount)
    {
        _config = config;
        SlotCount = slotCount;
        SlotElements = 3L * config.ExpertIntermediateSize * config.HiddenSize;
        _slots = DeviceTensor.Allocate(device, dtype, SlotElements * slotCount);
        _slotTable = device.AllocateDevice<int>((long)config.NumLayers * config.NumExperts);
    }

    /// <summary>Layer <paramref name="layer"/>'s expert-to-slot map [E] on the device.</summary>
    public ArrayView<int> SlotTable(int layer) => _slotTable.View.SubView((long)layer * _config.NumExperts, _config.NumExperts);

    /// <summary>Writes one layer's expert-to-slot map [E] (-1: not resident in this pass).</summary>
    public void SetLayerTable(int layer, ReadOnlySpan<int> table) => _slotTable.Upload(table, (long)layer * _config.NumExperts);

    /// <summary>Queues the copy of one expert (host bytes in slot layout) into a slot on <paramref name="stream"/>.</summary>
    public void FillAsync(int slot, IntPtr source, AcceleratorStream stream) =>
        _slots.CopyFromHostAsync(stream, source, SlotBytes, slot * SlotElements);

    public void Dispose()
    {
        _slots.Dispose();
        _slotTable.Dispose();
    }
}
