using eMoE.Experts;
using eMoE.Model;

namespace eMoE.Compute.Ilgpu;

/// <summary>
/// Expert parallelism: runs, for one layer of a step on the primary device, the experts that a peer
/// ILGPU device serves. The activations of the assignments routed to them go from the primary to
/// the peer through the host (no CUDA peer-to-peer copies: they need GPUs that can reach each other,
/// and only a few rows per layer cross), the peer's own expert cache runs them, and their output rows
/// come back into the primary's per-assignment output, which the primary's combine sums as it does
/// every other pass. Counts first, then blocks of exactly that size: one activation row per
/// assignment of the peer's experts (a token routed to two of them goes twice, so that the peer runs
/// plain top-1 tokens, without padding or ids of experts it does not have), one output row back per assignment.
/// </summary>
internal sealed class PeerExpertRunner(IlgpuBackend peer, ExpertCache cache, ModelConfig config) : IDisposable
{
    private float[] _x = [], _rows = [];
    private int[] _ids = [], _assignments = [], _peerIds = [];
    private DeviceBuffer<float>? _peerX, _hidden, _output;
    private DeviceBuffer<int>? _peerIdsBuffer, _order, _offsets;

    /// <summary>The peer device.</summary>
    public IlgpuBackend Device => peer;

    /// <summary>
    /// Computes the assignments of <paramref name="pass"/>'s experts for the step's
    /// <see cref="ExpertOp.Tokens"/> tokens into their rows of <paramref name="op"/>'s output on <paramref name="primary"/>.
    /// </summary>
    public void Run(IlgpuBackend primary, in ExpertOp op, PeerDevicePass pass)
    {
        int h = op.HiddenSize, assignments = op.Tokens * op.TopK;
        Grow(ref _x, (long)op.Tokens * h);
        Grow(ref _ids, assignments);
        Grow(ref _assignments, assignments);
        ExpertRows.Download(primary, op, _x.AsSpan(0, op.Tokens * h), _ids.AsSpan(0, assignments));
        int n = ExpertRows.Select(_ids.AsSpan(0, assignments), pass.Present, _assignments);
        Grow(ref _peerIds, n);
        Grow(ref _rows, (long)n * h);
        for (int i = 0; i < n; i++)
        {
            int a = _assignments[i];
            _peerIds[i] = _ids[a];
            _x.AsSpan(a / op.TopK * h, h).CopyTo(_rows.AsSpan(i * h, h));
        }

        peer.Bind();
        try
        {
            if (n > 0) Upload(n, h);
            var peerOp = new ExpertOp
            {
                X = Whole(_peerX), ExpertIds = Whole(_peerIdsBuffer), Order = Whole(_order), Offsets = Whole(_offsets),
                Hidden = Whole(_hidden), Output = Whole(_output),
                // The FFN reads neither router weights nor the residual stream: the primary's combine applies them.
                ExpertWeights = Whole(_peerX), Residual = Whole(_peerX),
                Tokens = n, TopK = 1, HiddenSize = h, Intermediate = op.Intermediate, Experts = op.Experts,
            };
            // The cache's passes are enumerated even without assignments: its first pass prefetches the pre-gate's picks.
            foreach (var devicePass in cache.Passes(pass.Layer, pass.ExpertIds, pass.Lookahead))
            {
                if (n > 0) peer.ExpertFfn(peerOp, devicePass);
            }
            if (n == 0) return;
            peer.Synchronize();
            peer.Download(_output!.Slice(0, (long)n * h), _rows.AsSpan(0, n * h));
        }
        finally
        {
            primary.Bind();
        }
        for (int i = 0; i < n; i++) primary.Upload(_rows.AsSpan(i * h, h), op.Output.Slice((long)_assignments[i] * h, h));
    }

    /// <summary>Sends the gathered activation rows and their experts to the peer and groups them by expert there.</summary>
    private void Upload(int n, int h)
    {
        Ensure(ref _peerX, (long)n * h);
        Ensure(ref _peerIdsBuffer, n);
        Ensure(ref _order, n);
        Ensure(ref _offsets, config.NumExperts + 1);
        Ensure(ref _hidden, (long)n * config.ExpertIntermediateSize);
        Ensure(ref _output, (long)n * h);
        peer.Upload(_rows.AsSpan(0, n * h), _peerX!.Slice(0, (long)n * h));
        peer.Upload(_peerIds.AsSpan(0, n), _peerIdsBuffer!.Slice(0, n));
        peer.GroupByExpert(Whole(_peerIdsBuffer), Whole(_offsets), Whole(_order), n, config.NumExperts);
    }

    private static BufferView<T> Whole<T>(Buffer<T>? buffer) where T : unmanaged => buffer is null ? default : buffer.Slice(0, buffer.Length);

    /// <summary>Host scratch that grows to the largest step seen.</summary>
    private static void Grow<T>(ref T[] array, long length)
    {
        if (array.Length < length) array = new T[Math.Max(length, 2L * array.Length)];
    }

    /// <summary>Peer scratch that grows to the largest step seen (the old buffer is freed first).</summary>
    private void Ensure<T>(ref DeviceBuffer<T>? buffer, long length) where T : unmanaged
    {
        if (buffer is not null && buffer.Length >= length) return;
        long size = Math.Max(length, 2 * (buffer?.Length ?? 0));
        buffer?.Dispose();
        buffer = peer.AllocateDevice<T>(size);
    }

    public void Dispose()
    {
        _peerX?.Dispose();
        _hidden?.Dispose();
        _output?.Dispose();
        _peerIdsBuffer?.Dispose();
        _order?.Dispose();
        _offsets?.Dispose();
    }
}

/// <summary>
/// A layer's pass on another device (expert parallelism): the experts that device serves in this
/// layer, the assignments' expert ids among them and the pre-gate's picks for its next layer. Made
/// anew for every layer of every step.
/// </summary>
internal sealed class PeerDevicePass(PeerExpertRunner runner, int layer, bool[] present, int[] expertIds, int[] lookahead) : ExpertPass
{
    public PeerExpertRunner Runner { get; } = runner;
    public int Layer { get; } = layer;

    /// <summary>[E]: whether the peer serves each expert of the layer.</summary>
    public bool[] Present { get; } = present;

    /// <summary>The step's assignments to the peer's experts, as ids (what its cache makes resident).</summary>
    public int[] ExpertIds { get; } = expertIds;

    /// <summary>The pre-gate's picks for the next layer that the peer serves.</summary>
    public int[] Lookahead { get; } = lookahead;
}
