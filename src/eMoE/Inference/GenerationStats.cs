namespace eMoE.Inference;

/// <summary>Why generation ended.</summary>
public enum FinishReason
{
    /// <summary>Still running.</summary>
    None,
    /// <summary>The model emitted an end-of-sequence token.</summary>
    EndOfSequence,
    /// <summary><see cref="GenerationOptions.MaxTokens"/> tokens were generated.</summary>
    MaxTokens,
    /// <summary>The KV cache is full.</summary>
    ContextFull,
    /// <summary>The caller cancelled.</summary>
    Cancelled,
    /// <summary>The text reached one of <see cref="GenerationOptions.StopSequences"/> (it is not included).</summary>
    StopSequence,
}

/// <summary>Counts and timings of one generation, filled in as it runs.</summary>
public sealed class GenerationStats
{
    /// <summary>Tokens in the prompt (special tokens included).</summary>
    public int PromptTokens { get; internal set; }
    /// <summary>Tokens generated so far.</summary>
    public int GeneratedTokens { get; internal set; }
    /// <summary>Time from admission (the end of any wait for room in the batch) to the first token: the prompt's prefill.</summary>
    public TimeSpan PrefillTime { get; internal set; }
    /// <summary>Time from submission to the first token (waiting included).</summary>
    public TimeSpan TimeToFirstToken { get; internal set; }
    /// <summary>Times the request lost its KV blocks to make room and was recomputed (the output is the same).</summary>
    public int Preemptions { get; internal set; }
    /// <summary>Time spent producing the tokens after the first.</summary>
    public TimeSpan DecodeTime { get; internal set; }
    /// <summary>Why it ended.</summary>
    public FinishReason FinishReason { get; internal set; }

    /// <summary>The routing of every step, when <see cref="GenerationOptions.RecordRouting"/> was set.</summary>
    public eMoE.Prediction.PromptTrace? Trace { get; internal set; }

    /// <summary>Prompt tokens per second of prefill.</summary>
    public double PrefillTokensPerSecond => PrefillTime > TimeSpan.Zero ? PromptTokens / PrefillTime.TotalSeconds : 0;

    /// <summary>Generated tokens (after the first) per second of decode.</summary>
    public double DecodeTokensPerSecond => DecodeTime > TimeSpan.Zero ? (GeneratedTokens - 1) / DecodeTime.TotalSeconds : 0;
}

/// <summary>Result of scoring a text.</summary>
/// <param name="Tokens">Tokens scored (every token after the first of each window).</param>
/// <param name="MeanNll">Mean negative log-likelihood in nats per token.</param>
public readonly record struct PerplexityResult(long Tokens, double MeanNll)
{
    /// <summary>exp(mean NLL).</summary>
    public double Perplexity => Math.Exp(MeanNll);
}
