namespace eMoE.Experts;

/// <summary>The outcome of one expert request.</summary>
internal enum RequestOutcome
{
    Hit,
    LatePrefetch,
    Miss,
}

/// <summary>
/// The bookkeeping of an expert cache with a fixed number of slots: which expert is in which slot,
/// which are pinned (in use by the layer being computed) or still loading, the eviction policy
/// and the counters. It moves no bytes, so the real cache and the offline trace simulator share it.
/// Not thread-safe: the owner locks.
/// </summary>
internal sealed class ResidencyBook : IEvictionState
{
    private readonly Dictionary<ExpertKey, int> _slotOf = [];
    private readonly Stack<int> _freeSlots = new();
    private readonly HashSet<ExpertKey> _pinned = [];
    private readonly HashSet<ExpertKey> _loading = [];
    private readonly HashSet<ExpertKey> _active = [];
    private readonly EvictionPolicy _policy;

    public int Capacity { get; }
    public LayerCounters[] Layers { get; }
    public int ResidentCount => _slotOf.Count;
    public IReadOnlySet<ExpertKey> ActiveInStep => _active;

    public ResidencyBook(int capacity, int numLayers, EvictionPolicy policy)
    {
        Capacity = capacity;
        _policy = policy;
        Layers = Enumerable.Range(0, numLayers).Select(_ => new LayerCounters()).ToArray();
        for (int s = capacity - 1; s >= 0; s--) _freeSlots.Push(s);
    }

    /// <summary>A copy of the counters: per layer, and all layers together.</summary>
    public (List<LayerCounters> Layers, LayerCounters Overall) CopyCounters()
    {
        var layers = Layers.Select(l => { var copy = new LayerCounters(); copy.Add(l); return copy; }).ToList();
        var overall = new LayerCounters();
        foreach (var l in layers) overall.Add(l);
        return (layers, overall);
    }

    /// <summary>A new forward step begins: its batch has requested nothing yet.</summary>
    public void BeginStep() => _active.Clear();

    /// <summary>Releases the pins of the previous layer or pass (its kernels have finished).</summary>
    public void UnpinAll() => _pinned.Clear();

    /// <summary>
    /// A predictor's set for what comes next, between steps: the finished step's pins are released
    /// and, under the Predicted policy, the set is spared from eviction. The caller prefetches it.
    /// </summary>
    public void SetPredicted(IEnumerable<ExpertKey> predicted)
    {
        UnpinAll();
        if (_policy is PredictedSetPolicy protecting) protecting.Protect(predicted);
    }

    public bool IsResident(ExpertKey key) => _slotOf.ContainsKey(key);

    /// <summary>
    /// Requests an expert for the current layer and pins it. A miss takes a slot (evicting if
    /// needed) and returns it in <paramref name="slot"/>; the caller loads it and calls <see cref="Loaded"/>.
    /// </summary>
    public RequestOutcome Request(ExpertKey key, out int slot, out ExpertKey? evicted)
    {
        var counters = Layers[key.Layer];
        counters.Requests++;
        _active.Add(key);
        _policy.OnRequest(key);
        evicted = null;
        RequestOutcome outcome;
        if (_slotOf.TryGetValue(key, out slot))
        {
            outcome = _loading.Contains(key) ? RequestOutcome.LatePrefetch : RequestOutcome.Hit;
            if (outcome == RequestOutcome.Hit) counters.Hits++;
            else counters.LatePrefetches++;
        }
        else
        {
            slot = TakeSlot(out evicted) ?? throw new InvalidOperationException(
                $"no slot free for {key}: all {Capacity} expert slots are pinned or loading");
            Place(key, slot);
            counters.Misses++;
            outcome = RequestOutcome.Miss;
        }
        _pinned.Add(key);
        return outcome;
    }

    /// <summary>
    /// Whether <see cref="Request"/> can serve <paramref name="key"/> now: it is resident, a slot is
    /// free, or some expert may be evicted (experts still loading may not).
    /// </summary>
    public bool CanPlace(ExpertKey key) => _slotOf.ContainsKey(key) || _freeSlots.Count > 0 || _slotOf.Keys.Any(k => Evictable(k, spareProtected: false));

    private bool Evictable(ExpertKey key, bool spareProtected) =>
        !_pinned.Contains(key) && !_loading.Contains(key) && !(spareProtected && _policy.IsProtected(key));

    /// <summary>Reserves a slot for a prefetch; false when resident, loading, or no slot can be freed.</summary>
    public bool TryPrefetch(ExpertKey key, out int slot, out ExpertKey? evicted)
    {
        evicted = null;
        slot = -1;
        if (_slotOf.ContainsKey(key)) return false;
        // A hint is a guess: it never evicts an expert the policy protects (a predicted one).
        if (TakeSlot(out evicted, spareProtected: true) is not int s) return false;
        slot = s;
        Place(key, slot);
        Layers[key.Layer].Prefetches++;
        return true;
    }

    /// <summary>
    /// When every expert fits: places all of them, layer by layer in expert order, calling
    /// <paramref name="load"/> with each expert and its slot, and marks them loaded. Not counted as
    /// prefetches: this is the initial fill, after which every request hits. With
    /// <paramref name="include"/>, only the experts it accepts (a device's share of them).
    /// </summary>
    public void PreloadAll(int numExperts, Action<ExpertKey, int>? load = null, Func<ExpertKey, bool>? include = null)
    {
        int count = include is null ? Layers.Length * numExperts
            : Enumerable.Range(0, Layers.Length).Sum(l => Enumerable.Range(0, numExperts).Count(e => include(new ExpertKey(l, e))));
        if (Capacity < count) throw new InvalidOperationException($"{Capacity} slots cannot hold all {count} experts");
        for (int l = 0; l < Layers.Length; l++)
        {
            for (int e = 0; e < numExperts; e++)
            {
                var key = new ExpertKey(l, e);
                if (include is not null && !include(key)) continue;
                int slot = _freeSlots.Pop();
                Place(key, slot);
                load?.Invoke(key, slot);
                Loaded(key);
            }
        }
    }

    /// <summary>The copy into the expert's slot has completed.</summary>
    public void Loaded(ExpertKey key) => _loading.Remove(key);

    private void Place(ExpertKey key, int slot)
    {
        _slotOf[key] = slot;
        _loading.Add(key);
        _policy.OnInsert(key);
    }

    private int? TakeSlot(out ExpertKey? evicted, bool spareProtected = false)
    {
        evicted = null;
        if (_freeSlots.Count > 0) return _freeSlots.Pop();
        var candidates = _slotOf.Keys.Where(k => Evictable(k, spareProtected)).ToList();
        if (candidates.Count == 0) return null;
        var victim = _policy.ChooseVictim(candidates, this);
        int slot = _slotOf[victim];
        _slotOf.Remove(victim);
        _policy.OnEvict(victim);
        Layers[victim.Layer].Evictions++;
        evicted = victim;
        return slot;
    }

    /// <summary>
    /// The experts of one layer's step, split into passes that fit the cache: distinct experts in
    /// increasing id order (the order the expert kernels run them), at most <paramref name="capacity"/> per pass.
    /// </summary>
    public static List<int[]> Passes(ReadOnlySpan<int> expertIds, int capacity)
    {
        var distinct = new SortedSet<int>();
        foreach (int e in expertIds) distinct.Add(e);
        return distinct.Chunk(capacity).ToList();
    }
}
