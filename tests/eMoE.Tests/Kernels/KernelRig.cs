using eMoE.Compute.Ilgpu;
using eMoE.Kernels;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using Half = System.Half;

namespace eMoE.Tests.Kernels;

/// <summary>
/// A CPU accelerator with the engine's kernels, in one of two launch shapes: the engine's own CPU
/// shape (one heavy thread per core, lanes = 1) or a simulated GPU with warps of 4 whose workers
/// are whole warps (lanes = 4), which runs the warp-reduction paths CUDA uses.
/// </summary>
internal sealed class KernelRig : IDisposable
{
    private readonly Context _context;
    private readonly List<IDisposable> _buffers = [];

    public Accelerator Accelerator { get; }
    public KernelSet Kernels { get; }
    public int Lanes { get; }
    public AcceleratorStream Stream => Accelerator.DefaultStream;

    public static IEnumerable<int> LaneShapes => [1, 4];

    public KernelRig(int lanes)
    {
        Lanes = lanes;
        var device = lanes == 1 ? IlgpuBackend.CpuDevice() : new CPUDevice(4, 4, 1);
        _context = Context.Create(b => b.CPU(device).EnableAlgorithms());
        Accelerator = _context.GetCPUDevice(0).CreateAccelerator(_context);
        Kernels = new KernelSet(Accelerator);
    }

    /// <summary>A grid-stride launch over items, with Lanes threads per item.</summary>
    public KernelConfig Launch(long items, int lanes = 1) =>
        lanes == 1 && Lanes == 1 ? new KernelConfig((int)Math.Clamp(items, 1, 2), 1)
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
        Accelerator.Dispose();
        _context.Dispose();
    }
}
