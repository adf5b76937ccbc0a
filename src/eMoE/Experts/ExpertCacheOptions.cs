using eMoE.Model;

namespace eMoE.Experts;

/// <summary>How the device expert cache is set up.</summary>
public sealed record ExpertCacheOptions
{
    /// <summary>Device memory for expert weights; default: every expert resident.</summary>
    public ExpertBudget Budget { get; init; } = ExpertBudget.All;

    /// <summary>Which expert to evict when a slot is needed.</summary>
    public EvictionPolicyKind Policy { get; init; } = EvictionPolicyKind.LifoInactiveFirst;

    /// <summary>What to do when a token's expert is not on the device.</summary>
    public MissMode OnMiss { get; init; } = MissMode.Load;

    /// <summary>
    /// Reroute mode only: an absent expert whose (top-k normalised) router weight for the token is
    /// above this is loaded, a stall, instead of rerouted, so only the tokens' minor experts are
    /// replaced. 0 loads every absent expert (load mode's output); null or 1: eMoE's reroute-everything.
    /// </summary>
    public float? RerouteMaxWeight { get; init; }

    /// <summary>
    /// Pre-gated lookahead: during layer L, apply layer L+1's router to layer L's MoE input and
    /// prefetch the experts it picks (training-free Pre-gated MoE).
    /// </summary>
    public bool Pregate { get; init; }

    /// <summary>
    /// Experts per token the pre-gate prefetches for the next layer (its top-w by the next router);
    /// null: the model's top-k. Wider hints cover more of the next layer's experts for more copies.
    /// </summary>
    public int? PregateWidth { get; init; }

    /// <summary>
    /// Fitted pre-gates (<see cref="Prediction.PregateFitter"/>) used by <see cref="Pregate"/> in place of
    /// the next layer's own router; null: the training-free pre-gate.
    /// </summary>
    public Prediction.FittedPregate? FittedPregate { get; init; }

    /// <summary>The options checked against the model, with defaults filled in.</summary>
    /// <exception cref="ArgumentException">A setting cannot work with this model.</exception>
    internal ResolvedExpertOptions Resolve(ModelConfig config)
    {
        if (RerouteMaxWeight is float limit && (OnMiss != MissMode.Reroute || !(limit >= 0 && limit <= 1)))
            throw new ArgumentException($"the reroute weight limit applies to reroute mode and must be between 0 and 1, got {limit} with {OnMiss}");
        int width = PregateWidth ?? config.TopK;
        if (width < 1 || width > config.NumExperts)
            throw new ArgumentException($"the pre-gate width must be between 1 and {config.NumExperts} experts per token, got {width}");
        FittedPregate?.CheckFits(config);
        return new ResolvedExpertOptions(Budget, Policy, OnMiss, RerouteMaxWeight ?? 1, Pregate, width, Pregate ? FittedPregate : null);
    }
}

/// <summary>The expert cache's settings after checking: every default resolved against the model.</summary>
internal sealed record ResolvedExpertOptions(ExpertBudget Budget, EvictionPolicyKind Policy, MissMode OnMiss, float RerouteMaxWeight,
    bool Pregate, int PregateWidth, Prediction.FittedPregate? FittedPregate);

/// <summary>What happens when a token is routed to an expert that is not resident.</summary>
public enum MissMode
{
    /// <summary>Copy the expert to the device and wait for it: output identical to all-resident.</summary>
    Load,
    /// <summary>
    /// Send the token to its highest-ranked resident expert instead, keeping the total router weight
    /// (eMoE's mode: no stall, slightly different output). The absent expert is then fetched in the
    /// background (never evicting a predicted one), so later tokens may find it. Loads on demand
    /// only when a layer has fewer than k resident experts.
    /// </summary>
    Reroute,
}
