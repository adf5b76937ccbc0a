using System.Text.Json.Serialization;
using eMoE.Prediction;

namespace eMoE.Experts;

/// <summary>
/// How evenly a placement spreads some routing over its devices. A device's load is the number of
/// token-to-expert assignments (each of a token's k choices counts 1) to the experts placed on it.
/// </summary>
public sealed class PlacementStats
{
    /// <summary>Steps (batches) evaluated.</summary>
    [JsonPropertyName("steps")] public int Steps { get; init; }
    /// <summary>Tokens evaluated.</summary>
    [JsonPropertyName("tokens")] public long Tokens { get; init; }
    /// <summary>Token-to-expert assignments evaluated (all layers).</summary>
    [JsonPropertyName("assignments")] public long Assignments { get; init; }
    /// <summary>Per device: its assignments over all steps and layers.</summary>
    [JsonPropertyName("device_assignments")] public IReadOnlyList<long> DeviceAssignments { get; init; } = [];
    /// <summary>The busiest device's assignments over the mean device's, over the whole trace and all layers (1 = perfectly even).</summary>
    [JsonPropertyName("max_over_mean")] public double MaxOverMean { get; init; }
    /// <summary>The same within each step (batch), all layers together, averaged over steps.</summary>
    [JsonPropertyName("step_max_over_mean")] public double StepMaxOverMean { get; init; }
    /// <summary>Per layer: <see cref="MaxOverMean"/> of that layer's assignments alone.</summary>
    [JsonPropertyName("max_over_mean_per_layer")] public IReadOnlyList<double> LayerMaxOverMean { get; init; } = [];
    /// <summary>Per layer: <see cref="StepMaxOverMean"/> of that layer's assignments alone.</summary>
    [JsonPropertyName("step_max_over_mean_per_layer")] public IReadOnlyList<double> LayerStepMaxOverMean { get; init; } = [];
}

/// <summary>One half of a trace to fit a placement on and the other to test it on.</summary>
/// <param name="Fit">The prompts (or slices of one prompt) to fit on.</param>
/// <param name="Test">The held-out rest.</param>
/// <param name="Description">How the trace was split, in words.</param>
public sealed record TraceSplit(IReadOnlyList<PromptTrace> Fit, IReadOnlyList<PromptTrace> Test, string Description);

/// <summary>
/// Evaluates expert placements on routing traces: the trace's steps (batches), its fit/test split,
/// and the load balance measures of <see cref="PlacementStats"/>.
/// </summary>
public static class PlacementEvaluation
{
    /// <summary>
    /// Layers, experts per layer and top-k of a set of traces, after checking every prompt has the
    /// same ones and every step is well formed (an expert list per layer, tokens x k ids in range):
    /// an <see cref="InvalidDataException"/> otherwise.
    /// </summary>
    public static (int Layers, int Experts, int TopK) Shape(IReadOnlyList<PromptTrace> traces)
    {
        if (traces.Count == 0) throw new InvalidDataException("the trace has no prompts");
        var first = traces[0];
        if (first.NumLayers < 1 || first.NumExperts < 1 || first.TopK < 1)
            throw new InvalidDataException($"prompt {first.Prompt}: num_layers, num_experts and top_k must be positive");
        foreach (var p in traces)
        {
            if (p.NumLayers != first.NumLayers || p.NumExperts != first.NumExperts || p.TopK != first.TopK)
            {
                throw new InvalidDataException($"prompt {p.Prompt} has {p.NumLayers} layers x {p.NumExperts} experts, top-{p.TopK}; " +
                    $"prompt {first.Prompt} has {first.NumLayers} x {first.NumExperts}, top-{first.TopK}");
            }
            for (int s = 0; s < p.Steps.Count; s++)
            {
                var step = p.Steps[s];
                if (step.Experts.Length != p.NumLayers)
                    throw new InvalidDataException($"prompt {p.Prompt}, step {s}: {step.Experts.Length} expert lists for {p.NumLayers} layers");
                for (int l = 0; l < p.NumLayers; l++)
                {
                    var ids = step.Experts[l];
                    if (ids is null || ids.Length != step.Tokens * p.TopK)
                        throw new InvalidDataException($"prompt {p.Prompt}, step {s}, layer {l}: {ids?.Length ?? 0} expert ids for {step.Tokens} tokens x top-{p.TopK}");
                    foreach (int e in ids)
                    {
                        if (e < 0 || e >= p.NumExperts)
                            throw new InvalidDataException($"prompt {p.Prompt}, step {s}, layer {l}: expert {e} is out of range (0..{p.NumExperts - 1})");
                    }
                }
            }
        }
        return (first.NumLayers, first.NumExperts, first.TopK);
    }

    /// <summary>
    /// Fit on the first half of the prompts in file order (⌊n / 2⌋ of them), test on the rest: the
    /// paper's "fit on half of a trace, test on the other", with whole requests held out, as a
    /// placement fitted on past requests serves later ones (and in a batched trace, requests in
    /// input order, so the test half also has the later arrivals). A trace of one prompt is split
    /// inside it instead: the steps that start in the first half of its tokens, then the rest.
    /// </summary>
    public static TraceSplit Split(IReadOnlyList<PromptTrace> traces)
    {
        Shape(traces);
        if (traces.Count >= 2)
        {
            int half = traces.Count / 2;
            return new TraceSplit([.. traces.Take(half)], [.. traces.Skip(half)],
                $"fit: the first {half} of {traces.Count} prompts in file order; test: the last {traces.Count - half}");
        }
        var only = traces[0];
        long total = only.Steps.Sum(s => (long)s.Tokens), before = 0;
        var fit = new List<StepTrace>();
        var test = new List<StepTrace>();
        foreach (var step in only.Steps)
        {
            (2 * before < total ? fit : test).Add(step);
            before += step.Tokens;
        }
        if (fit.Count == 0 || test.Count == 0)
            throw new InvalidDataException($"the trace has one prompt of {only.Steps.Count} step(s): too short to split into a fit half and a test half");
        return new TraceSplit([only.WithSteps(fit)], [only.WithSteps(test)],
            $"one prompt, split inside it: fit: its first {fit.Sum(s => s.Tokens)} of {total} tokens ({fit.Count} steps); test: the last {test.Sum(s => s.Tokens)} ({test.Count} steps)");
    }

    /// <summary>
    /// The steps of <paramref name="traces"/> as the devices see them, each one batch: in a trace
    /// recorded one request at a time (no <see cref="StepTrace.EngineStep"/>) every step of every
    /// prompt, in file order; in a batched serving trace, the slices of every prompt with the same
    /// engine step merged into one step (tokens and their routing concatenated in prompt order), in
    /// engine-step order. A step without an engine step stays a step of its own.
    /// </summary>
    public static List<StepTrace> BatchSteps(IEnumerable<PromptTrace> traces)
    {
        var groups = new List<(long? Key, List<StepTrace> Slices)>();
        var byKey = new Dictionary<long, List<StepTrace>>();
        bool allKeyed = true;
        foreach (var prompt in traces)
        {
            foreach (var step in prompt.Steps)
            {
                if (step.EngineStep is not long key)
                {
                    allKeyed = false;
                    groups.Add((null, [step]));
                    continue;
                }
                if (!byKey.TryGetValue(key, out var slices))
                {
                    byKey[key] = slices = [];
                    groups.Add((key, slices));
                }
                slices.Add(step);
            }
        }
        if (allKeyed) groups = [.. groups.OrderBy(g => g.Key)];
        return [.. groups.Select(g => g.Slices.Count == 1 ? g.Slices[0] : Merge(g.Key, g.Slices))];
    }

    private static StepTrace Merge(long? key, List<StepTrace> slices)
    {
        int layers = slices[0].Experts.Length;
        return new StepTrace
        {
            Start = 0,
            Tokens = slices.Sum(s => s.Tokens),
            EngineStep = key,
            Experts = [.. Enumerable.Range(0, layers).Select(l => slices.SelectMany(s => s.Experts[l]).ToArray())],
            Weights = [.. Enumerable.Range(0, layers).Select(l => slices.SelectMany(s => l < s.Weights.Length ? s.Weights[l] : []).ToArray())],
        };
    }

    /// <summary>
    /// <paramref name="traces"/> as one stream of its <see cref="BatchSteps"/>: what a device's
    /// expert cache is asked for, batch by batch (for <see cref="CacheSimulator.Simulate"/>).
    /// </summary>
    public static PromptTrace AsOneStream(IReadOnlyList<PromptTrace> traces)
    {
        var (layers, experts, topK) = Shape(traces);
        return new PromptTrace { Prompt = 0, NumLayers = layers, NumExperts = experts, TopK = topK, Steps = BatchSteps(traces) };
    }

    /// <summary>
    /// The load balance of <paramref name="placement"/> on <paramref name="traces"/>: over the whole
    /// set and per step (<see cref="BatchSteps"/>), overall and per layer. The traces must have the
    /// placement's layers and experts.
    /// </summary>
    public static PlacementStats Evaluate(ExpertPlacement placement, IReadOnlyList<PromptTrace> traces)
    {
        var (layers, experts, _) = Shape(traces);
        placement.CheckFits(layers, experts, placement.Devices, "the trace");
        int devices = placement.Devices;
        var total = new long[devices];
        var perLayer = Enumerable.Range(0, layers).Select(_ => new long[devices]).ToArray();
        var stepSum = new double[layers];
        double overallStepSum = 0;
        var inStep = new long[devices];
        var inStepLayer = new long[devices];
        int steps = 0;
        long tokens = 0;
        foreach (var step in BatchSteps(traces))
        {
            if (step.Tokens == 0) continue;
            steps++;
            tokens += step.Tokens;
            Array.Clear(inStep);
            for (int l = 0; l < layers; l++)
            {
                Array.Clear(inStepLayer);
                foreach (int e in step.Experts[l]) inStepLayer[placement.DeviceOf(l, e)]++;
                stepSum[l] += MaxOverMean(inStepLayer);
                for (int d = 0; d < devices; d++)
                {
                    inStep[d] += inStepLayer[d];
                    perLayer[l][d] += inStepLayer[d];
                    total[d] += inStepLayer[d];
                }
            }
            overallStepSum += MaxOverMean(inStep);
        }
        return new PlacementStats
        {
            Steps = steps,
            Tokens = tokens,
            Assignments = total.Sum(),
            DeviceAssignments = total,
            MaxOverMean = MaxOverMean(total),
            StepMaxOverMean = steps == 0 ? 0 : overallStepSum / steps,
            LayerMaxOverMean = [.. perLayer.Select(MaxOverMean)],
            LayerStepMaxOverMean = [.. stepSum.Select(s => steps == 0 ? 0 : s / steps)],
        };
    }

    /// <summary>The largest load over the mean load; 0 when there is no load at all.</summary>
    private static double MaxOverMean(long[] loads)
    {
        long sum = loads.Sum();
        return sum == 0 ? 0 : loads.Max() * (double)loads.Length / sum;
    }
}
