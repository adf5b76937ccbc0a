using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using eMoE.Inference;
using eMoE.Model;

namespace eMoE.Experts;

/// <summary>
/// The expert-parallel settings of <see cref="ModelOptions"/> checked against the model before any
/// device is opened: the devices, the placement (round-robin by default) and each device's budget.
/// </summary>
internal sealed record ExpertParallelism(IReadOnlyList<DeviceSpec> Devices, ExpertPlacement Placement, IReadOnlyList<ExpertBudget> Budgets)
{
    /// <summary>The checked settings, or null for one device (then a placement, if given, must be for one device).</summary>
    /// <exception cref="ArgumentException">A device cannot take part, or the placement or budgets do not fit.</exception>
    public static ExpertParallelism? Resolve(ModelConfig config, ModelOptions options)
    {
        var devices = options.Devices;
        if (devices is not { Count: > 1 })
        {
            options.Placement?.CheckFits(config, 1);
            if (options.DeviceBudgets is { Count: > 1 } budgets) throw new ArgumentException($"{budgets.Count} expert memory budgets for one device");
            return null;
        }
        foreach (var spec in devices)
        {
            if (spec.Kind is DeviceKind.Cpu or DeviceKind.Auto)
                throw new ArgumentException($"device '{spec}' cannot be one of several: each device needs an expert cache (the host keeps every expert in place); " +
                    "use ilgpu-cpu, cuda[:N] or opencl[:N]");
        }
        var placement = options.Placement ?? ExpertPlacement.RoundRobin(config.NumLayers, config.NumExperts, devices.Count);
        placement.CheckFits(config, devices.Count);
        var perDevice = options.DeviceBudgets ?? [.. devices.Select(_ => options.Experts.Budget)];
        if (perDevice.Count != devices.Count)
            throw new ArgumentException($"{perDevice.Count} expert memory budgets for {devices.Count} devices: give one, or one per device");
        return new ExpertParallelism(devices, placement, perDevice);
    }

    /// <summary>The residency over <paramref name="devices"/> (opened from <see cref="Devices"/>, all ILGPU devices); it takes ownership of all but the first.</summary>
    public IExpertResidency CreateResidency(IReadOnlyList<ComputeBackend> devices, ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options) =>
        new ExpertParallelResidency([.. devices.Select(d => d as IlgpuBackend ?? throw new ArgumentException($"{d.Name} is not an ILGPU device"))],
            config, checkpoint, options, Budgets, Placement);
}
