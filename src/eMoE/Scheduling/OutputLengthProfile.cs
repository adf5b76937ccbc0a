namespace eMoE.Scheduling;

/// <summary>
/// Expected output tokens per task (eMoE's profiled output length G), learned online as a running
/// mean over a seeded prior and the lengths of finished requests. Thread-safe: the engine observes
/// from its loop while others read.
/// </summary>
public sealed class OutputLengthProfile
{
    // Sum and count per task, and over everything: a mean is then exact and order-independent.
    private readonly Dictionary<string, Tally> _tasks = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private readonly double _defaultTokens;
    private Tally _all;

    /// <summary>A profile that expects <paramref name="defaultTokens"/> output tokens until it has seen any.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="defaultTokens"/> is not a positive finite number.</exception>
    public OutputLengthProfile(double defaultTokens = 128)
    {
        if (!(defaultTokens > 0) || double.IsInfinity(defaultTokens))
            throw new ArgumentOutOfRangeException(nameof(defaultTokens), defaultTokens, "the default output length must be positive");
        _defaultTokens = defaultTokens;
    }

    /// <summary>
    /// Adds a prior for <paramref name="task"/>: a mean of <paramref name="meanTokens"/> that counts as
    /// <paramref name="weight"/> observations (so later observations move it gradually). Seeds add up.
    /// </summary>
    /// <exception cref="ArgumentException">The task is null or empty, the mean is negative or not finite, or the weight is below 1.</exception>
    public void Seed(string task, double meanTokens, int weight = 1)
    {
        ArgumentException.ThrowIfNullOrEmpty(task);
        if (!(meanTokens >= 0) || double.IsInfinity(meanTokens))
            throw new ArgumentOutOfRangeException(nameof(meanTokens), meanTokens, $"the seeded output length of task '{task}' must be a non-negative number");
        ArgumentOutOfRangeException.ThrowIfLessThan(weight, 1);
        Add(task, meanTokens * weight, weight);
    }

    /// <summary>
    /// A request of <paramref name="task"/> finished with <paramref name="tokens"/> output tokens. A
    /// null task counts only towards the overall mean that unknown tasks get.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is negative.</exception>
    public void Observe(string? task, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        Add(task, tokens, 1);
    }

    /// <summary>
    /// The expected output tokens of a request of <paramref name="task"/>: the task's mean; for a null
    /// or unseen task, the mean over all seeds and observations, or the constructor's default when
    /// there are none.
    /// </summary>
    public double Expected(string? task)
    {
        lock (_gate)
        {
            if (task is not null && _tasks.TryGetValue(task, out var tally)) return tally.Mean;
            return _all.Count > 0 ? _all.Mean : _defaultTokens;
        }
    }

    private void Add(string? task, double sum, long count)
    {
        lock (_gate)
        {
            if (task is not null)
                _tasks[task] = _tasks.GetValueOrDefault(task).Plus(sum, count);
            _all = _all.Plus(sum, count);
        }
    }

    private readonly record struct Tally(double Sum, long Count)
    {
        public double Mean => Sum / Count;

        public Tally Plus(double sum, long count) => new(Sum + sum, Count + count);
    }
}
