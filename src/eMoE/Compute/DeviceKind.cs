using System.Globalization;

namespace eMoE.Compute;

/// <summary>The kinds of compute backend.</summary>
public enum DeviceKind
{
    /// <summary>CUDA if a device is found, then an OpenCL GPU that ILGPU supports, else the host (<see cref="Cpu"/>).</summary>
    Auto,
    /// <summary>The host: SIMD code on the CPU cores, weights read in place from the memory-mapped checkpoint.</summary>
    Cpu,
    /// <summary>ILGPU's CPU accelerator (simulated GPU threads on the host cores): runs the GPU kernels, for testing them.</summary>
    IlgpuCpu,
    /// <summary>An NVIDIA GPU through the CUDA driver (no toolkit needed).</summary>
    Cuda,
    /// <summary>An OpenCL GPU with the generic address space ILGPU requires.</summary>
    OpenCL,
}

/// <summary>
/// A device as people name it: <c>auto</c>, <c>cpu</c>, <c>ilgpu-cpu</c>, <c>cuda</c>, <c>cuda:1</c>,
/// <c>opencl:0</c>. The index picks among devices of the kind (CUDA and OpenCL only).
/// </summary>
/// <param name="Kind">The kind of backend.</param>
/// <param name="Index">Which device of the kind, from 0.</param>
public readonly record struct DeviceSpec(DeviceKind Kind, int Index = 0)
{
    /// <summary>A device of <paramref name="kind"/>, the first of its kind.</summary>
    public static implicit operator DeviceSpec(DeviceKind kind) => new(kind);

    /// <summary>Parses a device name (case-insensitive).</summary>
    /// <exception cref="ArgumentException">Not a device name; the message lists the valid ones.</exception>
    public static DeviceSpec Parse(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        int colon = t.IndexOf(':');
        string name = colon < 0 ? t : t[..colon];
        DeviceKind? kind = name switch
        {
            "auto" => DeviceKind.Auto,
            "cpu" or "host" => DeviceKind.Cpu,
            "ilgpu-cpu" => DeviceKind.IlgpuCpu,
            "cuda" => DeviceKind.Cuda,
            "opencl" => DeviceKind.OpenCL,
            _ => null,
        };
        if (kind is not { } k) throw new ArgumentException($"unknown device '{text}': use auto, cpu, ilgpu-cpu, cuda[:N] or opencl[:N]");
        if (colon < 0) return new DeviceSpec(k);
        if (k is not (DeviceKind.Cuda or DeviceKind.OpenCL)) throw new ArgumentException($"device '{text}': only cuda and opencl devices take an index");
        if (!int.TryParse(t[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int index))
            throw new ArgumentException($"device '{text}': the index after ':' must be a number >= 0");
        return new DeviceSpec(k, index);
    }

    /// <summary>The name as <see cref="Parse"/> reads it.</summary>
    public override string ToString()
    {
        string name = Kind switch
        {
            DeviceKind.Cpu => "cpu",
            DeviceKind.IlgpuCpu => "ilgpu-cpu",
            DeviceKind.Cuda => "cuda",
            DeviceKind.OpenCL => "opencl",
            _ => "auto",
        };
        return Kind is DeviceKind.Cuda or DeviceKind.OpenCL ? $"{name}:{Index}" : name;
    }
}

/// <summary>Raised when the requested kind of device is not available.</summary>
public sealed class DeviceNotFoundException(string message) : Exception(message);
