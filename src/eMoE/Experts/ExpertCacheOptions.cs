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

    /// <summary>
    /// Where an expert that is not on the device runs (hybrid execution): copied in (the default),
    /// computed on the host where its weights already are, with the tokens' activations sent instead
    /// of the weights, or chosen per miss from measured costs.
    /// </summary>
    public ExpertExecution Execution { get; init; } = ExpertExecution.Device;

    /// <summary>
    /// The experts of the first N MoE layers always run on the host and take no device memory
    /// (llama.cpp's <c>--n-cpu-moe</c>); 0: none.
    /// </summary>
    public int CpuMoeLayers { get; init; }

    /// <summary>
    /// Host-to-device bandwidth in bytes per second that <see cref="ExpertExecution.Auto"/> decides by;
    /// null: measured (one expert copied at load, then every copy). Set it to model a link (e.g. PCIe 4 x16).
    /// </summary>
    public double? LinkBytesPerSecond { get; init; }

    /// <summary>The options checked against the model, with defaults filled in.</summary>
    /// <exception cref="ArgumentException">A setting cannot work with this model.</exception>
    internal ResolvedExpertOptions Resolve(ModelConfig config)
    {
        if (CpuMoeLayers < 0 || CpuMoeLayers > config.NumLayers)
            throw new ArgumentException($"the host-only MoE layers must be between 0 and the model's {config.NumLayers} layers, got {CpuMoeLayers}");
        if (OnMiss == MissMode.Reroute && (Execution != ExpertExecution.Device || CpuMoeLayers > 0))
            throw new ArgumentException("rerouting sends a token to a resident expert instead of running its own; with host execution every expert can run, so choose one");
        if (LinkBytesPerSecond is double link && !(link > 0 && double.IsFinite(link)))
            throw new ArgumentException($"the link bandwidth must be a positive number of bytes per second, got {link}");
        if (RerouteMaxWeight is float limit && (OnMiss != MissMode.Reroute || !(limit >= 0 && limit <= 1)))
            throw new ArgumentException($"the reroute weight limit applies to reroute mode and must be between 0 and 1, got {limit} with {OnMiss}");
        int width = PregateWidth ?? config.TopK;
        if (width < 1 || width > config.NumExperts)
            throw new ArgumentException($"the pre-gate width must be between 1 and {config.NumExperts} experts per token, got {width}");
        FittedPregate?.CheckFits(config);
        return new ResolvedExpertOptions(Budget, Policy, OnMiss, RerouteMaxWeight ?? 1, Pregate, width, Pregate ? FittedPregate : null,
            Execution, CpuMoeLayers, LinkBytesPerSecond);
    }
}

/// <summary>The expert cache's settings after checking: every default resolved against the model.</summary>
internal sealed record ResolvedExpertOptions(ExpertBudget Budget, EvictionPolicyKind Policy, MissMode OnMiss, float RerouteMaxWeight,
    bool Pregate, int PregateWidth, Prediction.FittedPregate? FittedPregate, ExpertExecution Execution, int CpuMoeLayers, double? LinkBytesPerSecond)
{
    /// <summary>Whether some experts may run on the host (a host expert runner is needed).</summary>
    public bool Hybrid => Execution != ExpertExecution.Device || CpuMoeLayers > 0;
}

/// <summary>Where an expert that is not resident on the device runs.</summary>
public enum ExpertExecution
{
    /// <summary>Copy it to the device and run it there (exact output; the copy may stall).</summary>
    Device,
    /// <summary>Run it on the host, where its weights are; only the tokens' activations cross the link.</summary>
    Host,
    /// <summary>
    /// Per miss, whichever is cheaper by measured numbers: the copy (bytes / link bandwidth), worth
    /// as many uses as a copied expert of the layer has had so far, against host compute (measured at
    /// load) plus the activations' round trip.
    /// </summary>
    Auto,
}

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
