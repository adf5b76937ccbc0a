using eMoE.Compute;
using eMoE.Kernels;
using eMoE.Model;
using ILGPU;

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

    public ExpertSlab(ComputeDevice device, ModelConfig config, TensorDType dtype, int slotCount)
    {
        _config = config;
        SlotCount = slotCount;
        SlotElements = 3L * config.ExpertIntermediateSize * config.HiddenSize;
        _slots = DeviceTensor.Allocate(device, dtype, SlotElements * slotCount);
        _slotTable = device.Allocate<int>((long)config.NumLayers * config.NumExperts);
    }

    /// <summary>Layer <paramref name="layer"/>'s expert-to-slot map [E] on the device.</summary>
    public ArrayView<int> SlotTable(int layer) => _slotTable.View.SubView((long)layer * _config.NumExperts, _config.NumExperts);

    /// <summary>Writes the whole (layer, expert) to slot table [L * E].</summary>
    public void SetSlotTable(ReadOnlySpan<int> table) => _slotTable.Upload(table);

    /// <summary>Copies one expert's three tensors from the checkpoint into a slot.</summary>
    public void Fill(int slot, Checkpoint checkpoint, int layer, int expert)
    {
        var (gate, up, down) = WeightLayout.Expert(_config, layer, expert);
        long part = (long)_config.ExpertIntermediateSize * _config.HiddenSize;
        long start = slot * SlotElements;
        _slots.CopyFrom(checkpoint.Bytes(checkpoint.Require(gate, _config.ExpertIntermediateSize, _config.HiddenSize)), start);
        _slots.CopyFrom(checkpoint.Bytes(checkpoint.Require(up, _config.ExpertIntermediateSize, _config.HiddenSize)), start + part);
        _slots.CopyFrom(checkpoint.Bytes(checkpoint.Require(down, _config.HiddenSize, _config.ExpertIntermediateSize)), start + 2 * part);
    }

    public void Dispose()
    {
        _slots.Dispose();
        _slotTable.Dispose();
    }
}
