using System.Runtime.InteropServices;
using eMoE.Experts;
using eMoE.Model;

namespace eMoE.Compute.Host;

/// <summary>
/// The host backend: every operation runs natively on the CPU cores (SIMD, rows spread over a
/// persistent worker pool), weights are read in place from the memory-mapped checkpoint in their
/// own dtype, and activations and the KV cache live in native host memory. Operations run
/// synchronously on the calling thread (which takes part in the pool), so <see cref="Synchronize"/>
/// has nothing to wait for.
/// </summary>
internal sealed unsafe class HostBackend : ComputeBackend
{
    private readonly WorkerPool _pool;

    public HostBackend(int threads)
    {
        if (threads < 1) throw new ArgumentException($"the host backend needs at least 1 thread, got {threads}");
        _pool = new WorkerPool(threads);
    }

    /// <summary>Threads the operations use (the caller's included).</summary>
    public int Threads => _pool.Threads;

    /// <inheritdoc/>
    public override DeviceKind Kind => DeviceKind.Cpu;

    /// <inheritdoc/>
    public override string Name => $"host, {Threads} thread{(Threads == 1 ? "" : "s")}, {RuntimeInformation.ProcessArchitecture}";

    internal override Buffer<T> Allocate<T>(long length) => new HostBuffer<T>(this, length);

    internal override Weight LoadWeight(Checkpoint checkpoint, TensorInfo tensor) =>
        new HostWeightTensor(new HostWeight((void*)checkpoint.Pointer(tensor), tensor.ElementCount, tensor.DType), owned: null);

    internal override Weight CreateWeight(ReadOnlySpan<float> values)
    {
        var owned = new HostBuffer<float>(this, values.Length);
        values.CopyTo(owned.Span);
        return new HostWeightTensor(new HostWeight(owned.Pointer, values.Length, TensorDType.F32), owned);
    }

    internal override void Upload<T>(ReadOnlySpan<T> data, BufferView<T> destination) => data.CopyTo(Span(destination));

    internal override void Download<T>(BufferView<T> source, Span<T> destination) => Span(source)[..destination.Length].CopyTo(destination);

    internal override void Copy(BufferView<float> source, BufferView<float> destination) => Span(source).CopyTo(Span(destination));

    /// <inheritdoc/>
    public override void Synchronize() { }

    internal override void Bind() { }

    internal override IExpertResidency CreateExperts(ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options) =>
        new InPlaceExperts(this, config, checkpoint, options);

    private static T* P<T>(BufferView<T> view) where T : unmanaged =>
        (view.Buffer as HostBuffer<T> ?? throw new ArgumentException("the buffer belongs to another backend")).Pointer + view.Offset;

    private static Span<T> Span<T>(BufferView<T> view) where T : unmanaged => new(P(view), checked((int)view.Length));

    private static HostWeight W(Weight weight) => (weight as HostWeightTensor ?? throw new ArgumentException("the weight belongs to another backend")).Data;

    internal override void Embedding(BufferView<int> tokens, Weight table, BufferView<float> x, int count, int hidden) =>
        HostKernels.Gather(_pool, P(tokens), W(table), P(x), count, hidden);

    internal override void GatherRows(BufferView<int> rows, BufferView<float> source, BufferView<float> destination, int count, int width) =>
        HostKernels.Gather(_pool, P(rows), new HostWeight(P(source), source.Length, TensorDType.F32), P(destination), count, width);

    internal override void RmsNorm(BufferView<float> input, Weight weight, BufferView<float> output, int rows, int size, float eps) =>
        HostKernels.RmsNorm(_pool, P(input), W(weight), P(output), rows, size, eps);

    internal override void MatMul(BufferView<float> x, Weight w, BufferView<float> y, int tokens, int n, int k, bool accumulate) =>
        HostKernels.MatMul(_pool, P(x), W(w), P(y), tokens, n, k, accumulate);

    internal override void RopeAndCache(in RopeOp op) =>
        HostKernels.RopeAndCache(_pool, P(op.Q), P(op.K), P(op.V), P(op.KCache), P(op.VCache), P(op.Positions), P(op.CacheRows), P(op.Cos), P(op.Sin),
            op.Tokens, op.Heads, op.KvHeads, op.HeadDim);

    internal override void Attention(in AttentionOp op) =>
        HostKernels.Attention(_pool, P(op.Q), P(op.KCache), P(op.VCache), P(op.Positions), P(op.SequenceOf), P(op.BlockTables), P(op.Output),
            op.Tokens, op.Heads, op.KvHeads, op.HeadDim, op.MaxSeq, op.BlockSize, op.MaxBlocks);

    internal override void SoftmaxTopK(BufferView<float> logits, BufferView<int> ids, BufferView<float> weights, int tokens, int experts, int topK, bool renormalize) =>
        HostKernels.SoftmaxTopK(P(logits), P(ids), P(weights), tokens, experts, topK, renormalize);

    internal override void GroupByExpert(BufferView<int> ids, BufferView<int> offsets, BufferView<int> order, int assignments, int experts) =>
        HostKernels.GroupByExpert(P(ids), P(offsets), P(order), assignments, experts);

    internal override void ExpertFfn(in ExpertOp op, ExpertPass pass)
    {
        var experts = pass as HostExpertPass ?? throw new ArgumentException("the expert pass belongs to another backend");
        HostKernels.ExpertFfn(_pool, P(op.X), P(op.ExpertIds), P(op.Order), P(op.Offsets), experts.Gate, experts.Up, experts.Down, experts.Present,
            P(op.Hidden), P(op.Output), op.Tokens, op.TopK, op.HiddenSize, op.Intermediate);
    }

    internal override void ExpertCombine(in ExpertOp op) =>
        HostKernels.ExpertCombine(_pool, P(op.ExpertWeights), P(op.Output), P(op.Residual), op.Tokens, op.TopK, op.HiddenSize);

    internal override void Sample(in SampleOp op) =>
        HostKernels.Sample(_pool, P(op.Logits), P(op.Tokens), P(op.Temperature), P(op.TopK), P(op.TopP), P(op.Uniform), op.Rows, op.Vocab);

    internal override void NextTokenNll(BufferView<float> logits, BufferView<int> targets, BufferView<float> nll, int count, int vocab) =>
        HostKernels.NextTokenNll(_pool, P(logits), P(targets), P(nll), count, vocab);

    /// <summary>Stops the worker threads.</summary>
    public override void Dispose() => _pool.Dispose();
}

/// <summary>Native host memory, 64-byte aligned, counted by its backend.</summary>
internal sealed unsafe class HostBuffer<T> : Buffer<T> where T : unmanaged
{
    private readonly ComputeBackend _backend;
    private readonly long _bytes;

    public HostBuffer(ComputeBackend backend, long length) : base(length)
    {
        _backend = backend;
        _bytes = Math.Max(1, length) * sizeof(T);
        Pointer = (T*)NativeMemory.AlignedAlloc((nuint)_bytes, 64);
        NativeMemory.Clear(Pointer, (nuint)_bytes);
        backend.Account(_bytes);
    }

    public T* Pointer { get; private set; }

    public Span<T> Span => new(Pointer, checked((int)Length));

    public override void Dispose()
    {
        if (Pointer == null) return;
        NativeMemory.AlignedFree(Pointer);
        Pointer = null;
        _backend.Account(-_bytes);
    }
}

/// <summary>A weight the host reads in place (the memory-mapped checkpoint) or from memory it owns (fitted pre-gates).</summary>
internal sealed class HostWeightTensor(HostWeight data, IDisposable? owned) : Weight(data.DType, data.Elements)
{
    public HostWeight Data { get; } = data;

    public override void Dispose() => owned?.Dispose();
}

/// <summary>One layer's experts on the host: each expert's gate [I, H], up [I, H] and down [H, I] tensors in place, and which to compute.</summary>
internal sealed class HostExpertPass(HostWeight[] gate, HostWeight[] up, HostWeight[] down, bool[] present) : ExpertPass
{
    public HostWeight[] Gate { get; } = gate;
    public HostWeight[] Up { get; } = up;
    public HostWeight[] Down { get; } = down;
    public bool[] Present { get; } = present;
}
