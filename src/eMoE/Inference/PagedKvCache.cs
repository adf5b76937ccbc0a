using eMoE.Compute;
using eMoE.Model;

namespace eMoE.Inference;

/// <summary>
/// The KV cache as one pool of fixed-size blocks on the device (vLLM's paged attention): a
/// sequence takes blocks as it grows and returns them when it finishes, is cancelled or is
/// preempted, so KV memory follows the tokens held, not the context length times the batch.
/// Position p of a sequence lives in row table[p / BlockSize] * BlockSize + p % BlockSize of every
/// layer's pool. Block bookkeeping is not thread-safe: only the engine loop takes and returns blocks.
/// </summary>
internal sealed class PagedKvCache : IDisposable
{
    /// <summary>Positions per block: small enough that a sequence wastes little of its last block.</summary>
    public const int DefaultBlockSize = 16;

    private readonly ModelConfig _c;
    private readonly Buffer<float> _k;         // [L, Blocks * BlockSize, kvHeads * D]
    private readonly Buffer<float> _v;         // [L, Blocks * BlockSize, kvHeads * D]
    private readonly Stack<int> _free = new();

    /// <summary>Positions per block.</summary>
    public int BlockSize { get; }

    /// <summary>Blocks in the pool.</summary>
    public int Blocks { get; }

    /// <summary>Blocks one sequence may hold (its context length, rounded up to whole blocks).</summary>
    public int MaxBlocksPerSequence { get; }

    /// <summary>Device bytes of one block (keys and values of every layer).</summary>
    public long BlockBytes { get; }

    /// <summary>Blocks not held by any sequence.</summary>
    public int FreeBlocks => _free.Count;

    /// <summary>Blocks held now.</summary>
    public int UsedBlocks => Blocks - _free.Count;

    /// <summary>Most blocks held at once.</summary>
    public int PeakUsedBlocks { get; private set; }

    /// <summary>Device bytes of the whole pool.</summary>
    public long PoolBytes => BlockBytes * Blocks;

    /// <summary>Bytes of one block of keys and values for every layer of <paramref name="config"/>.</summary>
    public static long BytesPerBlock(ModelConfig config, int blockSize) => 2L * config.NumLayers * blockSize * config.KvDim * sizeof(float);

    /// <summary>Blocks needed to hold <paramref name="positions"/> positions.</summary>
    public int BlocksFor(int positions) => (positions + BlockSize - 1) / BlockSize;

    /// <summary>
    /// A pool of <paramref name="blocks"/> blocks for sequences of at most <paramref name="contextLength"/>
    /// positions. It must hold at least one whole sequence: a request that could never fit would wait forever.
    /// </summary>
    public PagedKvCache(ComputeBackend device, ModelConfig config, int contextLength, int blocks, int blockSize = DefaultBlockSize)
    {
        _c = config;
        BlockSize = blockSize;
        MaxBlocksPerSequence = (contextLength + blockSize - 1) / blockSize;
        BlockBytes = BytesPerBlock(config, blockSize);
        if (blocks < MaxBlocksPerSequence)
            throw new ArgumentException(
                $"KV memory of {ByteSize.Format(BlockBytes * blocks)} ({blocks} blocks of {blockSize} positions) cannot hold one sequence of the " +
                $"context length {contextLength}: at least {ByteSize.Format(BlockBytes * MaxBlocksPerSequence)} ({MaxBlocksPerSequence} blocks) is needed");
        Blocks = blocks;
        long rows = (long)blocks * blockSize;
        _k = device.Allocate<float>(config.NumLayers * rows * config.KvDim);
        try
        {
            _v = device.Allocate<float>(config.NumLayers * rows * config.KvDim);
        }
        catch
        {
            _k.Dispose();
            throw;
        }
        for (int b = blocks - 1; b >= 0; b--) _free.Push(b);
    }

    /// <summary>Layer <paramref name="layer"/>'s key and value pools [Blocks * BlockSize, kvHeads * D].</summary>
    public (BufferView<float> K, BufferView<float> V) Layer(int layer)
    {
        long size = (long)Blocks * BlockSize * _c.KvDim;
        return (_k.Slice(layer * size, size), _v.Slice(layer * size, size));
    }

    /// <summary>
    /// Grows <paramref name="table"/> until it covers <paramref name="positions"/> positions; false
    /// (and nothing taken) when the pool has too few free blocks.
    /// </summary>
    public bool TryGrow(List<int> table, int positions)
    {
        int needed = BlocksFor(positions) - table.Count;
        if (needed <= 0) return true;
        if (needed > _free.Count) return false;
        for (int i = 0; i < needed; i++) table.Add(_free.Pop());
        PeakUsedBlocks = Math.Max(PeakUsedBlocks, UsedBlocks);
        return true;
    }

    /// <summary>Returns every block of <paramref name="table"/> to the pool and empties it.</summary>
    public void Release(List<int> table)
    {
        foreach (int b in table) _free.Push(b);
        table.Clear();
    }

    /// <summary>The pool row of position <paramref name="position"/> of the sequence with block table <paramref name="table"/>.</summary>
    public int Row(List<int> table, int position) => table[position / BlockSize] * BlockSize + position % BlockSize;

    public void Dispose()
    {
        _k.Dispose();
        _v.Dispose();
    }
}
