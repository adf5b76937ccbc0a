using System.Diagnostics;
using eMoE.Experts;

namespace eMoE.Prediction;

/// <summary>How the engine predicts which experts to keep resident (eMoE's task-aware loader).</summary>
public sealed record PredictionOptions
{
    /// <summary>
    /// Run the predictor on every N-th prompt of a task (eMoE's p); the prompts in between reuse the
    /// task's last resident set unchanged. 1 = every prompt.
    /// </summary>
    public int PredictEvery { get; init; } = 1;

    /// <summary>
    /// On prompts where the predictor runs, run it again once the prompt's own prefill routing is
    /// known and adopt the refined set for the decode steps.
    /// </summary>
    public bool RefineAfterPrefill { get; init; } = true;

    /// <summary>
    /// Per task and layer, how much routing matters (from <c>emoe profile</c>). An insensitive layer
    /// skips prediction and keeps the first set chosen for its task. In reroute mode slots also go
    /// preferentially to the layers where a missing expert costs most quality; in load mode a miss
    /// costs one copy wherever it is, so slots go by expected hits alone. Null: every layer weighs the same.
    /// </summary>
    public LayerSensitivityProfile? LayerProfile { get; init; }

    /// <summary>The predictor; null: <see cref="ResidencyPlanner.DefaultPredictor"/> for the model.</summary>
    public IExpertPredictor? Predictor { get; init; }

    /// <summary>Throws when the options cannot work.</summary>
    internal void Validate()
    {
        if (PredictEvery <= 0) throw new ArgumentException($"predict every N prompts needs N >= 1, got {PredictEvery}");
    }
}

/// <summary>
/// The predictor in the serving loop: before each prompt it names the experts to keep resident,
/// runs the predictor only every N prompts of a task, keeps insensitive layers fixed, and learns
/// from each finished prompt. The slots are shared out across layers: each layer first gets its
/// <c>minPerLayer</c> most likely experts, then the rest go one by one to the expert with the
/// largest predicted share of its layer's assignments times the layer's sensitivity weight (eMoE
/// keeps the top-L per layer with L from the budget; with equal weights this is that, except that a
/// layer whose routing is concentrated cedes slots to one whose routing is spread). It moves no
/// bytes: the engine (or the trace simulator) applies the sets it returns, so both share this
/// logic. With requests of several tasks running at once, <see cref="BatchSet"/> shares the slots
/// by eMoE's expected load per expert, summed over the tasks. Not thread-safe: the engine loop calls it.
/// </summary>
public sealed class ResidencyPlanner
{
    private sealed class TaskState
    {
        public int Observed;
        public int PredictedAt = -1;
        public bool RefinePending;
        public int[]?[] Current = [];
        public int[]?[] Frozen = [];
        public double[]?[] Share = [];   // [layer][expert]: the predicted share of the layer's assignments behind Current
    }

    private readonly IExpertPredictor _predictor;
    private readonly PredictionOptions _options;
    private readonly int _layers, _experts, _slots, _minPerLayer;
    private readonly bool _weighLayers;
    private readonly Dictionary<string, TaskState> _tasks = new(StringComparer.Ordinal);

    /// <summary>
    /// A planner for <paramref name="numLayers"/> layers of <paramref name="numExperts"/> experts that keeps
    /// <paramref name="slots"/> experts resident, at least <paramref name="minPerLayer"/> per layer where the
    /// slots allow (top-k, so reroute always has a choice). <paramref name="onMiss"/> says what a
    /// miss costs: with <see cref="MissMode.Reroute"/> the profile's sensitivities weigh the layers.
    /// </summary>
    public ResidencyPlanner(int numLayers, int numExperts, int slots, int minPerLayer, PredictionOptions options, MissMode onMiss = MissMode.Load)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numLayers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numExperts);
        options.Validate();
        _layers = numLayers;
        _experts = numExperts;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slots);
        _slots = Math.Min(slots, numLayers * numExperts);
        // A budget too small for the minimum everywhere lowers it (the cache then reroutes or loads).
        _minPerLayer = Math.Clamp(minPerLayer, 0, Math.Min(numExperts, _slots / numLayers));
        _options = options;
        _weighLayers = onMiss == MissMode.Reroute;
        _predictor = options.Predictor ?? DefaultPredictor(numLayers, numExperts);
    }

    /// <summary>
    /// The best design measured in bench/results/prediction: per-task expert frequencies with decay
    /// 0.9, blended with the prompt's prefill routing by a mix learned per task and layer.
    /// </summary>
    public static IExpertPredictor DefaultPredictor(int numLayers, int numExperts) =>
        new FrequencyPredictor(numLayers, numExperts, 0.9, usePrefill: true, learnMix: true, mixPerLayer: true);

    /// <summary>Experts the planner keeps resident (all layers).</summary>
    public int Slots => _slots;

    /// <summary>Times the predictor ran (before prompts and after prefills).</summary>
    public int Invocations { get; private set; }

    /// <summary>Layer predictions skipped because the profile marks the layer insensitive for the task.</summary>
    public int SkippedLayers { get; private set; }

    /// <summary>Time spent in the predictor.</summary>
    public TimeSpan PredictTime { get; private set; }

    /// <summary>
    /// A prompt of <paramref name="task"/> is about to run: the experts to keep resident for it (the
    /// task's last set, or a fresh prediction when one is due), or null when nothing is known yet
    /// (the cache then works on demand).
    /// </summary>
    public IReadOnlyList<ExpertKey>? BeginPrompt(string? task)
    {
        var s = State(task);
        bool due = s.PredictedAt < 0 || s.Observed - s.PredictedAt >= _options.PredictEvery;
        // A set predicted from other tasks' history is provisional: redo it once the task has its own.
        if (s.PredictedAt == 0 && s.Observed > 0) due = true;
        if (due && Predict(task, s, prefix: null))
        {
            s.PredictedAt = s.Observed;
            s.RefinePending = _options.RefineAfterPrefill;
        }
        return Keys(s);
    }

    /// <summary>
    /// The prompt's prefill has run (<paramref name="prefill"/>: its routing): a refined set when the
    /// predictor ran for this prompt, else null (keep the current set).
    /// </summary>
    public IReadOnlyList<ExpertKey>? AfterPrefill(string? task, PromptTrace prefill)
    {
        ArgumentNullException.ThrowIfNull(prefill);
        var s = State(task);
        if (!s.RefinePending) return null;
        s.RefinePending = false;
        return Predict(task, s, prefill) ? Keys(s) : null;
    }

    /// <summary>A prompt has finished: the predictor learns its routing.</summary>
    public void EndPrompt(PromptTrace finished)
    {
        ArgumentNullException.ThrowIfNull(finished);
        if (finished.Steps.Count == 0) return;
        _predictor.Observe(finished);
        var s = State(finished.Task);
        s.Observed++;
        s.RefinePending = false;
    }

    private bool Predict(string? task, TaskState s, PromptTrace? prefix)
    {
        long start = Stopwatch.GetTimestamp();
        var scores = _predictor.Predict(task, prefix);
        PredictTime += Stopwatch.GetElapsedTime(start);
        Invocations++;
        if (scores.IsUniform) return false;
        if (s.Current.Length == 0)
        {
            s.Current = new int[]?[_layers];
            s.Frozen = new int[]?[_layers];
            s.Share = new double[]?[_layers];
        }
        // Frozen (insensitive) layers keep their set; the others share the remaining slots.
        var chosen = new List<int>[_layers];
        var share = new double[_layers][];
        var weight = new double[_layers];
        var insensitive = new bool[_layers];
        int free = _slots;
        for (int l = 0; l < _layers; l++)
        {
            insensitive[l] = _options.LayerProfile?.IsSensitive(task, l) == false;
            if (insensitive[l] && s.Frozen[l] is { } frozen)
            {
                chosen[l] = [.. frozen];
                free -= frozen.Length;
                SkippedLayers++;
                continue;
            }
            var row = scores.Layer(l);
            double sum = 0;
            foreach (double v in row) sum += v;
            share[l] = new double[_experts];
            for (int e = 0; e < _experts; e++) share[l][e] = sum > 0 ? row[e] / sum : 1.0 / _experts;
            weight[l] = _weighLayers ? Math.Max(_options.LayerProfile?.Weight(task, l) ?? 1.0, 1e-6) : 1.0;
            chosen[l] = [.. scores.TopN(l, _minPerLayer)];
            free -= _minPerLayer;
        }
        var value = new double[_layers][];
        for (int l = 0; l < _layers; l++)
        {
            if (share[l] is null) continue;
            value[l] = new double[_experts];
            for (int e = 0; e < _experts; e++) value[l][e] = weight[l] * share[l][e];
        }
        FillSlots(chosen, value, free);
        for (int l = 0; l < _layers; l++)
        {
            s.Current[l] = [.. chosen[l]];
            if (share[l] is not null) s.Share[l] = share[l];
            if (share[l] is not null && insensitive[l]) s.Frozen[l] = s.Current[l];
        }
        return true;
    }

    /// <summary>
    /// Greedy: the next free slot goes to the unchosen expert with the largest value, over layers
    /// with values (null rows are left as chosen). Ties go to the lower expert id, then the lower
    /// layer: equal layers share evenly.
    /// </summary>
    private void FillSlots(List<int>[] chosen, double[]?[] value, int free)
    {
        var candidates = new List<(double Value, int Layer, int Expert)>();
        for (int l = 0; l < _layers; l++)
        {
            if (value[l] is not { } row) continue;
            for (int e = 0; e < _experts; e++)
            {
                if (!chosen[l].Contains(e)) candidates.Add((row[e], l, e));
            }
        }
        candidates.Sort((a, b) => a.Value != b.Value ? b.Value.CompareTo(a.Value) : (a.Expert, a.Layer).CompareTo((b.Expert, b.Layer)));
        foreach (var (_, l, e) in candidates.Take(Math.Max(0, free))) chosen[l].Add(e);
    }

    /// <summary>The experts last planned for <paramref name="task"/>, or null when nothing is known of it yet.</summary>
    public IReadOnlyList<ExpertKey>? TaskSet(string? task) => _tasks.TryGetValue(task ?? "", out var s) ? Keys(s) : null;

    /// <summary>
    /// The experts to keep resident while requests of several tasks run together: eMoE's expected
    /// load per expert, N_e = sum over tasks of load x sensitivity x predicted share of e in its layer,
    /// where a task's load is its running requests' input tokens plus their expected output tokens
    /// (the caller sums them) and a layer insensitive for the task counts (almost) nothing. Each
    /// layer keeps at least its minimum, the rest go by N_e. With a single task this is that task's
    /// own set, unchanged. Null when no task of the batch has a plan yet.
    /// </summary>
    public IReadOnlyList<ExpertKey>? BatchSet(IReadOnlyList<(string? Task, double Load)> tasks)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        var planned = tasks.Select(t => (t.Task, t.Load, State: _tasks.GetValueOrDefault(t.Task ?? "")))
            .Where(t => t.State is { Current.Length: > 0 }).ToList();
        if (planned.Count == 0) return null;
        if (planned.Select(t => t.Task ?? "").Distinct(StringComparer.Ordinal).Count() == 1) return Keys(planned[0].State!);
        var value = new double[]?[_layers];
        var chosen = new List<int>[_layers];
        int free = _slots;
        for (int l = 0; l < _layers; l++)
        {
            var row = new double[_experts];
            foreach (var (task, load, state) in planned)
            {
                if (state!.Share[l] is not { } share) continue;
                // eMoE's s in {0, 1}; a small floor keeps the order of a layer that is insensitive for every task.
                double sensitivity = _options.LayerProfile?.IsSensitive(task, l) == false ? 1e-6 : 1.0;
                double weight = _weighLayers ? Math.Max(_options.LayerProfile?.Weight(task, l) ?? 1.0, 1e-6) : 1.0;
                for (int e = 0; e < _experts; e++) row[e] += load * sensitivity * weight * share[e];
            }
            value[l] = row;
            chosen[l] = [.. Enumerable.Range(0, _experts).OrderByDescending(e => row[e]).ThenBy(e => e).Take(_minPerLayer)];
            free -= _minPerLayer;
        }
        FillSlots(chosen, value, free);
        var keys = new List<ExpertKey>();
        for (int l = 0; l < _layers; l++)
        {
            foreach (int e in chosen[l]) keys.Add(new ExpertKey(l, e));
        }
        return keys;
    }

    private static List<ExpertKey>? Keys(TaskState s)
    {
        if (s.Current.Length == 0) return null;
        var keys = new List<ExpertKey>();
        for (int l = 0; l < s.Current.Length; l++)
        {
            foreach (int e in s.Current[l] ?? []) keys.Add(new ExpertKey(l, e));
        }
        return keys;
    }

    private TaskState State(string? task)
    {
        string key = task ?? "";
        if (!_tasks.TryGetValue(key, out var s)) _tasks[key] = s = new TaskState();
        return s;
    }
}
