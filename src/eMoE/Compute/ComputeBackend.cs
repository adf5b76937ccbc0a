using eMoE.Experts;
using eMoE.Model;

namespace eMoE.Compute;

/// <summary>
/// Where the forward pass runs: an ILGPU device (CUDA, OpenCL or ILGPU's CPU accelerator) or the host
/// (SIMD code on the CPU cores). The forward pass calls the same operations on either, over buffers
/// and weights the backend allocated; one device, several devices and the host are the same code
/// with different backends. Device memory the engine allocates is counted.
/// </summary>
public abstract class ComputeBackend : IDisposable
{
    private long _allocatedBytes;
    private long _peakBytes;

    /// <summary>The kind in use (never <see cref="DeviceKind.Auto"/>).</summary>
    public abstract DeviceKind Kind { get; }

    /// <summary>The device's name (the driver's for GPUs, the processor's for the host).</summary>
    public abstract string Name { get; }

    /// <summary>Bytes of memory currently allocated by the engine on this backend (the host backend counts its own allocations, not the memory-mapped weights).</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocatedBytes);

    /// <summary>Highest <see cref="AllocatedBytes"/> seen.</summary>
    public long PeakAllocatedBytes => Interlocked.Read(ref _peakBytes);

    /// <summary>Opens a backend: auto picks CUDA, then a usable OpenCL GPU, else the host.</summary>
    /// <param name="device">Which device.</param>
    /// <param name="threads">Host threads for the host backend; null: one per core.</param>
    /// <exception cref="DeviceNotFoundException">The requested device is not present.</exception>
    public static ComputeBackend Create(DeviceSpec device, int? threads = null)
    {
        if (device.Kind == DeviceKind.Cpu) return new Host.HostBackend(threads ?? Environment.ProcessorCount);
        if (device.Kind == DeviceKind.Auto) return (ComputeBackend?)Ilgpu.IlgpuBackend.TryCreateGpu() ?? new Host.HostBackend(threads ?? Environment.ProcessorCount);
        return Ilgpu.IlgpuBackend.Create(device);
    }

    /// <summary>Whether a CUDA device or a usable OpenCL GPU is present (what <see cref="DeviceKind.Auto"/> would pick over the host).</summary>
    public static bool IsGpuPresent()
    {
        using var gpu = Ilgpu.IlgpuBackend.TryCreateGpu();
        return gpu is not null;
    }

    internal void Account(long bytes)
    {
        long now = Interlocked.Add(ref _allocatedBytes, bytes);
        long peak;
        while (now > (peak = Interlocked.Read(ref _peakBytes)) && Interlocked.CompareExchange(ref _peakBytes, now, peak) != peak) { }
    }

    /// <summary>Waits for all queued work.</summary>
    public abstract void Synchronize();

    /// <summary>Releases the backend.</summary>
    public abstract void Dispose();

    // Memory.
    internal abstract Buffer<T> Allocate<T>(long length) where T : unmanaged;
    internal abstract Weight LoadWeight(Checkpoint checkpoint, TensorInfo tensor);
    internal abstract Weight CreateWeight(ReadOnlySpan<float> values);
    internal abstract void Upload<T>(ReadOnlySpan<T> data, BufferView<T> destination) where T : unmanaged;
    internal abstract void Download<T>(BufferView<T> source, Span<T> destination) where T : unmanaged;
    internal abstract void Copy(BufferView<float> source, BufferView<float> destination);

    /// <summary>Makes the calling thread able to run operations (ILGPU binds accelerators per thread).</summary>
    internal abstract void Bind();

    /// <summary>The expert residency this backend uses: a device expert cache, or the host's experts in place.</summary>
    internal abstract IExpertResidency CreateExperts(ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options);

    // The operations of the forward pass (shapes as in ForwardPass; T tokens, H hidden, V vocabulary).

    /// <summary>x[t, :] = table[tokens[t], :] for t below <paramref name="count"/>.</summary>
    internal abstract void Embedding(BufferView<int> tokens, Weight table, BufferView<float> x, int count, int hidden);

    /// <summary>destination[r, :] = source[rows[r], :]: the rows whose logits are wanted.</summary>
    internal abstract void GatherRows(BufferView<int> rows, BufferView<float> source, BufferView<float> destination, int count, int width);

    /// <summary>RMSNorm of <paramref name="rows"/> rows of <paramref name="size"/> (in place allowed).</summary>
    internal abstract void RmsNorm(BufferView<float> input, Weight weight, BufferView<float> output, int rows, int size, float eps);

    /// <summary>y[T, N] (+)= x[T, K] . W[N, K]^T.</summary>
    internal abstract void MatMul(BufferView<float> x, Weight w, BufferView<float> y, int tokens, int n, int k, bool accumulate);

    /// <summary>RoPE on q and k at each token's position, and the step's keys and values written to their KV rows.</summary>
    internal abstract void RopeAndCache(in RopeOp op);

    /// <summary>Causal grouped-query attention of each token over its own sequence's KV blocks.</summary>
    internal abstract void Attention(in AttentionOp op);

    /// <summary>Softmax over router logits [T, E], top-k ids and weights [T, K] (ties to the lower id).</summary>
    internal abstract void SoftmaxTopK(BufferView<float> logits, BufferView<int> ids, BufferView<float> weights, int tokens, int experts, int topK, bool renormalize);

    /// <summary>Assignments grouped by expert: offsets [E + 1] and order [T * K].</summary>
    internal abstract void GroupByExpert(BufferView<int> ids, BufferView<int> offsets, BufferView<int> order, int assignments, int experts);

    /// <summary>Gate/up and down projections of every assignment whose expert <paramref name="pass"/> holds.</summary>
    internal abstract void ExpertFfn(in ExpertOp op, ExpertPass pass);

    /// <summary>residual[t] += the token's k expert outputs, weighted, in rank order.</summary>
    internal abstract void ExpertCombine(in ExpertOp op);

    /// <summary>One token per row, each row with its own settings and draw.</summary>
    internal abstract void Sample(in SampleOp op);

    /// <summary>nll[r] = logsumexp(logits[r]) - logits[r][targets[r]].</summary>
    internal abstract void NextTokenNll(BufferView<float> logits, BufferView<int> targets, BufferView<float> nll, int count, int vocab);
}

/// <summary>Memory of one backend, in elements of <typeparamref name="T"/>; counted by its backend.</summary>
internal abstract class Buffer<T> : IDisposable where T : unmanaged
{
    protected Buffer(long length) => Length = length;

    /// <summary>Elements.</summary>
    public long Length { get; }

    /// <summary>The whole buffer.</summary>
    public BufferView<T> View => new(this, 0, Length);

    /// <summary>Elements [offset, offset + length).</summary>
    public BufferView<T> Slice(long offset, long length) => View.Slice(offset, length);

    public abstract void Dispose();
}

/// <summary>A range of a buffer.</summary>
internal readonly record struct BufferView<T>(Buffer<T> Buffer, long Offset, long Length) where T : unmanaged
{
    /// <summary>Elements [offset, offset + length) of this view.</summary>
    public BufferView<T> Slice(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, {offset + length}) is outside a view of {Length} elements");
        return new BufferView<T>(Buffer, Offset + offset, length);
    }
}

/// <summary>A weight tensor in its checkpoint dtype, where its backend reads it.</summary>
internal abstract class Weight : IDisposable
{
    protected Weight(TensorDType dtype, long elements)
    {
        DType = dtype;
        Elements = elements;
    }

    public TensorDType DType { get; }
    public long Elements { get; }

    public abstract void Dispose();
}

/// <summary>The experts one pass of one layer computes, as its backend reads them (opaque to the forward pass).</summary>
internal abstract class ExpertPass;

/// <summary>Arguments of <see cref="ComputeBackend.RopeAndCache"/>.</summary>
internal struct RopeOp
{
    public BufferView<float> Q;         // [T, heads * D], rotated in place
    public BufferView<float> K;         // [T, kvHeads * D], rotated in place, then stored
    public BufferView<float> V;         // [T, kvHeads * D], stored
    public BufferView<float> KCache;    // this layer's key pool [rows, kvHeads * D]
    public BufferView<float> VCache;    // this layer's value pool [rows, kvHeads * D]
    public BufferView<int> Positions;   // [T] each token's position in its sequence
    public BufferView<int> CacheRows;   // [T] the pool row each token writes
    public BufferView<float> Cos;       // [maxSeq, D / 2]
    public BufferView<float> Sin;       // [maxSeq, D / 2]
    public int Tokens, Heads, KvHeads, HeadDim;
}

/// <summary>Arguments of <see cref="ComputeBackend.Attention"/>.</summary>
internal struct AttentionOp
{
    public BufferView<float> Q;         // [T, heads * D]
    public BufferView<float> KCache;    // this layer's key pool [blocks * blockSize, kvHeads * D]
    public BufferView<float> VCache;    // this layer's value pool
    public BufferView<int> Positions;   // [T] token t attends positions 0..Positions[t] of its sequence
    public BufferView<int> SequenceOf;  // [T] the block-table row of each token's sequence
    public BufferView<int> BlockTables; // [sequences, MaxBlocks]
    public BufferView<float> Scores;    // scratch [T, heads, MaxSeq]
    public BufferView<float> Output;    // [T, heads * D]
    public int Tokens, Heads, KvHeads, HeadDim, MaxSeq, BlockSize, MaxBlocks;
}

/// <summary>Arguments of <see cref="ComputeBackend.ExpertFfn"/> and <see cref="ComputeBackend.ExpertCombine"/>.</summary>
internal struct ExpertOp
{
    public BufferView<float> X;             // [T, H] normalised hidden states
    public BufferView<int> ExpertIds;       // [T * K]
    public BufferView<float> ExpertWeights; // [T * K]
    public BufferView<int> Order;           // [T * K] assignments grouped by expert
    public BufferView<int> Offsets;         // [E + 1] where each expert's assignments start in Order
    public BufferView<float> Hidden;        // [T * K, I]
    public BufferView<float> Output;        // [T * K, H]
    public BufferView<float> Residual;      // [T, H]
    public int Tokens, TopK, HiddenSize, Intermediate, Experts;
}

/// <summary>Arguments of <see cref="ComputeBackend.Sample"/>.</summary>
internal struct SampleOp
{
    public BufferView<float> Logits;        // [R, V]
    public BufferView<int> Tokens;          // [R] out
    public BufferView<float> Temperature;   // [R]
    public BufferView<int> TopK;            // [R]
    public BufferView<float> TopP;          // [R]
    public BufferView<float> Uniform;       // [R]
    public int Rows, Vocab;
}
