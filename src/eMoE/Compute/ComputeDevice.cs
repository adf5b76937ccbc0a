using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace eMoE.Compute;

/// <summary>
/// One ILGPU accelerator with the kernels loaded for it, plus accounting of the device memory the
/// engine allocates. Launch shapes follow the accelerator: many light threads on a GPU, one heavy
/// thread per core on the CPU accelerator.
/// </summary>
public sealed class ComputeDevice : IDisposable
{
    private readonly Context _context;
    private long _allocatedBytes;
    private long _peakBytes;

    internal Accelerator Accelerator { get; }
    internal KernelSet Kernels { get; }

    /// <summary>The kind actually in use (never <see cref="DeviceKind.Auto"/>).</summary>
    public DeviceKind Kind { get; }

    /// <summary>The device's name as the driver reports it.</summary>
    public string Name => Accelerator.Name;

    /// <summary>Threads that cooperate on one row (warp size on GPUs, 1 on the CPU accelerator).</summary>
    public int Lanes { get; }

    /// <summary>Bytes of device memory currently allocated by the engine.</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocatedBytes);

    /// <summary>Highest <see cref="AllocatedBytes"/> seen.</summary>
    public long PeakAllocatedBytes => Interlocked.Read(ref _peakBytes);

    /// <summary>Total device memory (the CPU accelerator reports no real limit: <see cref="long.MaxValue"/>).</summary>
    public long TotalMemoryBytes => Accelerator.MemorySize;

    private ComputeDevice(Context context, Accelerator accelerator, DeviceKind kind)
    {
        _context = context;
        Accelerator = accelerator;
        Kind = kind;
        Lanes = kind == DeviceKind.Cpu ? 1 : accelerator.WarpSize;
        Kernels = new KernelSet(accelerator);
    }

    /// <summary>Opens a device of the requested kind.</summary>
    /// <exception cref="DeviceNotFoundException">The requested kind is not present.</exception>
    public static ComputeDevice Create(DeviceKind kind = DeviceKind.Auto)
    {
        CudaDriverResolver.Install();
        var context = Context.Create(builder =>
        {
            if (kind is DeviceKind.Auto or DeviceKind.Cuda) builder.Cuda();
            if (kind is DeviceKind.Auto or DeviceKind.OpenCL) builder.OpenCL(IsUsableOpenCLDevice);
            builder.CPU(CpuDevice());
            // Without algorithms, Exp/Sqrt and warp reductions have no PTX implementation.
            builder.EnableAlgorithms();
        });
        try
        {
            var (device, actual) = Choose(context, kind);
            return new ComputeDevice(context, device.CreateAccelerator(context), actual);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The CPU accelerator's shape: one simulated thread per core, each running many items.</summary>
    internal static CPUDevice CpuDevice() => new(2, 1, Math.Max(1, Environment.ProcessorCount));

    private static (Device Device, DeviceKind Kind) Choose(Context context, DeviceKind kind)
    {
        var cuda = context.GetCudaDevices();
        var opencl = context.GetCLDevices();
        switch (kind)
        {
            case DeviceKind.Cuda when cuda.Count == 0:
                throw new DeviceNotFoundException("no CUDA device found (is the NVIDIA driver, libcuda.so.1, installed?)");
            case DeviceKind.OpenCL when opencl.Count == 0:
                throw new DeviceNotFoundException("no OpenCL GPU with the generic address space ILGPU requires was found");
            case DeviceKind.Cuda:
                return (cuda[0], DeviceKind.Cuda);
            case DeviceKind.OpenCL:
                return (opencl[0], DeviceKind.OpenCL);
            case DeviceKind.Cpu:
                return (context.GetCPUDevice(0), DeviceKind.Cpu);
            default:
                if (cuda.Count > 0) return (cuda[0], DeviceKind.Cuda);
                if (opencl.Count > 0) return (opencl[0], DeviceKind.OpenCL);
                return (context.GetCPUDevice(0), DeviceKind.Cpu);
        }
    }

    // ILGPU needs the generic address space; CPU OpenCL runtimes (PoCL) lack it, and we only want GPUs.
    private static bool IsUsableOpenCLDevice(CLDevice device) =>
        device.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU && device.Capabilities.GenericAddressSpace;

    /// <summary>
    /// A launch over <paramref name="items"/> work items with <paramref name="lanes"/> threads per
    /// item. Kernels are grid-stride loops, so the grid may be smaller than the work.
    /// </summary>
    internal KernelConfig Launch(long items, int lanes = 1)
    {
        if (Kind == DeviceKind.Cpu)
        {
            int cores = Accelerator.NumMultiprocessors;
            return new KernelConfig((int)Math.Clamp(items, 1, cores), 1);
        }
        const int GroupSize = 256;
        long threads = Math.Max(1, items) * lanes;
        long maxGroups = (long)Accelerator.NumMultiprocessors * 16;
        return new KernelConfig((int)Math.Clamp((threads + GroupSize - 1) / GroupSize, 1, maxGroups), GroupSize);
    }

    /// <summary>Allocates an accounted device buffer.</summary>
    internal DeviceBuffer<T> Allocate<T>(long length) where T : unmanaged => new(this, length);

    internal void Account(long bytes)
    {
        long now = Interlocked.Add(ref _allocatedBytes, bytes);
        long peak;
        while (now > (peak = Interlocked.Read(ref _peakBytes)) && Interlocked.CompareExchange(ref _peakBytes, now, peak) != peak) { }
    }

    /// <summary>Waits for all queued work on the device.</summary>
    public void Synchronize() => Accelerator.Synchronize();

    /// <summary>Releases the accelerator and its context.</summary>
    public void Dispose()
    {
        Accelerator.Dispose();
        _context.Dispose();
    }
}

/// <summary>
/// .NET probes <c>libcuda.so</c> but many machines have only <c>libcuda.so.1</c>; without this
/// fallback CUDA silently disappears.
/// </summary>
internal static class CudaDriverResolver
{
    private static int _installed;

    public static void Install()
    {
        if (Interlocked.Exchange(ref _installed, 1) == 1) return;
        AssemblyLoadContext.Default.ResolvingUnmanagedDll += Resolve;
    }

    private static IntPtr Resolve(Assembly assembly, string name)
    {
        if (name is not ("cuda" or "libcuda" or "libcuda.so" or "nvcuda")) return IntPtr.Zero;
        return NativeLibrary.TryLoad("libcuda.so.1", out var handle) ? handle : IntPtr.Zero;
    }
}
