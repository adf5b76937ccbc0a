namespace eMoE.Prediction;

/// <summary>
/// A prediction of which experts a prompt will need: per layer, a score per expert (higher means
/// more likely needed). Scores are comparable within a layer only. Ties rank the lower expert id
/// first, so uniform scores name experts 0, 1, 2, ... in order.
/// </summary>
public sealed class ExpertScores
{
    private readonly double[][] _scores;

    /// <summary>Wraps <paramref name="scores"/> ([layer][expert]); every layer needs the same number of experts.</summary>
    public ExpertScores(double[][] scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Length == 0) throw new ArgumentException("scores need at least one layer", nameof(scores));
        int experts = scores[0].Length;
        if (experts == 0 || scores.Any(l => l is null || l.Length != experts))
            throw new ArgumentException("every layer needs the same, positive number of experts", nameof(scores));
        _scores = scores;
    }

    /// <summary>Layers scored.</summary>
    public int NumLayers => _scores.Length;

    /// <summary>Experts per layer.</summary>
    public int NumExperts => _scores[0].Length;

    /// <summary>True when the scores carry no preference (the "no prediction yet" answer).</summary>
    public bool IsUniform { get; private init; }

    /// <summary>The score of <paramref name="expert"/> in <paramref name="layer"/>.</summary>
    public double this[int layer, int expert] => _scores[layer][expert];

    /// <summary>The scores of one layer, by expert id.</summary>
    public ReadOnlySpan<double> Layer(int layer) => _scores[layer];

    /// <summary>Equal scores everywhere: no preference.</summary>
    public static ExpertScores Uniform(int numLayers, int numExperts)
    {
        var s = new double[numLayers][];
        for (int l = 0; l < numLayers; l++) s[l] = new double[numExperts];
        return new ExpertScores(s) { IsUniform = true };
    }

    /// <summary>The <paramref name="k"/> experts of <paramref name="layer"/> the prediction names for a prompt's top-k (accuracy).</summary>
    public int[] TopK(int layer, int k) => TopN(layer, k);

    /// <summary>
    /// The <paramref name="n"/> highest-scoring experts of <paramref name="layer"/> (the set to keep
    /// resident under a budget of n experts per layer), best first; ties go to the lower id.
    /// </summary>
    public int[] TopN(int layer, int n)
    {
        var s = _scores[layer];
        n = Math.Clamp(n, 0, s.Length);
        var ids = new int[s.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = i;
        Array.Sort(ids, (a, b) => s[a] != s[b] ? s[b].CompareTo(s[a]) : a.CompareTo(b));
        return ids[..n];
    }

    /// <summary>The experts of <paramref name="layer"/> that fit a budget of <paramref name="fraction"/> of the layer's experts (rounded).</summary>
    public int[] TopFraction(int layer, double fraction) => TopN(layer, ExpertsAtBudget(fraction, NumExperts));

    /// <summary>Experts per layer a budget fraction allows: round(fraction * numExperts), at least one.</summary>
    public static int ExpertsAtBudget(double fraction, int numExperts) =>
        Math.Clamp((int)Math.Round(fraction * numExperts, MidpointRounding.AwayFromZero), 1, numExperts);
}
