namespace eMoE.Inference;

/// <summary>How the next token is chosen. Defaults are greedy decoding.</summary>
public sealed record SamplingOptions
{
    /// <summary>Softmax temperature; 0 means greedy (argmax).</summary>
    public float Temperature { get; init; }
    /// <summary>Keep only the k most likely tokens; 0 disables top-k.</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus sampling mass in (0, 1]; 1 disables top-p.</summary>
    public float TopP { get; init; } = 1f;
    /// <summary>Seed of the random draws; the same seed gives the same text.</summary>
    public int? Seed { get; init; }

    /// <summary>
    /// A 64-bit seed (OpenAI's <c>seed</c>, <c>ChatOptions.Seed</c>) as <see cref="Seed"/>: itself when
    /// it fits an int, else its two halves XORed (the same seed always gives the same draws).
    /// </summary>
    public static int FoldSeed(long seed) => seed is >= int.MinValue and <= int.MaxValue ? (int)seed : (int)(seed ^ (seed >> 32));

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature))
            throw new ArgumentException($"temperature must be a finite number >= 0, got {Temperature}");
        if (TopK < 0) throw new ArgumentException($"top-k must be >= 0, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {TopP}");
    }
}
