using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using eMoE.Experts;
using eMoE.Kernels;
using eMoE.Model;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace eMoE.Compute.Ilgpu;

/// <summary>
/// One ILGPU accelerator (CUDA, OpenCL or the CPU accelerator) with the kernels loaded for it: each
/// operation of the backend is one kernel launch on the default stream. Launch shapes follow the
/// accelerator: many light threads on a GPU, one heavy thread per core on the CPU accelerator.
/// </summary>
internal sealed class IlgpuBackend : ComputeBackend
{
    private readonly Context _context;

    public Accelerator Accelerator { get; }
    public KernelSet Kernels { get; }
    public AcceleratorStream Stream => Accelerator.DefaultStream;

    /// <inheritdoc/>
    public override DeviceKind Kind { get; }

    /// <inheritdoc/>
    public override string Name => Accelerator.Name;

    /// <summary>Threads that cooperate on one row (warp size on GPUs, 1 on the CPU accelerator).</summary>
    public int Lanes { get; }

    private IlgpuBackend(Context context, Accelerator accelerator, DeviceKind kind)
    {
        _context = context;
        Accelerator = accelerator;
        Kind = kind;
        Lanes = kind == DeviceKind.IlgpuCpu ? 1 : accelerator.WarpSize;
        Kernels = new KernelSet(accelerator);
    }

    /// <summary>Opens an ILGPU device of the requested kind.</summary>
    /// <exception cref="DeviceNotFoundException">The requested device is not present.</exception>
    public static IlgpuBackend Create(DeviceSpec spec)
    {
        var context = NewContext(spec.Kind);
        try
        {
            var (device, kind) = Choose(context, spec);
            return new IlgpuBackend(context, device.CreateAccelerator(context), kind);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The first CUDA device, else the first usable OpenCL GPU, else null.</summary>
    public static IlgpuBackend? TryCreateGpu()
    {
        var context = NewContext(DeviceKind.Auto);
        var cuda = context.GetCudaDevices();
        var opencl = context.GetCLDevices();
        if (cuda.Count == 0 && opencl.Count == 0)
        {
            context.Dispose();
            return null;
        }
        try
        {
            return cuda.Count > 0
                ? new IlgpuBackend(context, cuda[0].CreateAccelerator(context), DeviceKind.Cuda)
                : new IlgpuBackend(context, opencl[0].CreateAccelerator(context), DeviceKind.OpenCL);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    private static Context NewContext(DeviceKind kind)
    {
        CudaDriverResolver.Install();
        return Context.Create(builder =>
        {
            if (kind is DeviceKind.Auto or DeviceKind.Cuda) builder.Cuda();
            if (kind is DeviceKind.Auto or DeviceKind.OpenCL) builder.OpenCL(IsUsableOpenCLDevice);
            if (kind == DeviceKind.IlgpuCpu) builder.CPU(CpuDevice());
            // Without algorithms, Exp/Sqrt and warp reductions have no PTX implementation.
            builder.EnableAlgorithms();
        });
    }

    /// <summary>The CPU accelerator's shape: one simulated thread per core, each running many items.</summary>
    internal static CPUDevice CpuDevice() => new(2, 1, Math.Max(1, Environment.ProcessorCount));

    private static (Device Device, DeviceKind Kind) Choose(Context context, DeviceSpec spec)
    {
        switch (spec.Kind)
        {
            case DeviceKind.Cuda:
                {
                    var cuda = context.GetCudaDevices();
                    if (cuda.Count == 0) throw new DeviceNotFoundException("no CUDA device found (is the NVIDIA driver, libcuda.so.1, installed?)");
                    if (spec.Index >= cuda.Count) throw new DeviceNotFoundException($"no device {spec}: {cuda.Count} CUDA device(s) found");
                    return (cuda[spec.Index], DeviceKind.Cuda);
                }
            case DeviceKind.OpenCL:
                {
                    var opencl = context.GetCLDevices();
                    if (opencl.Count == 0) throw new DeviceNotFoundException("no OpenCL GPU with the generic address space ILGPU requires was found");
                    if (spec.Index >= opencl.Count) throw new DeviceNotFoundException($"no device {spec}: {opencl.Count} usable OpenCL GPU(s) found");
                    return (opencl[spec.Index], DeviceKind.OpenCL);
                }
            case DeviceKind.IlgpuCpu:
                return (context.GetCPUDevice(0), DeviceKind.IlgpuCpu);
            default:
                throw new ArgumentOutOfRangeException(nameof(spec), $"{spec} is not an ILGPU device");
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
        if (Kind == DeviceKind.IlgpuCpu)
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
    internal DeviceBuffer<T> AllocateDevice<T>(long length) where T : unmanaged => new(this, length);

    internal override Buffer<T> Allocate<T>(long length) => AllocateDevice<T>(length);

    internal override Weight LoadWeight(Checkpoint checkpoint, TensorInfo tensor) => DeviceTensor.Upload(this, checkpoint, tensor);

    internal override Weight CreateWeight(ReadOnlySpan<float> values)
    {
        var tensor = DeviceTensor.Allocate(this, TensorDType.F32, values.Length);
        tensor.CopyFrom(MemoryMarshal.AsBytes(values), 0);
        return tensor;
    }

    internal override void Upload<T>(ReadOnlySpan<T> data, BufferView<T> destination) => Device(destination).Upload(data, destination.Offset);

    internal override void Download<T>(BufferView<T> source, Span<T> destination) => Device(source).Download(destination, source.Offset);

    internal override void Copy(BufferView<float> source, BufferView<float> destination) => View(source).CopyTo(Stream, View(destination));

    /// <inheritdoc/>
    public override void Synchronize() => Stream.Synchronize();

    internal override void Bind() => Accelerator.Bind();

    internal override IExpertResidency CreateExperts(ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options) =>
        new ExpertCache(this, config, checkpoint, options);

    private static DeviceBuffer<T> Device<T>(BufferView<T> view) where T : unmanaged =>
        view.Buffer as DeviceBuffer<T> ?? throw new ArgumentException("the buffer belongs to another backend");

    /// <summary>The ILGPU view of a buffer range.</summary>
    internal static ArrayView<T> View<T>(BufferView<T> view) where T : unmanaged => Device(view).View.SubView(view.Offset, view.Length);

    /// <summary>
    /// The view of a buffer a kernel reads four floats at a time (<see cref="Quads"/>). It must start at a
    /// multiple of 4: ILGPU's view cast would otherwise round the start down without a word.
    /// </summary>
    private static ArrayView<float> QuadAligned(BufferView<float> view) =>
        view.Offset % 4 == 0 ? View(view) : throw new ArgumentException($"a view read four floats at a time starts at element {view.Offset}, not a multiple of 4");

    private static WeightView W(Weight weight) => (weight as DeviceTensor ?? throw new ArgumentException("the weight belongs to another backend")).View;

    internal override void Embedding(BufferView<int> tokens, Weight table, BufferView<float> x, int count, int hidden) =>
        Kernels.Embedding(Stream, Launch((long)count * hidden), View(tokens), W(table), View(x), count, hidden);

    internal override void GatherRows(BufferView<int> rows, BufferView<float> source, BufferView<float> destination, int count, int width) =>
        Kernels.Embedding(Stream, Launch((long)count * width), View(rows), WeightView.FromF32(View(source)), View(destination), count, width);

    internal override void RmsNorm(BufferView<float> input, Weight weight, BufferView<float> output, int rows, int size, float eps) =>
        Kernels.RmsNorm(Stream, Launch(rows, Lanes), View(input), W(weight), View(output), rows, size, eps, Lanes);

    internal override void MatMul(BufferView<float> x, Weight w, BufferView<float> y, int tokens, int n, int k, bool accumulate)
    {
        if (k % 4 != 0) throw new ArgumentException($"MatMul reads rows four values at a time: K = {k} is not a multiple of 4", nameof(k));
        Kernels.MatMul(Stream, Launch(MatMulKernels.Items(tokens, n), Lanes), new MatMulArgs
        {
            X = QuadAligned(x), W = W(w), Y = View(y), Tokens = tokens, N = n, K = k, Accumulate = accumulate ? 1 : 0,
        }, Lanes);
    }

    internal override void RopeAndCache(in RopeOp op) =>
        Kernels.RopeAndCache(Stream, Launch((long)op.Tokens * (op.Heads + op.KvHeads) * op.HeadDim / 2), new RopeArgs
        {
            Q = View(op.Q), K = View(op.K), V = View(op.V), KCache = View(op.KCache), VCache = View(op.VCache),
            Positions = View(op.Positions), CacheRows = View(op.CacheRows), Cos = View(op.Cos), Sin = View(op.Sin),
            Tokens = op.Tokens, Heads = op.Heads, KvHeads = op.KvHeads, HeadDim = op.HeadDim,
        });

    internal override void Attention(in AttentionOp op) =>
        Kernels.Attention(Stream, Launch((long)op.Tokens * op.Heads, Lanes), new AttentionArgs
        {
            Q = QuadAligned(op.Q), KCache = QuadAligned(op.KCache), VCache = QuadAligned(op.VCache), Positions = View(op.Positions), SequenceOf = View(op.SequenceOf),
            BlockTables = View(op.BlockTables), Scores = View(op.Scores), Output = View(op.Output), Tokens = op.Tokens, Heads = op.Heads,
            KvHeads = op.KvHeads, HeadDim = op.HeadDim, MaxSeq = op.MaxSeq, BlockSize = op.BlockSize, MaxBlocks = op.MaxBlocks,
        }, Lanes);

    internal override void SoftmaxTopK(BufferView<float> logits, BufferView<int> ids, BufferView<float> weights, int tokens, int experts, int topK, bool renormalize) =>
        Kernels.SoftmaxTopK(Stream, Launch(tokens), new RouterArgs
        {
            Logits = View(logits), ExpertIds = View(ids), ExpertWeights = View(weights), Tokens = tokens, Experts = experts, TopK = topK,
            Renormalize = renormalize ? 1 : 0,
        });

    internal override void GroupByExpert(BufferView<int> ids, BufferView<int> offsets, BufferView<int> order, int assignments, int experts) =>
        Kernels.GroupByExpert(Stream, Launch(experts), new GroupArgs
        {
            ExpertIds = View(ids), Offsets = View(offsets), Order = View(order), Assignments = assignments, Experts = experts,
        });

    internal override void ExpertFfn(in ExpertOp op, ExpertPass pass)
    {
        if (pass is HybridHostPass host)
        {
            host.Runner.Run(this, op, host.Experts);
            return;
        }
        if (pass is PeerDevicePass peer)
        {
            peer.Runner.Run(this, op, peer);
            return;
        }
        if (op.HiddenSize % 4 != 0 || op.Intermediate % 4 != 0)
            throw new ArgumentException($"the expert kernels read rows four values at a time: H = {op.HiddenSize} and I = {op.Intermediate} must be multiples of 4");
        var args = Args(op, pass as DeviceExpertPass ?? throw new ArgumentException("the expert pass belongs to another backend"));
        Kernels.ExpertGateUp(Stream, Launch(ExpertKernels.GateUpItems(op.Tokens, op.TopK, op.Experts, op.Intermediate), Lanes), args, Lanes);
        Kernels.ExpertDown(Stream, Launch(ExpertKernels.DownItems(op.Tokens, op.TopK, op.Experts, op.HiddenSize), Lanes), args, Lanes);
    }

    internal override void ExpertCombine(in ExpertOp op) => Kernels.ExpertCombine(Stream, Launch((long)op.Tokens * op.HiddenSize), Args(op, null));

    private static ExpertArgs Args(in ExpertOp op, DeviceExpertPass? pass) => new()
    {
        X = QuadAligned(op.X), ExpertIds = View(op.ExpertIds), ExpertWeights = View(op.ExpertWeights), Order = View(op.Order), Offsets = View(op.Offsets),
        SlotOfExpert = pass?.SlotTable ?? default, Slab = pass?.Slab ?? default, Hidden = QuadAligned(op.Hidden), Output = View(op.Output),
        Residual = View(op.Residual), Tokens = op.Tokens, TopK = op.TopK, HiddenSize = op.HiddenSize, Intermediate = op.Intermediate,
        Experts = op.Experts,
    };

    internal override void Sample(in SampleOp op) =>
        Kernels.Sample(Stream, Launch(op.Rows), new SampleArgs
        {
            Logits = View(op.Logits), Tokens = View(op.Tokens), Temperature = View(op.Temperature), TopK = View(op.TopK), TopP = View(op.TopP),
            Uniform = View(op.Uniform), Rows = op.Rows, Vocab = op.Vocab,
        });

    internal override void NextTokenNll(BufferView<float> logits, BufferView<int> targets, BufferView<float> nll, int count, int vocab) =>
        Kernels.NextTokenNll(Stream, Launch(count), View(logits), View(targets), View(nll), count, vocab);

    /// <summary>Releases the accelerator and its context.</summary>
    public override void Dispose()
    {
        Accelerator.Dispose();
        _context.Dispose();
    }
}

/// <summary>One layer's pass on an ILGPU device: the slab of expert slots and the layer's expert-to-slot table.</summary>
internal sealed class DeviceExpertPass(WeightView slab, ArrayView<int> slotTable) : ExpertPass
{
    public WeightView Slab { get; } = slab;
    public ArrayView<int> SlotTable { get; } = slotTable;
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
