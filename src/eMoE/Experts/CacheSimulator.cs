using eMoE.Prediction;

namespace eMoE.Experts;

/// <summary>
/// Replays recorded routing through the same bookkeeping the device cache uses, without moving
/// bytes: hit rates of every policy at any budget from one trace, and the Belady bound.
/// </summary>
public static class CacheSimulator
{
    /// <summary>
    /// The expert requests the forward pass makes for these prompts at this capacity, in order:
    /// per step, per layer, per pass (distinct experts in id order). Null keys mark a new step;
    /// <c>PassStart</c> marks where pins are released. With <paramref name="sees"/>, only the
    /// experts it accepts are requested (the share of the routing one device of several serves).
    /// </summary>
    internal static List<(ExpertKey? Key, bool PassStart, int Prompt, int Step)> Requests(IEnumerable<PromptTrace> prompts, int capacity,
        Func<ExpertKey, bool>? sees = null)
    {
        var events = new List<(ExpertKey?, bool, int, int)>();
        int p = 0;
        foreach (var prompt in prompts)
        {
            for (int s = 0; s < prompt.Steps.Count; s++)
            {
                var step = prompt.Steps[s];
                events.Add((null, false, p, s));
                for (int layer = 0; layer < step.Experts.Length; layer++)
                {
                    int[] ids = sees is null ? step.Experts[layer] : [.. step.Experts[layer].Where(e => sees(new ExpertKey(layer, e)))];
                    foreach (var pass in ResidencyBook.Passes(ids, capacity))
                    {
                        for (int i = 0; i < pass.Length; i++) events.Add((new ExpertKey(layer, pass[i]), i == 0, p, s));
                    }
                }
            }
            p++;
        }
        return events;
    }

    /// <summary>
    /// Counters of a cache of <paramref name="capacity"/> slots replaying <paramref name="prompts"/>
    /// in order. Starts empty unless every expert fits (then preloaded, as the engine does).
    /// </summary>
    /// <param name="prompts">The prompts in arrival order.</param>
    /// <param name="capacity">Expert slots.</param>
    /// <param name="policy">Eviction policy.</param>
    /// <param name="expertBytes">Bytes of one expert (for bytes copied).</param>
    /// <param name="predict">
    /// Called before each step of prompt i with (i, step index); returns the experts to prefetch (and,
    /// with <see cref="EvictionPolicyKind.Predicted"/>, to protect) from then on, or null to keep the
    /// current set. Prefetches land at once here and count as bytes copied.
    /// </param>
    public static LayerCounters Run(IReadOnlyList<PromptTrace> prompts, int capacity, EvictionPolicyKind policy, long expertBytes,
        Func<int, int, IReadOnlyCollection<ExpertKey>?>? predict = null) =>
        Simulate(prompts, capacity, policy, expertBytes, predict: predict).Overall;

    /// <summary>
    /// Replays <paramref name="prompts"/> in order through a cache of <paramref name="capacity"/>
    /// slots, as <see cref="Run"/> does, and returns the counters per layer and the most experts
    /// resident at once. With <paramref name="sees"/>, the cache is one device's of several: it is
    /// asked only for the experts <paramref name="sees"/> accepts (those placed on it), and starts
    /// with all of them resident when they fit.
    /// </summary>
    /// <param name="prompts">The prompts in arrival order (for a batched trace, one stream of its engine steps).</param>
    /// <param name="capacity">Expert slots.</param>
    /// <param name="policy">Eviction policy.</param>
    /// <param name="expertBytes">Bytes of one expert (for bytes copied).</param>
    /// <param name="sees">The experts this cache serves; null: all of them.</param>
    /// <param name="predict">As for <see cref="Run"/>.</param>
    public static CacheSimulation Simulate(IReadOnlyList<PromptTrace> prompts, int capacity, EvictionPolicyKind policy, long expertBytes,
        Func<ExpertKey, bool>? sees = null, Func<int, int, IReadOnlyCollection<ExpertKey>?>? predict = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        if (prompts.Count == 0) return new CacheSimulation([], new LayerCounters(), 0);
        int layers = prompts[0].NumLayers, experts = prompts[0].NumExperts;
        var requests = Requests(prompts, capacity, sees);
        var future = requests.Where(r => r.Key is not null).Select(r => r.Key!.Value).ToList();
        var book = new ResidencyBook(capacity, layers, EvictionPolicy.Create(policy, future));
        int served = sees is null ? layers * experts
            : Enumerable.Range(0, layers).Sum(l => Enumerable.Range(0, experts).Count(e => sees(new ExpertKey(l, e))));
        if (capacity >= served) book.PreloadAll(experts, include: sees);
        int peak = book.ResidentCount;
        foreach (var (key, passStart, prompt, step) in requests)
        {
            if (key is not ExpertKey k)
            {
                book.BeginStep();
                if (predict?.Invoke(prompt, step) is { } predicted)
                {
                    book.SetPredicted(predicted); // as in the engine, between steps
                    foreach (var e in predicted)
                    {
                        if (!book.TryPrefetch(e, out _, out _)) continue;
                        book.Loaded(e);
                        book.Layers[e.Layer].BytesCopied += expertBytes;
                    }
                    peak = Math.Max(peak, book.ResidentCount);
                }
                continue;
            }
            if (passStart) book.UnpinAll();
            if (book.Request(k, out _, out _) == RequestOutcome.Miss)
            {
                book.Loaded(k);
                book.Layers[k.Layer].BytesCopied += expertBytes;
            }
            peak = Math.Max(peak, book.ResidentCount);
        }
        var (perLayer, total) = book.CopyCounters();
        return new CacheSimulation(perLayer, total, peak);
    }
}

/// <summary>What one simulated expert cache did over a trace.</summary>
/// <param name="Layers">Counters per layer.</param>
/// <param name="Overall">All layers together.</param>
/// <param name="PeakResident">The most experts resident at once (times the bytes of one expert: the cache's peak memory).</param>
public sealed record CacheSimulation(IReadOnlyList<LayerCounters> Layers, LayerCounters Overall, int PeakResident);
