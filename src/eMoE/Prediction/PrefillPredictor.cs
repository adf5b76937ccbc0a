namespace eMoE.Prediction;

/// <summary>
/// The prompt's own prefill routing and nothing else (no history): the experts its prompt tokens
/// used, by count. Uniform without a prefix. A baseline for what the task history adds.
/// </summary>
public sealed class PrefillPredictor(int numLayers, int numExperts) : IExpertPredictor
{
    /// <inheritdoc/>
    public string Name => "prefill only";

    /// <inheritdoc/>
    public void Observe(PromptTrace finished) { }

    /// <inheritdoc/>
    public ExpertScores Predict(string? task, PromptTrace? currentPrefix)
    {
        if (currentPrefix is not { Steps.Count: > 0 }) return ExpertScores.Uniform(numLayers, numExperts);
        var counts = FrequencyPredictor.Rows(numLayers, numExperts);
        RoutingCounts.AddTo(counts, currentPrefix, 0, int.MaxValue, 1.0);
        return new ExpertScores(counts);
    }
}
