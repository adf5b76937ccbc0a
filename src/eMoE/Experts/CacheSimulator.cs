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
    /// <c>PassStart</c> marks where pins are released.
    /// </summary>
    internal static List<(ExpertKey? Key, bool PassStart, int Prompt, int Step)> Requests(IEnumerable<PromptTrace> prompts, int capacity)
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
                    foreach (var pass in ResidencyBook.Passes(step.Experts[layer], capacity))
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
        Func<int, int, IReadOnlyCollection<ExpertKey>?>? predict = null)
    {
        if (prompts.Count == 0) return new LayerCounters();
        int layers = prompts[0].NumLayers, experts = prompts[0].NumExperts;
        var requests = Requests(prompts, capacity);
        var future = requests.Where(r => r.Key is not null).Select(r => r.Key!.Value).ToList();
        var book = new ResidencyBook(capacity, layers, EvictionPolicy.Create(policy, future));
        if (capacity >= layers * experts) book.PreloadAll(experts);
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
                }
                continue;
            }
            if (passStart) book.UnpinAll();
            if (book.Request(k, out _, out _) == RequestOutcome.Miss)
            {
                book.Loaded(k);
                book.Layers[k.Layer].BytesCopied += expertBytes;
            }
        }
        var total = new LayerCounters();
        foreach (var c in book.Layers) total.Add(c);
        return total;
    }
}
