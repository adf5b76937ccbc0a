namespace eMoE.Compute;

/// <summary>Which accelerator to run on.</summary>
public enum DeviceKind
{
    /// <summary>CUDA if a device is found, then an OpenCL GPU that ILGPU supports, else the CPU accelerator.</summary>
    Auto,
    /// <summary>An NVIDIA GPU through the CUDA driver (no toolkit needed).</summary>
    Cuda,
    /// <summary>An OpenCL GPU with the generic address space ILGPU requires.</summary>
    OpenCL,
    /// <summary>ILGPU's CPU accelerator (simulated GPU threads on the host cores).</summary>
    Cpu,
}

/// <summary>Raised when the requested kind of device is not available.</summary>
public sealed class DeviceNotFoundException(string message) : Exception(message);
