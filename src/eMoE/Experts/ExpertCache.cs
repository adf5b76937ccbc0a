using System.Collections.Concurrent;
using System.Diagnostics;
using eMoE.Compute;
using eMoE.Kernels;
using eMoE.Model;
using ILGPU;
using ILGPU.Runtime;

namespace eMoE.Experts;

/// <summary>How the device expert cache is set up.</summary>
public sealed record ExpertCacheOptions
{
    /// <summary>Device memory for expert weights; default: every expert resident.</summary>
    public ExpertBudget Budget { get; init; } = ExpertBudget.All;

    /// <summary>Which expert to evict when a slot is needed.</summary>
    public EvictionPolicyKind Policy { get; init; } = EvictionPolicyKind.LifoInactiveFirst;

    /// <summary>What to do when a token's expert is not on the device.</summary>
    public MissMode OnMiss { get; init; } = MissMode.Load;

    /// <summary>
    /// Reroute mode only: an absent expert whose (top-k normalised) router weight for the token is
    /// above this is loaded, a stall, instead of rerouted, so only the tokens' minor experts are
    /// replaced. 0 loads every absent expert (load mode's output); null or 1: eMoE's reroute-everything.
    /// </summary>
    public float? RerouteMaxWeight { get; init; }

    /// <summary>
    /// Pre-gated lookahead: during layer L, apply layer L+1's router to layer L's MoE input and
    /// prefetch the experts it picks (training-free Pre-gated MoE).
    /// </summary>
    public bool Pregate { get; init; }

    /// <summary>
    /// Experts per token the pre-gate prefetches for the next layer (its top-w by the next router);
    /// null: the model's top-k. Wider hints cover more of the next layer's experts for more copies.
    /// </summary>
    public int? PregateWidth { get; init; }

    /// <summary>
    /// Fitted pre-gates (<see cref="Prediction.PregateFitter"/>) used by <see cref="Pregate"/> in place of
    /// the next layer's own router; null: the training-free pre-gate.
    /// </summary>
    public Prediction.FittedPregate? FittedPregate { get; init; }
}

/// <summary>What happens when a token is routed to an expert that is not resident.</summary>
public enum MissMode
{
    /// <summary>Copy the expert to the device and wait for it: output identical to all-resident.</summary>
    Load,
    /// <summary>
    /// Send the token to its highest-ranked resident expert instead, keeping the total router weight
    /// (eMoE's mode: no stall, slightly different output). The absent expert is then fetched in the
    /// background (never evicting a predicted one), so later tokens may find it. Loads on demand
    /// only when a layer has fewer than k resident experts.
    /// </summary>
    Reroute,
}

/// <summary>
/// The residency manager: a device expert cache of fixed slots under a byte budget, filled from
/// the page-locked <see cref="HostExpertStore"/>. The forward pass asks it for a layer's experts
/// and gets them resident (hit), waits for an in-flight copy (late prefetch) or has them copied
/// (miss). Copies run on their own stream on a worker thread, overlapping compute; prefetch hints
/// start copies early. An expert the current layer needs is never evicted.
/// </summary>
internal sealed class ExpertCache : IDisposable
{
    private readonly ComputeDevice _device;
    private readonly ModelConfig _c;
    private readonly HostExpertStore _host;
    private readonly ExpertSlab _slab;
    private readonly ResidencyBook _book;
    private readonly object _lock = new();
    private readonly Dictionary<ExpertKey, ManualResetEventSlim> _inFlight = [];
    private readonly BlockingCollection<(ExpertKey Key, int Slot, ManualResetEventSlim Done)> _copies = new();
    private readonly Thread _copier;
    private readonly int[] _table;
    private readonly Dictionary<int, HashSet<int>> _lookahead = [];
    private readonly List<ExpertKey> _rerouteFetches = [];
    private readonly string _policyName;
    private double _predictedSetWaitSeconds;
    private Exception? _copyFailure;

    /// <summary>Expert slots on the device.</summary>
    public int Slots => _book.Capacity;

    /// <summary>What a miss does: load the expert or reroute the token.</summary>
    public MissMode OnMiss { get; }

    /// <summary>In reroute mode, absent experts weighted above this are loaded instead (1: none are).</summary>
    public float RerouteMaxWeight { get; }

    /// <summary>Whether the forward pass runs the pre-gate lookahead.</summary>
    public bool Pregate { get; }

    /// <summary>Experts per token the pre-gate hints.</summary>
    public int PregateWidth { get; }

    /// <summary>The fitted pre-gates, or null for the training-free one.</summary>
    public Prediction.FittedPregate? FittedPregate { get; }

    /// <summary>All experts of the model.</summary>
    public int TotalExperts => _c.NumLayers * _c.NumExperts;

    /// <summary>Bytes of one expert.</summary>
    public long ExpertBytes => _host.ExpertBytes;

    /// <summary>Bytes copied to fill an all-resident cache at load.</summary>
    public long PreloadBytes { get; }

    /// <summary>The slab the expert kernels read.</summary>
    public WeightView Weights => _slab.Weights;

    /// <summary>Layer <paramref name="layer"/>'s expert-to-slot map on the device, as the kernels read it.</summary>
    public ArrayView<int> SlotTable(int layer) => _slab.SlotTable(layer);

    public ExpertCache(ComputeDevice device, ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options)
    {
        _device = device;
        _c = config;
        _policyName = options.Policy.ToString();
        OnMiss = options.OnMiss;
        if (options.RerouteMaxWeight is float limit && (options.OnMiss != MissMode.Reroute || !(limit >= 0 && limit <= 1)))
            throw new ArgumentException($"the reroute weight limit applies to reroute mode and must be between 0 and 1, got {limit} with {options.OnMiss}");
        RerouteMaxWeight = options.RerouteMaxWeight ?? 1;
        Pregate = options.Pregate;
        PregateWidth = options.PregateWidth ?? config.TopK;
        FittedPregate = options.FittedPregate;
        FittedPregate?.CheckFits(config);
        if (PregateWidth < 1 || PregateWidth > config.NumExperts)
            throw new ArgumentException($"the pre-gate width must be between 1 and {config.NumExperts} experts per token, got {PregateWidth}");
        _host = new HostExpertStore(device, config, checkpoint);
        try
        {
            int slots = options.Budget.SlotCount(_host.ExpertBytes, TotalExperts, config.TopK);
            _book = new ResidencyBook(slots, config.NumLayers, EvictionPolicy.Create(options.Policy));
            _slab = new ExpertSlab(device, config, _host.DType, slots);
            _table = new int[config.NumExperts];
            if (slots == TotalExperts)
            {
                // Everything fits: load it all now, so every request hits.
                _book.PreloadAll(config.NumExperts, (key, slot) => _slab.FillAsync(slot, _host.Pointer(key), device.Accelerator.DefaultStream));
                PreloadBytes = _host.ExpertBytes * TotalExperts;
                device.Synchronize();
            }
        }
        catch
        {
            _host.Dispose();
            _slab?.Dispose();
            throw;
        }
        _copier = new Thread(CopyLoop) { IsBackground = true, Name = "emoe-expert-copies" };
        _copier.Start();
    }

    /// <summary>A new forward step begins (for the inactive-first policy's notion of the current batch).</summary>
    public void BeginStep()
    {
        lock (_lock) _book.BeginStep();
    }

    /// <summary>
    /// Runs one layer's experts: for each pass (distinct experts in id order, at most one cache
    /// full per pass) makes them resident, writes the layer's slot table and calls
    /// <paramref name="runPass"/>. The compute stream must be idle on entry (the caller has just
    /// read the routing back).
    /// </summary>
    public void RunLayer(int layer, ReadOnlySpan<int> expertIds, AcceleratorStream compute, Action runPass, Action? afterFirstPin = null)
    {
        var passes = ResidencyBook.Passes(expertIds, Slots);
        lock (_lock)
        {
            if (_lookahead.Remove(layer, out var predicted))
            {
                var counters = _book.Layers[layer];
                foreach (var pass in passes)
                {
                    counters.LookaheadActual += pass.Length;
                    counters.LookaheadCovered += pass.Count(predicted.Contains);
                }
            }
        }
        for (int p = 0; p < passes.Count; p++)
        {
            // The previous pass's kernels must finish before its slots may be reused.
            if (p > 0) compute.Synchronize();
            var waits = new List<(ExpertKey Key, ManualResetEventSlim Done)>();
            lock (_lock)
            {
                ThrowIfCopyFailed();
                _book.UnpinAll();
                Array.Fill(_table, -1);
                foreach (int e in passes[p])
                {
                    var key = new ExpertKey(layer, e);
                    _book.Layers[layer].StallSeconds += WaitForRoom(key);
                    var outcome = _book.Request(key, out int slot, out _);
                    if (outcome == RequestOutcome.Miss) waits.Add((key, StartCopy(key, slot)));
                    else if (outcome == RequestOutcome.LatePrefetch) waits.Add((key, _inFlight[key]));
                    _table[e] = slot;
                }
            }
            if (waits.Count > 0)
            {
                long start = Stopwatch.GetTimestamp();
                foreach (var (_, done) in waits) done.Wait();
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                lock (_lock)
                {
                    ThrowIfCopyFailed();
                    _book.Layers[layer].StallSeconds += seconds;
                }
            }
            _slab.SetLayerTable(layer, _table);
            // Hints issued now cannot evict this layer's experts: they are pinned.
            if (p == 0)
            {
                afterFirstPin?.Invoke();
                if (OnMiss == MissMode.Reroute) FetchRerouted();
            }
            runPass();
        }
    }

    /// <summary>
    /// Holding the lock: while <paramref name="key"/> cannot be placed because every slot it could
    /// take is still being filled by a prefetch, waits (releasing the lock) for copies to land.
    /// Returns the seconds waited.
    /// </summary>
    private double WaitForRoom(ExpertKey key)
    {
        if (_book.CanPlace(key)) return 0;
        long start = Stopwatch.GetTimestamp();
        while (!_book.CanPlace(key) && _inFlight.Count > 0)
        {
            Monitor.Wait(_lock); // CopyLoop pulses as each copy lands
            ThrowIfCopyFailed();
        }
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    /// <summary>
    /// Reroutes in place every assignment whose expert is not resident and ready (and whose weight is
    /// at most <see cref="RerouteMaxWeight"/>; heavier ones stay, to be loaded) to the token's
    /// highest-ranked resident expert that it does not already use, scaling the new weights so the
    /// token's total router weight is unchanged. Router probabilities are [T, E]. Returns whether
    /// anything changed.
    /// </summary>
    public bool Reroute(int layer, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK)
    {
        int experts = _c.NumExperts;
        bool changed = false;
        lock (_lock)
        {
            Span<bool> ready = stackalloc bool[experts];
            int readyCount = 0;
            for (int e = 0; e < experts; e++)
            {
                var key = new ExpertKey(layer, e);
                ready[e] = _book.IsResident(key) && !_inFlight.ContainsKey(key);
                if (ready[e]) readyCount++;
            }
            if (readyCount < topK) return false; // not enough experts to choose from: load instead
            int tokens = ids.Length / topK;
            for (int t = 0; t < tokens; t++)
            {
                var row = probabilities.Slice(t * experts, experts);
                var tokenIds = ids.Slice(t * topK, topK);
                var tokenWeights = weights.Slice(t * topK, topK);
                float before = 0, after = 0;
                bool tokenChanged = false;
                for (int j = 0; j < topK; j++)
                {
                    before += tokenWeights[j];
                    if (ready[tokenIds[j]] || tokenWeights[j] > RerouteMaxWeight) continue;
                    var missing = new ExpertKey(layer, tokenIds[j]);
                    if (!_rerouteFetches.Contains(missing)) _rerouteFetches.Add(missing);
                    tokenIds[j] = BestReady(row, ready, tokenIds);
                    tokenChanged = true;
                    _book.Layers[layer].Rerouted++;
                }
                if (!tokenChanged) continue;
                changed = true;
                for (int j = 0; j < topK; j++) after += row[tokenIds[j]];
                for (int j = 0; j < topK; j++) tokenWeights[j] = row[tokenIds[j]] * before / after;
            }
        }
        return changed;
    }

    /// <summary>Starts background copies of the experts the last reroute found absent (after the layer's experts are pinned).</summary>
    private void FetchRerouted()
    {
        List<ExpertKey> fetch;
        lock (_lock)
        {
            if (_rerouteFetches.Count == 0) return;
            fetch = [.. _rerouteFetches];
            _rerouteFetches.Clear();
        }
        Prefetch(fetch);
    }

    private static int BestReady(ReadOnlySpan<float> probabilities, ReadOnlySpan<bool> ready, ReadOnlySpan<int> taken)
    {
        int best = -1;
        for (int e = 0; e < probabilities.Length; e++)
        {
            if (!ready[e] || taken.Contains(e)) continue;
            if (best < 0 || probabilities[e] > probabilities[best]) best = e;
        }
        return best;
    }

    /// <summary>
    /// Pre-gate hint for <paramref name="layer"/>: prefetch its predicted experts and remember them,
    /// so that the layer's real routing can score the lookahead.
    /// </summary>
    public void Lookahead(int layer, ReadOnlySpan<int> predictedIds)
    {
        var predicted = new HashSet<int>();
        foreach (int e in predictedIds) predicted.Add(e);
        lock (_lock) _lookahead[layer] = predicted;
        Prefetch(predicted.Select(e => new ExpertKey(layer, e)));
    }

    /// <summary>
    /// The experts a predictor chose for the coming prompt: with the <see cref="EvictionPolicyKind.Predicted"/>
    /// policy they are spared by eviction; in any case they are prefetched. Called between requests
    /// or steps, with the device idle, so the last layer's pins can be released. With
    /// <paramref name="waitForCopies"/> it returns once they have landed (time counted as
    /// <see cref="ResidencyStats.PredictedSetWaitSeconds"/>): reroute mode routes only to landed experts.
    /// </summary>
    public void SetPredictedSet(IReadOnlyCollection<ExpertKey> predicted, bool waitForCopies = false)
    {
        lock (_lock) _book.SetPredicted(predicted);
        Prefetch(predicted);
        if (!waitForCopies) return;
        long start = Stopwatch.GetTimestamp();
        WaitForPendingCopies();
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        lock (_lock) _predictedSetWaitSeconds += seconds;
    }

    /// <summary>Hint: start copying these experts now if they are absent and a slot can be freed.</summary>
    public void Prefetch(IEnumerable<ExpertKey> keys)
    {
        lock (_lock)
        {
            foreach (var key in keys)
            {
                if (_book.TryPrefetch(key, out int slot, out _)) StartCopy(key, slot);
            }
        }
    }

    /// <summary>Blocks until every queued copy has landed.</summary>
    public void WaitForPendingCopies()
    {
        List<ManualResetEventSlim> pending;
        lock (_lock) pending = [.. _inFlight.Values];
        foreach (var done in pending) done.Wait();
    }

    private ManualResetEventSlim StartCopy(ExpertKey key, int slot)
    {
        var done = new ManualResetEventSlim(false);
        _inFlight[key] = done;
        _book.Layers[key.Layer].BytesCopied += _host.ExpertBytes;
        _copies.Add((key, slot, done));
        return done;
    }

    private void CopyLoop()
    {
        _device.Accelerator.Bind();
        using var stream = _device.Accelerator.CreateStream();
        foreach (var (key, slot, done) in _copies.GetConsumingEnumerable())
        {
            try
            {
                _slab.FillAsync(slot, _host.Pointer(key), stream);
                stream.Synchronize();
            }
            catch (Exception e)
            {
                lock (_lock) _copyFailure ??= e;
            }
            lock (_lock)
            {
                _book.Loaded(key);
                _inFlight.Remove(key);
                Monitor.PulseAll(_lock);
            }
            done.Set();
        }
    }

    private void ThrowIfCopyFailed()
    {
        if (_copyFailure is not null) throw new InvalidOperationException("copying an expert to the device failed", _copyFailure);
    }

    /// <summary>A consistent snapshot of the counters.</summary>
    public ResidencyStats Snapshot()
    {
        lock (_lock)
        {
            var layers = _book.Layers.Select(l => { var copy = new LayerCounters(); copy.Add(l); return copy; }).ToList();
            var overall = new LayerCounters();
            foreach (var l in layers) overall.Add(l);
            return new ResidencyStats
            {
                Policy = _policyName,
                Slots = Slots,
                TotalExperts = TotalExperts,
                ExpertBytes = ExpertBytes,
                SlotBytes = _slab.SlotBytes * Slots,
                ResidentExpertBytes = _book.ResidentCount * ExpertBytes,
                PreloadBytes = PreloadBytes,
                PeakDeviceBytes = _device.PeakAllocatedBytes,
                PredictedSetWaitSeconds = _predictedSetWaitSeconds,
                Overall = overall,
                Layers = layers,
            };
        }
    }

    public void Dispose()
    {
        _copies.CompleteAdding();
        _copier.Join();
        _copies.Dispose();
        _slab.Dispose();
        _host.Dispose();
    }
}
