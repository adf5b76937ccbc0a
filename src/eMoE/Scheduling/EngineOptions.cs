namespace eMoE.Scheduling;

/// <summary>How the engine batches requests: its limits, its KV memory and its scheduler.</summary>
public sealed record EngineOptions
{
    /// <summary>
    /// Most sequences running at once (in one step); the rest wait. A step gives each at least one
    /// token, so at most <see cref="MaxTokensPerStep"/> run at once whatever this says.
    /// </summary>
    public int MaxBatch { get; init; } = 16;

    /// <summary>
    /// Most tokens in one step: decode tokens first, then prefill chunks of the remaining budget
    /// (chunked prefill, as vLLM and Sarathi-Serve do). It sizes the per-step scratch.
    /// </summary>
    public int MaxTokensPerStep { get; init; } = 256;

    /// <summary>
    /// Device memory for the paged KV cache; null: room for <see cref="MaxBatch"/> sequences of the
    /// whole context. Below one whole sequence is an error.
    /// </summary>
    public long? KvMemoryBytes { get; init; }

    /// <summary>How waiting requests are ordered and admitted.</summary>
    public SchedulerKind Scheduler { get; init; } = SchedulerKind.Fcfs;

    /// <summary>
    /// Expected output tokens per task before any request of it has finished (the scheduler's
    /// prior, e.g. from evaluation prompts); learned online from finished requests either way.
    /// </summary>
    public IReadOnlyDictionary<string, double>? ExpectedOutputTokens { get; init; }

    /// <summary>Throws when a limit cannot work.</summary>
    /// <exception cref="ArgumentException">The message names the setting.</exception>
    internal void Validate()
    {
        if (MaxBatch < 1) throw new ArgumentException($"the batch limit must be at least 1 sequence, got {MaxBatch}");
        if (MaxTokensPerStep < 1) throw new ArgumentException($"tokens per step must be positive, got {MaxTokensPerStep}");
        if (KvMemoryBytes is <= 0) throw new ArgumentException($"KV memory must be positive, got {KvMemoryBytes} bytes");
    }
}

/// <summary>A snapshot of the engine's counters.</summary>
public sealed record EngineStats
{
    /// <summary>Sequences running now.</summary>
    public int Running { get; init; }
    /// <summary>Sequences waiting to be admitted now.</summary>
    public int Waiting { get; init; }
    /// <summary>Most sequences in one step so far.</summary>
    public int LargestBatch { get; init; }
    /// <summary>Forward steps run.</summary>
    public long Steps { get; init; }
    /// <summary>Prompt (and recomputed) tokens fed.</summary>
    public long PrefillTokens { get; init; }
    /// <summary>Tokens sampled.</summary>
    public long SampledTokens { get; init; }
    /// <summary>Times a running sequence lost its KV blocks to make room (to be recomputed).</summary>
    public long Preemptions { get; init; }
    /// <summary>Bytes of one KV block.</summary>
    public long KvBlockBytes { get; init; }
    /// <summary>KV blocks in the pool.</summary>
    public int KvBlocks { get; init; }
    /// <summary>KV blocks held now.</summary>
    public int KvBlocksUsed { get; init; }
    /// <summary>Most KV blocks held at once.</summary>
    public int KvBlocksPeak { get; init; }
    /// <summary>KV bytes held now.</summary>
    public long KvBytesUsed => KvBlocksUsed * KvBlockBytes;
    /// <summary>Most KV bytes held at once.</summary>
    public long KvBytesPeak => KvBlocksPeak * KvBlockBytes;
}
