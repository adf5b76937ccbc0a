using System.Runtime.InteropServices;
using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using ILGPU.Runtime.Cuda;

namespace eMoE.GpuCheck;

/// <summary>The device's facts, and the peak memory bandwidth the GB/s figures are compared with.</summary>
internal static class DeviceFacts
{
    /// <summary>Datasheet peak memory bandwidth by name (bytes/s), first match wins: used when the driver reports no memory clock or bus width.</summary>
    public static readonly (string Match, string Entry, double BytesPerSecond)[] PeakTable =
    [
        ("H200", "H200 (HBM3e): 4.8 TB/s", 4.8e12),
        ("H100 PCIe", "H100 PCIe: 2.0 TB/s", 2.0e12),
        ("H100 NVL", "H100 NVL: 3.9 TB/s", 3.9e12),
        ("H100", "H100 SXM: 3.35 TB/s", 3.35e12),
        ("A100-SXM4-80GB", "A100 80GB SXM: 2.04 TB/s", 2.039e12),
        ("A100 80GB PCIe", "A100 80GB PCIe: 1.94 TB/s", 1.935e12),
        ("A100", "A100 40GB: 1.56 TB/s", 1.555e12),
        ("L40S", "L40S: 864 GB/s", 0.864e12),
    ];

    /// <summary>Opens <paramref name="spec"/> as the engine does and reads what it reports.</summary>
    /// <exception cref="DeviceNotFoundException">The device is not present.</exception>
    public static DeviceInfo Read(DeviceSpec spec)
    {
        using var backend = IlgpuBackend.Create(spec);
        var accelerator = backend.Accelerator;
        var info = new DeviceInfo
        {
            Requested = spec.ToString(),
            Kind = backend.Kind.ToString(),
            Name = accelerator.Name,
            Multiprocessors = accelerator.NumMultiprocessors,
            WarpSize = accelerator.WarpSize,
            HostProcessors = Environment.ProcessorCount,
            Runtime = RuntimeInformation.FrameworkDescription,
            Os = RuntimeInformation.OSDescription,
            PeakSource = "none: not a GPU (the CPU accelerator's figures are not memory bandwidth)",
        };
        if (accelerator is not CudaAccelerator cuda) return info;

        double? fromClock = cuda.MemoryClockRate > 0 && cuda.MemoryBusWidth > 0
            ? 2.0 * cuda.MemoryClockRate * 1e6 * cuda.MemoryBusWidth / 8
            : null;
        var table = PeakTable.FirstOrDefault(t => accelerator.Name.Contains(t.Match, StringComparison.OrdinalIgnoreCase));
        double? fromTable = table.Match is null ? null : table.BytesPerSecond;
        return info with
        {
            MemoryBytes = accelerator.MemorySize,
            FreeMemoryBytes = cuda.GetFreeMemory(),
            Architecture = cuda.Architecture.ToString(),
            InstructionSet = cuda.InstructionSet.ToString(),
            DriverVersion = cuda.DriverVersion.ToString(),
            ClockMhz = cuda.ClockRate,
            MemoryClockMhz = cuda.MemoryClockRate,
            MemoryBusWidthBits = cuda.MemoryBusWidth,
            L2CacheBytes = cuda.L2CacheSize,
            PeakFromClockBytesPerSecond = fromClock,
            PeakFromTableBytesPerSecond = fromTable,
            PeakBytesPerSecond = fromClock ?? fromTable,
            PeakSource = fromClock is not null
                ? $"computed from the driver's memory clock ({cuda.MemoryClockRate} MHz) and bus width ({cuda.MemoryBusWidth} bits): 2 x clock x width / 8"
                : fromTable is not null ? $"table ({table.Entry}): the driver reported no memory clock or bus width"
                : "none: the driver reported no memory clock or bus width and the table has no entry for this name",
        };
    }
}
