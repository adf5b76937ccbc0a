using System.Diagnostics;
using eMoE.Compute;
using eMoE.Compute.Host;
using eMoE.Compute.Ilgpu;
using eMoE.Model;

namespace eMoE.Experts;

/// <summary>
/// The residency manager: decides which experts occupy the device's fixed slots under a byte
/// budget. The forward pass asks it once per layer for the experts of the whole batch
/// (<see cref="Passes"/>) and gets them resident (hit), waits for an in-flight copy (late
/// prefetch) or has them copied (miss). It decides; the <see cref="ResidencyBook"/> keeps the
/// books; the <see cref="ExpertCopier"/> moves bytes; <see cref="Rerouting"/> rewrites routing in
/// reroute mode. An expert the current pass needs is never evicted.
/// </summary>
internal sealed class ExpertCache : IExpertResidency
{
    private readonly IlgpuBackend _device;
    private readonly ModelConfig _c;
    private readonly HostExpertStore _host;
    private readonly ExpertSlab _slab;
    private readonly ResidencyBook _book;
    private readonly ExpertCopier _copier;
    private readonly ResolvedExpertOptions _options;
    private readonly object _lock = new();
    private readonly int[] _table;
    private readonly Dictionary<int, HashSet<int>> _lookahead = [];
    private readonly List<ExpertKey> _rerouteFetches = [];
    private readonly List<ExpertKey> _landed = [];
    private readonly DeviceExpertPass[] _passes;              // [L]: what the expert kernels read for each layer
    private readonly HostExpertRunner? _runner;               // hybrid execution: runs experts on the host
    private readonly HybridHostPass[] _hostPasses = [];       // [L]: each layer's experts in the host store, and which run there now
    private HostCost _hostCost;                               // host compute cost (hybrid auto): measured at load, rescaled by every host pass
    private readonly double? _calibratedLink;                 // bytes/s of one expert copy timed at load (hybrid auto)
    private readonly int _deviceExperts;                      // experts of the layers that use the device
    private double _predictedSetWaitSeconds;

    /// <summary>Expert slots on the device.</summary>
    public int Slots => _book.Capacity;

    /// <summary>What a miss does: load the expert or reroute the token.</summary>
    public MissMode OnMiss => _options.OnMiss;

    /// <summary>Whether the forward pass runs the pre-gate lookahead.</summary>
    public bool Pregate => _options.Pregate;

    /// <summary>Experts per token the pre-gate hints.</summary>
    public int PregateWidth => _options.PregateWidth;

    /// <summary>The fitted pre-gates, or null for the training-free one (or no pre-gate).</summary>
    public Prediction.FittedPregate? FittedPregate => _options.FittedPregate;

    /// <summary>All experts of the model.</summary>
    public int TotalExperts => _c.NumLayers * _c.NumExperts;

    /// <summary>Bytes of one expert.</summary>
    public long ExpertBytes => _host.ExpertBytes;

    /// <summary>Bytes copied to fill an all-resident cache at load.</summary>
    public long PreloadBytes { get; }

    /// <summary>Measured host-to-device copy rate in bytes per second, or null before the first copy.</summary>
    public double? CopyBytesPerSecond => _copier.BytesPerSecond;

    /// <param name="device">The device whose slots it manages.</param>
    /// <param name="config">The model.</param>
    /// <param name="checkpoint">Where the experts' weights are read.</param>
    /// <param name="options">Budget, policy and execution; the budget is this device's.</param>
    /// <param name="owns">
    /// Expert parallelism: the experts this device serves (the placement's share); null: every
    /// expert. The cache holds, copies and counts only these; the forward pass never asks it for others.
    /// </param>
    public ExpertCache(IlgpuBackend device, ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options, Func<ExpertKey, bool>? owns = null)
    {
        _device = device;
        _c = config;
        _options = options.Resolve(config);
        _host = new HostExpertStore(device, config, checkpoint, owns);
        try
        {
            // The first CpuMoeLayers layers never use the device: their experts take no slots; nor do other devices' experts.
            bool OnThisDevice(ExpertKey key) => key.Layer >= _options.CpuMoeLayers && (owns is null || owns(key));
            _deviceExperts = Enumerable.Range(0, TotalExperts).Count(i => OnThisDevice(new ExpertKey(i / config.NumExperts, i % config.NumExperts)));
            int slots = _deviceExperts == 0 ? config.TopK : Math.Min(_deviceExperts, _options.Budget.SlotCount(_host.ExpertBytes, TotalExperts, config.TopK));
            _book = new ResidencyBook(slots, config.NumLayers, EvictionPolicy.Create(_options.Policy));
            _slab = new ExpertSlab(device, config, _host.DType, slots);
            _table = new int[config.NumExperts];
            if (slots == _deviceExperts)
            {
                // Everything the device runs fits: load it all now, so every request hits.
                _book.PreloadAll(config.NumExperts, (key, slot) => _slab.FillAsync(slot, _host.Pointer(key), device.Accelerator.DefaultStream),
                    OnThisDevice);
                PreloadBytes = _host.ExpertBytes * _deviceExperts;
                device.Synchronize();
            }
            if (_options.Hybrid)
            {
                _runner = new HostExpertRunner(Environment.ProcessorCount, config.NumExperts, config.HiddenSize, config.ExpertIntermediateSize);
                _hostPasses = [.. Enumerable.Range(0, config.NumLayers).Select(l => new HybridHostPass(HostPassOf(l), _runner))];
                if (_options.Execution == ExpertExecution.Auto)
                {
                    _hostCost = HostCost.Measure(device, _runner, _hostPasses[Math.Min(config.NumLayers - 1, _options.CpuMoeLayers)].Experts);
                    if (_options.LinkBytesPerSecond is null && slots < _deviceExperts) _calibratedLink = TimeOneCopy(device);
                }
            }
        }
        catch
        {
            _runner?.Dispose();
            _host.Dispose();
            _slab?.Dispose();
            throw;
        }
        _copier = new ExpertCopier(device, _host, _slab);
        _passes = [.. Enumerable.Range(0, config.NumLayers).Select(l => new DeviceExpertPass(_slab.Weights, _slab.SlotTable(l)))];
    }

    /// <summary>A new forward step begins (for the inactive-first policy's notion of the current batch).</summary>
    public void BeginStep()
    {
        lock (_lock) _book.BeginStep();
    }

    /// <summary>
    /// Makes one layer's experts resident for the whole batch, in passes: the distinct experts of
    /// <paramref name="expertIds"/> in id order, at most one cache full per pass. Each step of the
    /// enumeration pins the next pass's experts (waiting for their copies), writes the layer's slot
    /// table and yields the layer's pass (slab and slot table); the caller then queues that pass's
    /// expert kernels. Before the next pass the device is drained, since its slots may be reused. After the first pass is pinned, the pre-gate's picks for the next layer
    /// (<paramref name="lookahead"/>, empty for none) and the experts rerouting found absent are
    /// prefetched: they cannot evict what this layer needs. The device must be idle on entry (the
    /// caller has just read the routing back).
    /// </summary>
    public IEnumerable<ExpertPass> Passes(int layer, ReadOnlyMemory<int> expertIds, ReadOnlyMemory<int> lookahead)
    {
        var onHost = HostExpertsOf(layer, expertIds.Span);
        int[] deviceIds = onHost.Count == 0 ? expertIds.ToArray() : [.. expertIds.ToArray().Where(e => !onHost.ContainsKey(e))];
        var passes = ResidencyBook.Passes(deviceIds, Slots);
        ScoreLookahead(layer, passes, onHost.Keys);
        for (int p = 0; p < passes.Count; p++)
        {
            // The previous pass's kernels must finish before its slots may be reused.
            if (p > 0) _device.Synchronize();
            Pin(layer, passes[p], first: p == 0);
            _slab.SetLayerTable(layer, _table);
            if (p == 0) AfterFirstPin(layer, lookahead);
            yield return _passes[layer];
        }
        if (passes.Count == 0) AfterFirstPin(layer, lookahead);
        if (onHost.Count == 0) yield break;

        var host = _hostPasses[layer];
        Array.Fill(host.Experts.Present, false);
        foreach (int e in onHost.Keys) host.Experts.Present[e] = true;
        lock (_lock)
        {
            var counters = _book.Layers[layer];
            counters.HostExperts += onHost.Count;
            counters.HostAssignments += onHost.Values.Sum();
            counters.BytesNotCopied += onHost.Count * ExpertBytes;
        }
        yield return host;
        lock (_lock)
        {
            _book.Layers[layer].HostSeconds += _runner!.LastSeconds;
            _hostCost = _hostCost.Observe(_runner.LastSeconds, onHost.Count, onHost.Values.Sum());
        }
    }

    /// <summary>After the layer's first pass is pinned (or when it has none): prefetch the pre-gate's picks and the experts rerouting found absent.</summary>
    private void AfterFirstPin(int layer, ReadOnlyMemory<int> lookahead)
    {
        if (!lookahead.IsEmpty) Lookahead(layer + 1, lookahead.Span);
        FetchRerouted();
    }

    /// <summary>
    /// Hybrid execution: the distinct experts of the step that run on the host, with their
    /// assignment counts. All of a host-only layer's; otherwise the absent ones (not resident, not
    /// in flight) that <see cref="ExpertExecution.Host"/> sends there, or that
    /// <see cref="ExpertExecution.Auto"/> finds cheaper to compute than to copy.
    /// </summary>
    private Dictionary<int, int> HostExpertsOf(int layer, ReadOnlySpan<int> expertIds)
    {
        var onHost = new Dictionary<int, int>();
        if (!_options.Hybrid) return onHost;
        var counts = new Dictionary<int, int>();
        foreach (int e in expertIds) counts[e] = counts.GetValueOrDefault(e) + 1;
        if (layer < _options.CpuMoeLayers) return counts;
        if (_options.Execution == ExpertExecution.Device) return onHost;
        lock (_lock)
        {
            CollectLanded();
            var layerCounters = _book.Layers[layer];
            foreach (var (e, n) in counts)
            {
                var key = new ExpertKey(layer, e);
                if (_book.IsResident(key)) continue; // resident or being copied: it runs on the device
                if (_options.Execution == ExpertExecution.Host || HostIsCheaper(n, layerCounters)) onHost[e] = n;
            }
        }
        return onHost;
    }

    /// <summary>
    /// Auto: whether computing an absent expert's <paramref name="assignments"/> on the host costs
    /// less than copying it, counting that a copied expert serves on average as many requests as
    /// the layer's copied experts have so far (1 + hits per miss).
    /// </summary>
    private bool HostIsCheaper(int assignments, LayerCounters layer)
    {
        double link = _options.LinkBytesPerSecond ?? _copier.BytesPerSecond ?? _calibratedLink ?? double.PositiveInfinity;
        double copy = ExpertBytes / link;
        double activations = 2.0 * assignments * _c.HiddenSize * sizeof(float) / link; // x rows down, output rows up
        double host = _hostCost.Seconds(assignments) + activations;
        double uses = 1 + (double)layer.Hits / Math.Max(1, layer.Misses);
        return host * uses < copy;
    }

    /// <summary>Layer <paramref name="layer"/>'s experts as the host reads them: gate, up and down of each in the page-locked store.</summary>
    private unsafe HostExpertPass HostPassOf(int layer)
    {
        long block = (long)_c.ExpertIntermediateSize * _c.HiddenSize;
        var gate = new HostWeight[_c.NumExperts];
        var up = new HostWeight[_c.NumExperts];
        var down = new HostWeight[_c.NumExperts];
        for (int e = 0; e < _c.NumExperts; e++)
        {
            var all = new HostWeight((void*)_host.Pointer(new ExpertKey(layer, e)), 3 * block, _host.DType);
            (gate[e], up[e], down[e]) = (all.Slice(0, block), all.Slice(block, block), all.Slice(2 * block, block));
        }
        return new HostExpertPass(gate, up, down, new bool[_c.NumExperts]);
    }

    /// <summary>Bytes per second of one expert copied into a free slot (before anything is resident there), for auto's first decisions.</summary>
    private double TimeOneCopy(IlgpuBackend device)
    {
        long start = Stopwatch.GetTimestamp();
        _slab.FillAsync(0, _host.Pointer(new ExpertKey(_options.CpuMoeLayers, 0)), device.Accelerator.DefaultStream);
        device.Synchronize();
        return ExpertBytes / Math.Max(1e-9, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }

    /// <summary>Pins one pass's experts: resident ones are hits, the rest are copied or waited for; fills <see cref="_table"/>.</summary>
    private void Pin(int layer, int[] experts, bool first)
    {
        var waits = new List<ManualResetEventSlim>();
        lock (_lock)
        {
            _copier.ThrowIfFailed();
            CollectLanded();
            _book.UnpinAll();
            Array.Fill(_table, -1);
        }
        foreach (int e in experts)
        {
            var key = new ExpertKey(layer, e);
            double waited = 0;
            while (true)
            {
                lock (_lock)
                {
                    CollectLanded();
                    // Every slot it could take may still be filling from prefetches: wait for one to land.
                    if (_book.CanPlace(key) || _copier.InFlightCount == 0)
                    {
                        _book.Layers[layer].StallSeconds += waited;
                        var outcome = _book.Request(key, out int slot, out _);
                        if (outcome == RequestOutcome.Miss) waits.Add(StartCopy(key, slot));
                        else if (outcome == RequestOutcome.LatePrefetch && _copier.InFlight(key) is { } done) waits.Add(done);
                        _table[e] = slot;
                        break;
                    }
                }
                waited += _copier.WaitForLanding();
            }
        }
        if (waits.Count == 0) return;
        long start = Stopwatch.GetTimestamp();
        foreach (var done in waits) done.Wait();
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        lock (_lock)
        {
            _copier.ThrowIfFailed();
            CollectLanded();
            _book.Layers[layer].StallSeconds += seconds;
        }
    }

    /// <summary>Holding the lock: marks the copies that have landed as loaded in the book.</summary>
    private void CollectLanded()
    {
        _copier.TakeLanded(_landed);
        foreach (var key in _landed) _book.Loaded(key);
        _landed.Clear();
    }

    /// <summary>Scores the pre-gate's prediction for <paramref name="layer"/>, if one was made, against the layer's real experts (device and host).</summary>
    private void ScoreLookahead(int layer, List<int[]> passes, IEnumerable<int> onHost)
    {
        lock (_lock)
        {
            if (!_lookahead.Remove(layer, out var predicted)) return;
            var counters = _book.Layers[layer];
            foreach (var experts in passes.Append([.. onHost]))
            {
                counters.LookaheadActual += experts.Length;
                counters.LookaheadCovered += experts.Count(predicted.Contains);
            }
        }
    }

    /// <summary>
    /// Reroute mode: sends every assignment of <paramref name="layer"/> whose expert is not resident
    /// and ready (see <see cref="Rerouting.Reroute"/>) to a resident one, counting it and remembering
    /// the absent expert to fetch in the background. Router probabilities are [T, E]. Returns
    /// whether anything changed.
    /// </summary>
    public bool Reroute(int layer, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK)
    {
        Span<bool> ready = stackalloc bool[_c.NumExperts];
        var missing = new List<int>();
        lock (_lock)
        {
            CollectLanded();
            for (int e = 0; e < ready.Length; e++)
            {
                var key = new ExpertKey(layer, e);
                ready[e] = _book.IsResident(key) && _copier.InFlight(key) is null;
            }
            int moved = Rerouting.Reroute(ready, ids, weights, probabilities, topK, _options.RerouteMaxWeight, missing);
            _book.Layers[layer].Rerouted += moved;
            foreach (int e in missing)
            {
                var key = new ExpertKey(layer, e);
                if (!_rerouteFetches.Contains(key)) _rerouteFetches.Add(key);
            }
            return moved > 0;
        }
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

    /// <summary>
    /// Pre-gate hint for <paramref name="layer"/>: prefetch its predicted experts and remember them,
    /// so that the layer's real routing can score the lookahead.
    /// </summary>
    private void Lookahead(int layer, ReadOnlySpan<int> predictedIds)
    {
        var predicted = new HashSet<int>();
        foreach (int e in predictedIds) predicted.Add(e);
        lock (_lock) _lookahead[layer] = predicted;
        Prefetch(predicted.Select(e => new ExpertKey(layer, e)));
    }

    /// <summary>
    /// The experts a predictor chose for what comes next: with the <see cref="EvictionPolicyKind.Predicted"/>
    /// policy they are spared by eviction; in any case they are prefetched. Called between steps,
    /// with the device idle, so the last layer's pins can be released. With
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
            CollectLanded();
            foreach (var key in keys)
            {
                if (_book.TryPrefetch(key, out int slot, out _)) StartCopy(key, slot);
            }
        }
    }

    /// <summary>Bytes of <paramref name="keys"/> that are not resident now (what making them resident would copy).</summary>
    public long AbsentBytes(IEnumerable<ExpertKey> keys)
    {
        lock (_lock) return keys.Count(k => !_book.IsResident(k)) * ExpertBytes;
    }

    /// <summary>Blocks until every queued copy has landed.</summary>
    public void WaitForPendingCopies() => _copier.WaitAll();

    /// <summary>Holding the lock: books the copy of a placed expert and queues it.</summary>
    private ManualResetEventSlim StartCopy(ExpertKey key, int slot)
    {
        _book.Layers[key.Layer].BytesCopied += _host.ExpertBytes;
        return _copier.Start(key, slot);
    }

    /// <summary>A consistent snapshot of the counters.</summary>
    public ResidencyStats Snapshot()
    {
        lock (_lock)
        {
            var (layers, overall) = _book.CopyCounters();
            return new ResidencyStats
            {
                Policy = _options.Policy.ToString(),
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
        _runner?.Dispose();
        _copier.Dispose();
        _slab.Dispose();
        _host.Dispose();
    }
}

/// <summary>
/// What computing one expert on the host costs: t(n) = fixed + n x per assignment for n of its
/// assignments (its weights are read once for all of them, so n tokens cost far less than n times
/// one). Measured at load on warm weights, then rescaled by what real host passes take (cold
/// weights, the activations' transfers, the pass's own overhead).
/// </summary>
internal readonly record struct HostCost(double FixedSeconds, double PerAssignmentSeconds, int Observed = 0)
{
    public double Seconds(int assignments) => FixedSeconds + assignments * PerAssignmentSeconds;

    /// <summary>The model after a real pass of <paramref name="experts"/> experts and <paramref name="assignments"/> assignments took <paramref name="seconds"/>.</summary>
    public HostCost Observe(double seconds, int experts, int assignments)
    {
        double predicted = experts * FixedSeconds + assignments * PerAssignmentSeconds;
        if (!(predicted > 0) || !(seconds > 0)) return this;
        // The mean of the first few ratios, then a moving average, so one slow pass (the machine busy
        // elsewhere) does not swing every later decision while the load-time guess is soon replaced.
        double alpha = Math.Max(0.2, 1.0 / (Observed + 1));
        double scale = 1 + alpha * (seconds / predicted - 1);
        return new HostCost(FixedSeconds * scale, PerAssignmentSeconds * scale, Observed + 1);
    }

    /// <summary>Times host passes of one expert of <paramref name="pass"/> for 1 and 8 tokens (medians of a few runs).</summary>
    public static HostCost Measure(IlgpuBackend device, HostExpertRunner runner, HostExpertPass pass)
    {
        double one = runner.MeasureSeconds(device, pass, tokens: 1), eight = runner.MeasureSeconds(device, pass, tokens: 8);
        double per = Math.Max(0, (eight - one) / 7);
        return new HostCost(Math.Max(0, one - per), per);
    }
}
