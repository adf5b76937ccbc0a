using eMoE.Inference;

namespace eMoE.GpuCheck.Checks;

/// <summary>
/// Comparisons of a whole model's outputs: with golden values from the torch reference
/// (tests/golden), and between two devices or two expert budgets. The golden unit tests
/// (tests/eMoE.Tests/Inference/GoldenTests.cs) use them on the CPU accelerator; the GPU check uses
/// them on CUDA, with the same tolerances.
/// </summary>
internal static class EngineChecks
{
    /// <summary>Largest allowed |logit difference| (the golden tests' tolerance).</summary>
    public const float LogitTolerance = 1e-3f;

    /// <summary>Largest allowed perplexity difference from the golden value, in percent.</summary>
    public const double PerplexityTolerancePercent = 0.1;

    /// <summary>max |a[i] - b[i]|.</summary>
    /// <exception cref="CheckFailedException">The lengths differ.</exception>
    public static float MaxAbsDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) throw new CheckFailedException($"{a.Length} values against {b.Length}");
        float worst = 0;
        for (int i = 0; i < a.Length; i++)
        {
            float d = Math.Abs(a[i] - b[i]);
            if (!(d <= worst)) worst = float.IsNaN(d) ? float.PositiveInfinity : d;
        }
        return worst;
    }

    /// <summary>
    /// The model's logits against the golden ones: for each golden prompt, its first positions and
    /// its last one, as (where, max |difference|).
    /// </summary>
    public static List<(string Where, float Worst)> GoldenLogitDifferences(MoeModel model, Golden golden)
    {
        int vocab = model.Config.VocabSize;
        var result = new List<(string, float)>();
        foreach (var prompt in golden.Prompts)
        {
            var logits = model.ComputeLogits(prompt.Ids);
            for (int p = 0; p < prompt.Logits.Count; p++)
                result.Add(($"position {p} of a {prompt.Ids.Count}-token prompt", MaxAbsDifference(logits.AsSpan(p * vocab, vocab), prompt.Logits[p])));
            result.Add(($"last position of a {prompt.Ids.Count}-token prompt", MaxAbsDifference(logits.AsSpan((prompt.Ids.Count - 1) * vocab, vocab), prompt.LastLogits)));
        }
        return result;
    }

    /// <summary><paramref name="tokens"/> greedy tokens after <paramref name="ids"/>, end of sequence ignored.</summary>
    public static async Task<List<int>> GreedyAsync(MoeModel model, IReadOnlyList<int> ids, int tokens)
    {
        var options = new GenerationOptions { MaxTokens = tokens, StopAtEndOfSequence = false };
        var generated = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(ids, options, new GenerationStats()).ConfigureAwait(false))
            generated.Add(id);
        return generated;
    }

    /// <summary>Greedy text after a text prompt (the tokenizer's special tokens added), end of sequence ignored.</summary>
    public static async Task<(List<int> Ids, string Text)> GreedyTextAsync(MoeModel model, string prompt, int tokens)
    {
        var generation = model.Generate(prompt, new GenerationOptions { MaxTokens = tokens, StopAtEndOfSequence = false });
        var ids = new List<int>();
        var text = new System.Text.StringBuilder();
        await foreach (var token in generation.ConfigureAwait(false))
        {
            ids.Add(token.Id);
            text.Append(token.Text);
        }
        text.Append(generation.FlushText());
        return (ids, text.ToString());
    }

    /// <summary>The golden perplexity window scored by the model, and its difference from the golden value in percent.</summary>
    public static (PerplexityResult Result, double PercentOff) GoldenPerplexity(MoeModel model, Golden golden)
    {
        var expected = golden.Perplexity;
        var result = model.ScorePerplexity(expected.Ids, new PerplexityOptions { Context = expected.Context });
        return (result, Math.Abs(result.Perplexity - expected.Perplexity) / expected.Perplexity * 100);
    }

    /// <summary>
    /// The golden perplexity text (a prefix of a file in the repository) as the model's tokenizer
    /// encodes it, or null when the golden scores random ids rather than a text.
    /// </summary>
    public static IReadOnlyList<int>? GoldenTextIds(MoeModel model, Golden golden, string repositoryRoot)
    {
        var expected = golden.Perplexity;
        if (expected.File is null) return null;
        string text = File.ReadAllText(Path.Combine(repositoryRoot, expected.File))[..expected.Chars!.Value];
        return model.RequireTokenizer().Encode(text);
    }
}
