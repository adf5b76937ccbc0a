using eMoE.Compute;
using eMoE.Experts;
using eMoE.Prediction;
using eMoE.Scheduling;

namespace eMoE.Inference;

/// <summary>How a model is loaded.</summary>
public sealed record ModelOptions
{
    /// <summary>Which backend to use; <see cref="DeviceKind.Auto"/> picks CUDA, then an OpenCL GPU, else the host.</summary>
    public DeviceSpec Device { get; init; } = DeviceKind.Auto;

    /// <summary>
    /// Expert parallelism: the ILGPU devices to spread the experts over, the first being the primary,
    /// which runs everything but the other devices' experts; null or one device: <see cref="Device"/> alone.
    /// The host (<see cref="DeviceKind.Cpu"/>) cannot be one of several: it has no device expert cache.
    /// </summary>
    public IReadOnlyList<DeviceSpec>? Devices { get; init; }

    /// <summary>Which device serves each expert with several <see cref="Devices"/>; null: round-robin over them.</summary>
    public ExpertPlacement? Placement { get; init; }

    /// <summary>
    /// With several <see cref="Devices"/>, each device's expert memory (one per device); null: the
    /// budget of <see cref="Experts"/> for every device. A share (<c>25%</c>) is of all expert bytes,
    /// so it means the same bytes on every device; a device never holds more than its placement's share.
    /// </summary>
    public IReadOnlyList<ExpertBudget>? DeviceBudgets { get; init; }

    /// <summary>Threads of the host backend (<see cref="DeviceKind.Cpu"/>); null: one per core.</summary>
    public int? Threads { get; init; }

    /// <summary>Positions one sequence may hold (prompt plus output); default: the model's max_position_embeddings, capped at 4096.</summary>
    public int? ContextLength { get; init; }

    /// <summary>Batching: sequences per step, tokens per step, KV memory and the scheduler.</summary>
    public EngineOptions Engine { get; init; } = new();

    /// <summary>Device memory for experts and the eviction policy; default: every expert resident.</summary>
    public ExpertCacheOptions Experts { get; init; } = new();

    /// <summary>
    /// eMoE's task-aware loader: before each request a predictor names the experts to keep resident
    /// (needs <see cref="EvictionPolicyKind.Predicted"/>); null: the cache works on demand only.
    /// </summary>
    public PredictionOptions? Prediction { get; init; }
}

/// <summary>How a text is scored.</summary>
public sealed record PerplexityOptions
{
    /// <summary>Window length in tokens: each window is scored from its own start.</summary>
    public int Context { get; init; } = 256;

    /// <summary>Task label of the text: each window counts as one request of this task for prediction.</summary>
    public string? Task { get; init; }

    /// <summary>Profiling: send this layer's tokens to random experts (see <c>emoe profile</c>); null for none.</summary>
    public int? RandomRoutingLayer { get; init; }

    /// <summary>Seed of the random routing.</summary>
    public int Seed { get; init; }
}

/// <summary>How text is generated.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate.</summary>
    public int MaxTokens { get; init; } = 128;

    /// <summary>How each token is chosen (greedy by default).</summary>
    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>Stop when the model emits an end-of-sequence token (it is not yielded).</summary>
    public bool StopAtEndOfSequence { get; init; } = true;

    /// <summary>Add the special tokens the tokenizer's configuration adds (e.g. BOS), as Hugging Face does.</summary>
    public bool AddSpecialTokens { get; init; } = true;

    /// <summary>Record every layer's routing into <see cref="GenerationStats.Trace"/>.</summary>
    public bool RecordRouting { get; init; }

    /// <summary>Task label of the request (prediction and the scheduler's output-length profile are per task); recorded in the trace.</summary>
    public string? Task { get; init; }

    /// <summary>The request's service-level objective (the eMoE scheduler orders and admits by it); null: none.</summary>
    public Slo? Slo { get; init; }

    /// <summary>
    /// Text that ends the generation when it appears (OpenAI's <c>stop</c>); the stop text and what
    /// follows are not returned. Applies to the text stream of a <see cref="Generation"/> (<see cref="MoeModel.Generate(string, GenerationOptions?)"/>), not to <see cref="MoeModel.GenerateIdsAsync"/>.
    /// </summary>
    public IReadOnlyList<string>? StopSequences { get; init; }
}
