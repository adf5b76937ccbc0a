namespace eMoE.Experts;

/// <summary>
/// What the forward pass and the engine ask of expert residency, whatever the backend: a device
/// expert cache under a budget (<see cref="ExpertCache"/>) or the host's experts read in place
/// (<see cref="InPlaceExperts"/>). The forward pass asks once per layer for the whole batch's experts.
/// </summary>
internal interface IExpertResidency : IDisposable
{
    /// <summary>What a miss does: load the expert or reroute the token.</summary>
    MissMode OnMiss { get; }

    /// <summary>Whether the forward pass runs the pre-gate lookahead.</summary>
    bool Pregate { get; }

    /// <summary>Experts per token the pre-gate hints.</summary>
    int PregateWidth { get; }

    /// <summary>The fitted pre-gates, or null for the training-free one (or no pre-gate).</summary>
    Prediction.FittedPregate? FittedPregate { get; }

    /// <summary>Experts that can be resident at once.</summary>
    int Slots { get; }

    /// <summary>All experts of the model.</summary>
    int TotalExperts { get; }

    /// <summary>Bytes of one expert.</summary>
    long ExpertBytes { get; }

    /// <summary>Measured host-to-device copy rate in bytes per second, or null when nothing was copied (or nothing is ever copied).</summary>
    double? CopyBytesPerSecond { get; }

    /// <summary>A new forward step begins.</summary>
    void BeginStep();

    /// <summary>
    /// Makes one layer's experts (the distinct ids of <paramref name="expertIds"/>) available, in
    /// passes; each enumerated pass is what the backend's expert operation computes next. After the
    /// first pass, the pre-gate's picks for the next layer (<paramref name="lookahead"/>) are prefetched.
    /// </summary>
    IEnumerable<Compute.ExpertPass> Passes(int layer, ReadOnlyMemory<int> expertIds, ReadOnlyMemory<int> lookahead);

    /// <summary>Reroute mode: sends assignments of absent experts to resident ones; returns whether anything changed.</summary>
    bool Reroute(int layer, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK);

    /// <summary>The experts a predictor chose for what comes next (between steps).</summary>
    void SetPredictedSet(IReadOnlyCollection<ExpertKey> predicted, bool waitForCopies = false);

    /// <summary>Hint: start copying these experts now.</summary>
    void Prefetch(IEnumerable<ExpertKey> keys);

    /// <summary>Bytes of <paramref name="keys"/> not resident now.</summary>
    long AbsentBytes(IEnumerable<ExpertKey> keys);

    /// <summary>Blocks until every queued copy has landed.</summary>
    void WaitForPendingCopies();

    /// <summary>A consistent snapshot of the counters.</summary>
    ResidencyStats Snapshot();
}
