namespace eMoE.Experts;

/// <summary>The eviction policies of the device expert cache.</summary>
public enum EvictionPolicyKind
{
    /// <summary>Least recently used.</summary>
    Lru,
    /// <summary>Least frequently used (ties: least recently used).</summary>
    Lfu,
    /// <summary>
    /// Experts not used by the current batch first, then last-in-first-out (the expert-buffering
    /// policy of "Toward Efficient Inference for Mixture of Experts": experts run in increasing id
    /// order, so the last one loaded is needed last).
    /// </summary>
    LifoInactiveFirst,
    /// <summary>Belady's MIN: evict the expert used farthest in the future. Offline: needs the future trace.</summary>
    Belady,
    /// <summary>
    /// eMoE-style: keep the experts a predictor names for the current prompt (set with
    /// <c>MoeModel.SetPredictedExperts</c>); evict unprotected experts first, least recently used first.
    /// </summary>
    Predicted,
}

/// <summary>What a policy may look at when choosing a victim.</summary>
public interface IEvictionState
{
    /// <summary>Experts requested by the current step (the batch being computed).</summary>
    IReadOnlySet<ExpertKey> ActiveInStep { get; }
}

/// <summary>Chooses which resident expert to evict. Told about every request, load and eviction.</summary>
public abstract class EvictionPolicy
{
    private long _clock;

    /// <summary>A fresh policy of the given kind; Belady needs the whole future request sequence.</summary>
    public static EvictionPolicy Create(EvictionPolicyKind kind, IReadOnlyList<ExpertKey>? future = null) => kind switch
    {
        EvictionPolicyKind.Lru => new LruPolicy(),
        EvictionPolicyKind.Lfu => new LfuPolicy(),
        EvictionPolicyKind.LifoInactiveFirst => new LifoInactiveFirstPolicy(),
        EvictionPolicyKind.Predicted => new PredictedSetPolicy(),
        EvictionPolicyKind.Belady => new BeladyPolicy(future ?? throw new ArgumentException("the Belady oracle needs the future request sequence (a routing trace)")),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>A logical clock: one tick per event.</summary>
    protected long Tick() => ++_clock;

    /// <summary>The expert was requested by the forward pass (hit or not).</summary>
    public abstract void OnRequest(ExpertKey key);

    /// <summary>The expert was loaded into a slot.</summary>
    public abstract void OnInsert(ExpertKey key);

    /// <summary>The expert left the cache.</summary>
    public abstract void OnEvict(ExpertKey key);

    /// <summary>Picks one of <paramref name="candidates"/> (resident, not pinned, not loading) to evict.</summary>
    public abstract ExpertKey ChooseVictim(IReadOnlyList<ExpertKey> candidates, IEvictionState state);

    /// <summary>Whether the policy wants <paramref name="key"/> kept (prefetch hints never evict it).</summary>
    public virtual bool IsProtected(ExpertKey key) => false;
}

internal class LruPolicy : EvictionPolicy
{
    private readonly Dictionary<ExpertKey, long> _lastUse = [];

    /// <summary>The least recently used of <paramref name="candidates"/>.</summary>
    protected ExpertKey LeastRecent(IEnumerable<ExpertKey> candidates) => candidates.MinBy(k => _lastUse.GetValueOrDefault(k));

    public override void OnRequest(ExpertKey key) => _lastUse[key] = Tick();
    public override void OnInsert(ExpertKey key) => _lastUse.TryAdd(key, Tick());
    public override void OnEvict(ExpertKey key) => _lastUse.Remove(key);

    public override ExpertKey ChooseVictim(IReadOnlyList<ExpertKey> candidates, IEvictionState state) => LeastRecent(candidates);
}

/// <summary>LRU that spares the experts a predictor chose for the current prompt while others can go.</summary>
internal sealed class PredictedSetPolicy : LruPolicy
{
    private HashSet<ExpertKey> _protected = [];

    internal PredictedSetPolicy() { }

    /// <summary>Replaces the protected (predicted) set.</summary>
    public void Protect(IEnumerable<ExpertKey> predicted) => _protected = [.. predicted];

    /// <inheritdoc/>
    public override bool IsProtected(ExpertKey key) => _protected.Contains(key);

    /// <inheritdoc/>
    public override ExpertKey ChooseVictim(IReadOnlyList<ExpertKey> candidates, IEvictionState state)
    {
        var unprotected = candidates.Where(k => !_protected.Contains(k)).ToList();
        return LeastRecent(unprotected.Count > 0 ? unprotected : candidates);
    }
}

internal sealed class LfuPolicy : EvictionPolicy
{
    // Counts persist across evictions: an expert's popularity is a property of the workload.
    private readonly Dictionary<ExpertKey, long> _uses = [];
    private readonly Dictionary<ExpertKey, long> _lastUse = [];

    public override void OnRequest(ExpertKey key)
    {
        _uses[key] = _uses.GetValueOrDefault(key) + 1;
        _lastUse[key] = Tick();
    }

    public override void OnInsert(ExpertKey key) => _lastUse.TryAdd(key, Tick());
    public override void OnEvict(ExpertKey key) { }

    public override ExpertKey ChooseVictim(IReadOnlyList<ExpertKey> candidates, IEvictionState state) =>
        candidates.MinBy(k => (_uses.GetValueOrDefault(k), _lastUse.GetValueOrDefault(k)));
}

internal sealed class LifoInactiveFirstPolicy : EvictionPolicy
{
    private readonly Dictionary<ExpertKey, long> _inserted = [];

    public override void OnRequest(ExpertKey key) { }
    public override void OnInsert(ExpertKey key) => _inserted[key] = Tick();
    public override void OnEvict(ExpertKey key) => _inserted.Remove(key);

    public override ExpertKey ChooseVictim(IReadOnlyList<ExpertKey> candidates, IEvictionState state)
    {
        var inactive = candidates.Where(k => !state.ActiveInStep.Contains(k)).ToList();
        var pool = inactive.Count > 0 ? inactive : candidates;
        return pool.MaxBy(k => _inserted.GetValueOrDefault(k));
    }
}

/// <summary>Belady's MIN over a known request sequence: the bound no online policy can beat.</summary>
internal sealed class BeladyPolicy : EvictionPolicy
{
    private readonly Dictionary<ExpertKey, Queue<int>> _uses = [];
    private int _position;

    public BeladyPolicy(IReadOnlyList<ExpertKey> future)
    {
        for (int i = 0; i < future.Count; i++)
        {
            if (!_uses.TryGetValue(future[i], out var q)) _uses[future[i]] = q = new Queue<int>();
            q.Enqueue(i);
        }
    }

    public override void OnRequest(ExpertKey key)
    {
        // Requests must arrive in the order of the recorded sequence.
        if (!_uses.TryGetValue(key, out var q) || q.Count == 0 || q.Peek() != _position)
            throw new InvalidOperationException($"request {_position} for {key} does not follow the recorded trace");
        q.Dequeue();
        _position++;
    }

    public override void OnInsert(ExpertKey key) { }
    public override void OnEvict(ExpertKey key) { }

    public override ExpertKey ChooseVictim(IReadOnlyList<ExpertKey> candidates, IEvictionState state) =>
        candidates.MaxBy(k => _uses.TryGetValue(k, out var q) && q.Count > 0 ? q.Peek() : int.MaxValue);
}
