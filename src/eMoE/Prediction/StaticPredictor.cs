namespace eMoE.Prediction;

/// <summary>
/// The static baseline: the most frequently used experts per layer over every earlier prompt of
/// every task (plain counts of token assignments, no decay), whatever the task or prompt.
/// </summary>
public sealed class StaticPredictor(int numLayers, int numExperts) : IExpertPredictor
{
    private readonly double[][] _counts = FrequencyPredictor.Rows(numLayers, numExperts);
    private int _prompts;

    /// <inheritdoc/>
    public string Name => "static (global most frequent)";

    /// <inheritdoc/>
    public void Observe(PromptTrace finished)
    {
        ArgumentNullException.ThrowIfNull(finished);
        RoutingCounts.AddTo(_counts, finished, 0, int.MaxValue, 1.0);
        _prompts++;
    }

    /// <inheritdoc/>
    public ExpertScores Predict(string? task, PromptTrace? currentPrefix)
    {
        if (_prompts == 0) return ExpertScores.Uniform(numLayers, numExperts);
        return new ExpertScores(_counts.Select(r => r.ToArray()).ToArray());
    }
}
