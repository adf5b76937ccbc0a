namespace eMoE.Prediction;

/// <summary>
/// Predicts, before (or at the start of) a prompt, which experts it will need, from the routing of
/// earlier prompts and optionally the current prompt's prefill routing.
/// </summary>
public interface IExpertPredictor
{
    /// <summary>A short label for reports.</summary>
    string Name { get; }

    /// <summary>A prompt has finished: learn from its whole routing (all steps); <see cref="PromptTrace.Task"/> labels it.</summary>
    void Observe(PromptTrace finished);

    /// <summary>
    /// Scores for the next prompt of <paramref name="task"/>. <paramref name="currentPrefix"/> is the
    /// prompt's own routing so far when known (its prefill step), else null; designs may ignore it.
    /// </summary>
    ExpertScores Predict(string? task, PromptTrace? currentPrefix);
}

/// <summary>Counting helpers over routing traces.</summary>
public static class RoutingCounts
{
    /// <summary>
    /// Token-to-expert assignments per layer and expert ([layer][expert]) over steps
    /// [<paramref name="fromStep"/>, <paramref name="toStep"/>) of <paramref name="trace"/>.
    /// </summary>
    public static double[][] Count(PromptTrace trace, int fromStep = 0, int toStep = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(trace);
        var counts = new double[trace.NumLayers][];
        for (int l = 0; l < counts.Length; l++) counts[l] = new double[trace.NumExperts];
        AddTo(counts, trace, fromStep, toStep, 1.0);
        return counts;
    }

    /// <summary>Adds <paramref name="weight"/> per assignment of steps [from, to) to <paramref name="counts"/>.</summary>
    public static void AddTo(double[][] counts, PromptTrace trace, int fromStep, int toStep, double weight)
    {
        ArgumentNullException.ThrowIfNull(counts);
        ArgumentNullException.ThrowIfNull(trace);
        int end = Math.Min(toStep, trace.Steps.Count);
        for (int s = Math.Max(0, fromStep); s < end; s++)
        {
            var step = trace.Steps[s];
            for (int l = 0; l < step.Experts.Length && l < counts.Length; l++)
            {
                var row = counts[l];
                foreach (int e in step.Experts[l])
                {
                    if ((uint)e < (uint)row.Length) row[e] += weight;
                }
            }
        }
    }

    /// <summary>Tokens in steps [from, to).</summary>
    public static int Tokens(PromptTrace trace, int fromStep = 0, int toStep = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(trace);
        int end = Math.Min(toStep, trace.Steps.Count), tokens = 0;
        for (int s = Math.Max(0, fromStep); s < end; s++) tokens += trace.Steps[s].Tokens;
        return tokens;
    }

    /// <summary>
    /// The prompt's prefill (its first <paramref name="steps"/> steps: one unless the prompt was fed
    /// in chunks) as a trace of its own: what a predictor may see of the current prompt.
    /// </summary>
    public static PromptTrace Prefill(PromptTrace trace, int steps = 1)
    {
        ArgumentNullException.ThrowIfNull(trace);
        return trace.WithSteps(trace.Steps.Take(Math.Max(1, steps)));
    }

    /// <summary>Scales each row of <paramref name="counts"/> to sum to one (rows summing to zero stay zero), in place.</summary>
    public static double[][] NormalizeRows(double[][] counts)
    {
        ArgumentNullException.ThrowIfNull(counts);
        foreach (var row in counts)
        {
            double sum = 0;
            foreach (double v in row) sum += v;
            if (sum <= 0) continue;
            for (int i = 0; i < row.Length; i++) row[i] /= sum;
        }
        return counts;
    }
}
