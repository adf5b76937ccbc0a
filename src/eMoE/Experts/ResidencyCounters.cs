using System.Text.Json.Serialization;

namespace eMoE.Experts;

/// <summary>What happened to expert requests of one layer (or of all layers together).</summary>
public sealed class LayerCounters
{
    /// <summary>Experts the forward pass asked for (each distinct expert once per step and pass).</summary>
    [JsonPropertyName("requests")] public long Requests { get; set; }
    /// <summary>Requests found resident and ready.</summary>
    [JsonPropertyName("hits")] public long Hits { get; set; }
    /// <summary>Requests whose prefetch was still copying: the compute waited for the rest of it.</summary>
    [JsonPropertyName("late_prefetches")] public long LatePrefetches { get; set; }
    /// <summary>Requests neither resident nor in flight: copied on demand.</summary>
    [JsonPropertyName("misses")] public long Misses { get; set; }
    /// <summary>Experts evicted to make room.</summary>
    [JsonPropertyName("evictions")] public long Evictions { get; set; }
    /// <summary>Prefetches started from hints.</summary>
    [JsonPropertyName("prefetches")] public long Prefetches { get; set; }
    /// <summary>Bytes copied host to device for this layer's experts (on demand and prefetched).</summary>
    [JsonPropertyName("bytes_copied")] public long BytesCopied { get; set; }
    /// <summary>Seconds the compute waited for copies.</summary>
    [JsonPropertyName("stall_seconds")] public double StallSeconds { get; set; }

    /// <summary>Token-to-expert assignments sent to another, resident expert (reroute mode).</summary>
    [JsonPropertyName("rerouted")] public long Rerouted { get; set; }
    /// <summary>Distinct experts this layer used in steps that had a pre-gate prediction.</summary>
    [JsonPropertyName("lookahead_actual")] public long LookaheadActual { get; set; }
    /// <summary>Of those, how many the pre-gate had predicted (and prefetched).</summary>
    [JsonPropertyName("lookahead_covered")] public long LookaheadCovered { get; set; }

    /// <summary>Distinct experts run on the host instead of copied (hybrid execution), per step and pass.</summary>
    [JsonPropertyName("host_experts")] public long HostExperts { get; set; }
    /// <summary>Token-to-expert assignments computed on the host.</summary>
    [JsonPropertyName("host_assignments")] public long HostAssignments { get; set; }
    /// <summary>Seconds spent computing experts on the host, activation transfers included.</summary>
    [JsonPropertyName("host_seconds")] public double HostSeconds { get; set; }
    /// <summary>Bytes of experts run on the host that were not resident: what copying them would have moved.</summary>
    [JsonPropertyName("bytes_not_copied")] public long BytesNotCopied { get; set; }

    /// <summary>Pre-gate lookahead accuracy: share of the layer's actual experts that were predicted.</summary>
    [JsonPropertyName("lookahead_accuracy")] public double LookaheadAccuracy => LookaheadActual == 0 ? 0 : (double)LookaheadCovered / LookaheadActual;

    /// <summary>Hits / requests (late prefetches are not hits).</summary>
    [JsonPropertyName("hit_rate")] public double HitRate => Requests == 0 ? 0 : (double)Hits / Requests;

    internal void Add(LayerCounters o)
    {
        Requests += o.Requests;
        Hits += o.Hits;
        LatePrefetches += o.LatePrefetches;
        Misses += o.Misses;
        Evictions += o.Evictions;
        Prefetches += o.Prefetches;
        BytesCopied += o.BytesCopied;
        StallSeconds += o.StallSeconds;
        Rerouted += o.Rerouted;
        LookaheadActual += o.LookaheadActual;
        LookaheadCovered += o.LookaheadCovered;
        HostExperts += o.HostExperts;
        HostAssignments += o.HostAssignments;
        HostSeconds += o.HostSeconds;
        BytesNotCopied += o.BytesNotCopied;
    }
}

/// <summary>A snapshot of the expert cache's counters, per layer and overall.</summary>
public sealed class ResidencyStats
{
    /// <summary>Eviction policy in use.</summary>
    [JsonPropertyName("policy")] public string Policy { get; init; } = "";
    /// <summary>Expert slots on the device.</summary>
    [JsonPropertyName("slots")] public int Slots { get; init; }
    /// <summary>All experts of the model (layers x experts).</summary>
    [JsonPropertyName("total_experts")] public int TotalExperts { get; init; }
    /// <summary>Bytes of one expert.</summary>
    [JsonPropertyName("expert_bytes")] public long ExpertBytes { get; init; }
    /// <summary>Device bytes reserved for expert slots (never above the budget).</summary>
    [JsonPropertyName("budget_bytes")] public long SlotBytes { get; init; }
    /// <summary>Bytes of experts resident now.</summary>
    [JsonPropertyName("resident_expert_bytes")] public long ResidentExpertBytes { get; init; }
    /// <summary>Bytes copied when the cache was first filled (all-resident preload), not counted per layer.</summary>
    [JsonPropertyName("preload_bytes")] public long PreloadBytes { get; init; }
    /// <summary>Peak device memory allocated by the engine (weights, cache, activations).</summary>
    [JsonPropertyName("peak_device_bytes")] public long PeakDeviceBytes { get; init; }
    /// <summary>Seconds spent before prompts waiting for a predicted resident set to land (reroute mode).</summary>
    [JsonPropertyName("predicted_set_wait_seconds")] public double PredictedSetWaitSeconds { get; init; }
    /// <summary>All layers together.</summary>
    [JsonPropertyName("overall")] public LayerCounters Overall { get; init; } = new();
    /// <summary>Per layer.</summary>
    [JsonPropertyName("layers")] public IReadOnlyList<LayerCounters> Layers { get; init; } = [];
    /// <summary>Expert parallelism: each device's own counters (device 0 first); null with one device.</summary>
    [JsonPropertyName("devices"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public IReadOnlyList<ResidencyStats>? Devices { get; init; }
}
