using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using eMoE.Model;

namespace eMoE.Experts;

/// <summary>
/// Expert parallelism over several ILGPU devices in one process: each device has its own expert
/// cache holding only the experts the <see cref="ExpertPlacement"/> gives it, under its own budget.
/// Device 0, the primary, runs everything else (attention, dense weights, routing, combine): the
/// dense part of these models is small next to the experts, and keeping it on one device avoids an
/// all-reduce of the residual stream after every layer. A layer's passes are the primary cache's
/// own passes, then one <see cref="PeerDevicePass"/> per other device that has work, which ships the
/// assignments of that device's experts there and their output rows back
/// (<see cref="PeerExpertRunner"/>). Counters are summed over the devices; each device's are kept too.
/// </summary>
internal sealed class ExpertParallelResidency : IExpertResidency
{
    private readonly ModelConfig _c;
    private readonly ExpertPlacement _placement;
    private readonly ExpertCache[] _caches;          // [device]
    private readonly PeerExpertRunner[] _runners;    // [device - 1]
    private readonly bool[][][] _present;            // [device][layer][expert]: whether the device serves the expert

    /// <summary>
    /// Opens a cache on every device (<paramref name="devices"/>[0] is the primary) for its share of
    /// <paramref name="placement"/>, under its budget of <paramref name="budgets"/>. Takes ownership of the
    /// devices after the first, which it disposes.
    /// </summary>
    /// <exception cref="ArgumentException">An option does not work with several devices, or the placement does not fit.</exception>
    public ExpertParallelResidency(IReadOnlyList<IlgpuBackend> devices, ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options,
        IReadOnlyList<ExpertBudget> budgets, ExpertPlacement placement)
    {
        var resolved = options.Resolve(config);
        // Rerouting needs every device's residency at once, and hybrid execution a host runner per device: neither is built for several devices yet.
        if (resolved.OnMiss == MissMode.Reroute) throw new ArgumentException("rerouting (--on-miss reroute) is not supported with several devices; use --on-miss load");
        if (resolved.Hybrid) throw new ArgumentException("host execution of experts (--expert-exec, --cpu-moe-layers) is not supported with several devices");
        if (budgets.Count != devices.Count) throw new ArgumentException($"{budgets.Count} expert memory budgets for {devices.Count} devices: give one, or one per device");
        placement.CheckFits(config, devices.Count);
        _c = config;
        _placement = placement;
        _present = [.. Enumerable.Range(0, devices.Count).Select(d => Enumerable.Range(0, config.NumLayers)
            .Select(l => Enumerable.Range(0, config.NumExperts).Select(e => placement.DeviceOf(l, e) == d).ToArray()).ToArray())];
        var caches = new List<ExpertCache>();
        var runners = new List<PeerExpertRunner>();
        try
        {
            for (int d = 0; d < devices.Count; d++)
            {
                int device = d;
                // Each cache allocates and preloads on its own device (CUDA binds a context per thread).
                devices[d].Bind();
                var cache = new ExpertCache(devices[d], config, checkpoint, options with { Budget = budgets[d] }, key => placement.DeviceOf(key) == device);
                caches.Add(cache);
                if (d > 0) runners.Add(new PeerExpertRunner(devices[d], cache, config));
            }
        }
        catch
        {
            foreach (var runner in runners) runner.Dispose();
            foreach (var cache in caches) cache.Dispose();
            throw;
        }
        finally
        {
            devices[0].Bind();
        }
        _caches = [.. caches];
        _runners = [.. runners];
    }

    /// <inheritdoc/>
    public MissMode OnMiss => _caches[0].OnMiss;

    /// <inheritdoc/>
    public bool Pregate => _caches[0].Pregate;

    /// <inheritdoc/>
    public int PregateWidth => _caches[0].PregateWidth;

    /// <inheritdoc/>
    public Prediction.FittedPregate? FittedPregate => _caches[0].FittedPregate;

    /// <summary>Expert slots on all devices together.</summary>
    public int Slots => _caches.Sum(c => c.Slots);

    /// <inheritdoc/>
    public int TotalExperts => _caches[0].TotalExperts;

    /// <inheritdoc/>
    public long ExpertBytes => _caches[0].ExpertBytes;

    /// <summary>The mean of the devices' measured copy rates (each device has its own link), or null when none copied.</summary>
    public double? CopyBytesPerSecond
    {
        get
        {
            var rates = _caches.Select(c => c.CopyBytesPerSecond).OfType<double>().ToList();
            return rates.Count == 0 ? null : rates.Average();
        }
    }

    /// <inheritdoc/>
    public void BeginStep()
    {
        foreach (var cache in _caches) cache.BeginStep();
    }

    /// <summary>
    /// The primary's passes for its experts of <paramref name="layer"/>, then one pass per other
    /// device that serves some of the step's assignments (or some of the pre-gate's picks for the next layer).
    /// </summary>
    public IEnumerable<ExpertPass> Passes(int layer, ReadOnlyMemory<int> expertIds, ReadOnlyMemory<int> lookahead)
    {
        var own = ByDevice(layer, expertIds.Span);
        var ahead = layer + 1 < _c.NumLayers ? ByDevice(layer + 1, lookahead.Span) : [.. _caches.Select(_ => Array.Empty<int>())];
        return Passes(layer, own, ahead);
    }

    private IEnumerable<ExpertPass> Passes(int layer, int[][] own, int[][] ahead)
    {
        foreach (var pass in _caches[0].Passes(layer, own[0], ahead[0])) yield return pass;
        for (int d = 1; d < _caches.Length; d++)
        {
            if (own[d].Length > 0 || ahead[d].Length > 0) yield return new PeerDevicePass(_runners[d - 1], layer, _present[d][layer], own[d], ahead[d]);
        }
    }

    /// <summary>The expert ids of <paramref name="layer"/> split by the device that serves them, in order.</summary>
    private int[][] ByDevice(int layer, ReadOnlySpan<int> ids)
    {
        var lists = _caches.Select(_ => new List<int>()).ToArray();
        foreach (int e in ids) lists[_placement.DeviceOf(layer, e)].Add(e);
        return [.. lists.Select(l => l.ToArray())];
    }

    /// <summary>The keys split by the device that serves them.</summary>
    private List<ExpertKey>[] ByDevice(IEnumerable<ExpertKey> keys)
    {
        var lists = _caches.Select(_ => new List<ExpertKey>()).ToArray();
        foreach (var key in keys) lists[_placement.DeviceOf(key)].Add(key);
        return lists;
    }

    /// <summary>Never called: rerouting is refused with several devices at load.</summary>
    public bool Reroute(int layer, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK) =>
        throw new InvalidOperationException("rerouting is not supported with several devices");

    /// <inheritdoc/>
    public void SetPredictedSet(IReadOnlyCollection<ExpertKey> predicted, bool waitForCopies = false)
    {
        var parts = ByDevice(predicted);
        for (int d = 0; d < _caches.Length; d++) _caches[d].SetPredictedSet(parts[d], waitForCopies);
    }

    /// <inheritdoc/>
    public void Prefetch(IEnumerable<ExpertKey> keys)
    {
        var parts = ByDevice(keys);
        for (int d = 0; d < _caches.Length; d++) _caches[d].Prefetch(parts[d]);
    }

    /// <inheritdoc/>
    public long AbsentBytes(IEnumerable<ExpertKey> keys)
    {
        var parts = ByDevice(keys);
        return Enumerable.Range(0, _caches.Length).Sum(d => _caches[d].AbsentBytes(parts[d]));
    }

    /// <inheritdoc/>
    public void WaitForPendingCopies()
    {
        foreach (var cache in _caches) cache.WaitForPendingCopies();
    }

    /// <summary>The devices' counters summed (slots, bytes and per-layer counts), with each device's in <see cref="ResidencyStats.Devices"/>.</summary>
    public ResidencyStats Snapshot()
    {
        var devices = _caches.Select(c => c.Snapshot()).ToList();
        var layers = Enumerable.Range(0, _c.NumLayers).Select(_ => new LayerCounters()).ToList();
        var overall = new LayerCounters();
        foreach (var s in devices)
        {
            overall.Add(s.Overall);
            for (int l = 0; l < layers.Count; l++) layers[l].Add(s.Layers[l]);
        }
        return new ResidencyStats
        {
            Policy = devices[0].Policy,
            Slots = devices.Sum(s => s.Slots),
            TotalExperts = devices[0].TotalExperts,
            ExpertBytes = devices[0].ExpertBytes,
            SlotBytes = devices.Sum(s => s.SlotBytes),
            ResidentExpertBytes = devices.Sum(s => s.ResidentExpertBytes),
            PreloadBytes = devices.Sum(s => s.PreloadBytes),
            PeakDeviceBytes = devices.Sum(s => s.PeakDeviceBytes),
            PredictedSetWaitSeconds = devices.Sum(s => s.PredictedSetWaitSeconds),
            Overall = overall,
            Layers = layers,
            Devices = devices,
        };
    }

    /// <summary>Releases the caches, then the devices after the first (the primary belongs to the model).</summary>
    public void Dispose()
    {
        foreach (var runner in _runners) runner.Dispose();
        foreach (var cache in _caches) cache.Dispose();
        foreach (var runner in _runners) runner.Device.Dispose();
    }
}
