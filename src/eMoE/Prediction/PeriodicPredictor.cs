using System.Globalization;

namespace eMoE.Prediction;

/// <summary>
/// Runs an inner predictor only every N prompts of a task and reuses its last prediction in
/// between. Counting: a task's prompts are numbered 0, 1, 2, ... by how many of the task's prompts
/// had been observed when the prediction is asked for. Prompt 0 has no history: uniform scores
/// (keep everything), the inner predictor is not run. The inner predictor runs at prompts
/// 1, 1 + N, 1 + 2N, ... (and again whenever the cached prediction is N or more prompts old);
/// every other prompt gets the cached prediction unchanged, the current prompt's prefill unused.
/// Observations always reach the inner predictor (bookkeeping is cheap; predicting is the cost).
/// </summary>
public sealed class PeriodicPredictor : IExpertPredictor
{
    private sealed class TaskState
    {
        public int Observed;
        public int CachedAt = -1;
        public ExpertScores? Cached;
        public int Invocations;
    }

    private readonly IExpertPredictor _inner;
    private readonly int _everyN, _layers, _experts;
    private readonly Dictionary<string, TaskState> _tasks = new(StringComparer.Ordinal);

    /// <summary>Wraps <paramref name="inner"/> (for <paramref name="numLayers"/> layers of <paramref name="numExperts"/> experts), run every <paramref name="everyN"/> prompts of a task.</summary>
    public PeriodicPredictor(IExpertPredictor inner, int everyN, int numLayers, int numExperts)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(everyN);
        _inner = inner;
        _everyN = everyN;
        _layers = numLayers;
        _experts = numExperts;
    }

    /// <inheritdoc/>
    public string Name => string.Create(CultureInfo.InvariantCulture, $"{_inner.Name}, every {_everyN}");

    /// <summary>How many times the inner predictor has run, over all tasks.</summary>
    public int Invocations => _tasks.Values.Sum(t => t.Invocations);

    /// <summary>How many times the inner predictor has run for <paramref name="task"/>.</summary>
    public int InvocationsFor(string? task) => _tasks.TryGetValue(task ?? "", out var t) ? t.Invocations : 0;

    /// <inheritdoc/>
    public void Observe(PromptTrace finished)
    {
        ArgumentNullException.ThrowIfNull(finished);
        _inner.Observe(finished);
        State(finished.Task).Observed++;
    }

    /// <inheritdoc/>
    public ExpertScores Predict(string? task, PromptTrace? currentPrefix)
    {
        var s = State(task);
        if (s.Observed == 0) return ExpertScores.Uniform(_layers, _experts);
        if (s.Cached is null || s.Observed - s.CachedAt >= _everyN)
        {
            s.Cached = _inner.Predict(task, currentPrefix);
            s.CachedAt = s.Observed;
            s.Invocations++;
        }
        return s.Cached;
    }

    private TaskState State(string? task)
    {
        string key = task ?? "";
        if (!_tasks.TryGetValue(key, out var s)) _tasks[key] = s = new TaskState();
        return s;
    }
}
