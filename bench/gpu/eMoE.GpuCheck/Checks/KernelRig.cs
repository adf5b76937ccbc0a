using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using eMoE.Kernels;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using Half = System.Half;

namespace eMoE.GpuCheck.Checks;

/// <summary>
/// An accelerator with the engine's kernels and the buffers a check allocates on it, freed together.
/// Two kinds: ILGPU's CPU accelerator in one of the two launch shapes the unit tests use (lanes 1:
/// the engine's own CPU shape, one heavy thread per core; lanes 4: a simulated GPU with warps of 4
/// whose workers are whole warps, which runs the warp-reduction paths CUDA uses), or an engine
/// device (CUDA, ilgpu-cpu) opened as the engine opens it, with the engine's launch shapes and lanes.
/// </summary>
internal sealed class KernelRig : IDisposable
{
    private readonly Context? _context;
    private readonly IlgpuBackend? _backend;
    private readonly List<IDisposable> _buffers = [];

    public Accelerator Accelerator { get; }
    public KernelSet Kernels { get; }

    /// <summary>Threads that cooperate on one row (the kernels' lanes argument).</summary>
    public int Lanes { get; }

    /// <summary>What runs the kernels, for reports.</summary>
    public string Name => _backend is null ? $"ILGPU CPU accelerator, lanes {Lanes}" : $"{_backend.Name} ({_backend.Kind}, lanes {Lanes})";

    public AcceleratorStream Stream => Accelerator.DefaultStream;

    /// <summary>The CPU accelerator's launch shapes the unit tests run every check in.</summary>
    public static IEnumerable<int> LaneShapes => [1, 4];

    private KernelRig(Context? context, IlgpuBackend? backend, Accelerator accelerator, KernelSet kernels, int lanes)
    {
        _context = context;
        _backend = backend;
        Accelerator = accelerator;
        Kernels = kernels;
        Lanes = lanes;
    }

    /// <summary>ILGPU's CPU accelerator in a unit-test launch shape (lanes 1 or 4).</summary>
    public static KernelRig CpuAccelerator(int lanes)
    {
        var device = lanes == 1 ? IlgpuBackend.CpuDevice() : new CPUDevice(4, 4, 1);
        var context = Context.Create(b => b.CPU(device).EnableAlgorithms());
        var accelerator = context.GetCPUDevice(0).CreateAccelerator(context);
        return new KernelRig(context, null, accelerator, new KernelSet(accelerator), lanes);
    }

    /// <summary>An engine device (cuda[:N], ilgpu-cpu), with the launch shapes the engine uses on it.</summary>
    /// <exception cref="DeviceNotFoundException">The device is not present.</exception>
    public static KernelRig OnDevice(DeviceSpec device)
    {
        var backend = IlgpuBackend.Create(device);
        return new KernelRig(null, backend, backend.Accelerator, backend.Kernels, backend.Lanes);
    }

    /// <summary>A grid-stride launch over items, with <paramref name="lanes"/> threads per item.</summary>
    public KernelConfig Launch(long items, int lanes = 1) =>
        _backend is not null ? _backend.Launch(items, lanes)
        : lanes == 1 && Lanes == 1 ? new KernelConfig((int)Math.Clamp(items, 1, 2), 1)
        : new KernelConfig((int)Math.Clamp((items * lanes + 15) / 16, 1, 4), 16);

    public ArrayView<T> Upload<T>(T[] data) where T : unmanaged
    {
        var buffer = Accelerator.Allocate1D(data.Length == 0 ? new T[1] : data);
        _buffers.Add(buffer);
        return buffer.View.AsContiguous();
    }

    public ArrayView<T> Zeros<T>(long length) where T : unmanaged
    {
        var buffer = Accelerator.Allocate1D<T>(Math.Max(1, length));
        buffer.MemSetToZero();
        _buffers.Add(buffer);
        return buffer.View.AsContiguous();
    }

    public WeightView Weights(float[] values, int type)
    {
        if (type == WeightType.F32) return WeightView.FromF32(Upload(values));
        var bits = values.Select(v => type == WeightType.BF16
            ? (ushort)(BitConverter.SingleToInt32Bits(v) >>> 16)
            : BitConverter.HalfToUInt16Bits((Half)v)).ToArray();
        return WeightView.From16(Upload(bits), type);
    }

    /// <summary>The values a kernel sees for weights stored as <paramref name="type"/>.</summary>
    public static float[] Rounded(float[] values, int type) => type switch
    {
        WeightType.BF16 => values.Select(v => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000))).ToArray(),
        WeightType.F16 => values.Select(v => (float)(Half)v).ToArray(),
        _ => values,
    };

    public T[] Read<T>(ArrayView<T> view) where T : unmanaged
    {
        Accelerator.Synchronize();
        return view.GetAsArray();
    }

    public static float[] Random(int seed, long count, float scale = 1f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, (int)count).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
    }

    public void Dispose()
    {
        foreach (var b in _buffers) b.Dispose();
        _buffers.Clear();
        if (_backend is not null)
        {
            _backend.Dispose();
            return;
        }
        Accelerator.Dispose();
        _context!.Dispose();
    }
}
