namespace eMoE.Scheduling;

/// <summary>
/// A request's service-level objective; either part may be absent (no constraint on it).
/// </summary>
public sealed record Slo
{
    /// <summary>Most time from arrival to the first output token; null: no first-token constraint.</summary>
    public TimeSpan? TimeToFirstToken { get; init; }

    /// <summary>Most mean time per output token after the first; null: no per-token constraint.</summary>
    public TimeSpan? TimePerOutputToken { get; init; }

    /// <summary>Whether neither part is present (such a request is never checked against a deadline).</summary>
    internal bool IsEmpty => TimeToFirstToken is null && TimePerOutputToken is null;

    /// <summary>Throws when a present part is zero or negative.</summary>
    /// <exception cref="ArgumentException">A part is not positive; the message and parameter name name it.</exception>
    public void Validate()
    {
        RequirePositive(TimeToFirstToken, nameof(TimeToFirstToken));
        RequirePositive(TimePerOutputToken, nameof(TimePerOutputToken));
    }

    /// <summary>
    /// Whether a request served with first-token latency <paramref name="ttft"/> and mean time per
    /// output token <paramref name="meanTpot"/> met every present part. A null
    /// <paramref name="meanTpot"/> means only one token came out, so the per-token part holds.
    /// </summary>
    public bool Met(TimeSpan ttft, TimeSpan? meanTpot) =>
        (TimeToFirstToken is not { } ttftLimit || ttft <= ttftLimit)
        && (TimePerOutputToken is not { } tpotLimit || meanTpot is not { } tpot || tpot <= tpotLimit);

    private static void RequirePositive(TimeSpan? value, string name)
    {
        if (value is { } v && v <= TimeSpan.Zero)
            throw new ArgumentException($"SLO {name} must be positive, got {v.TotalMilliseconds} ms", name);
    }
}
