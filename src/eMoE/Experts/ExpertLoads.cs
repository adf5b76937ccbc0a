using eMoE.Prediction;

namespace eMoE.Experts;

/// <summary>
/// The historical load of every expert over some routing traces, what placements are fitted on:
/// per layer, each expert's token-to-expert assignments (each of a token's k choices counts 1),
/// and how often each pair of experts was chosen by the same token (for their correlation).
/// </summary>
public sealed class ExpertLoads
{
    private readonly long[][] _assignments; // [layer][expert]
    private readonly int[] _together; // [(la * E + a) * L * E + lb * E + b]: tokens that chose expert a in layer la and b in layer lb

    private ExpertLoads(int numLayers, int numExperts)
    {
        NumLayers = numLayers;
        NumExperts = numExperts;
        _assignments = [.. Enumerable.Range(0, numLayers).Select(_ => new long[numExperts])];
        _together = new int[(long)numLayers * numExperts * numLayers * numExperts];
    }

    /// <summary>MoE layers.</summary>
    public int NumLayers { get; }
    /// <summary>Experts per layer.</summary>
    public int NumExperts { get; }
    /// <summary>Tokens counted (in every layer).</summary>
    public long Tokens { get; private set; }
    /// <summary>What the loads were counted on (free text; recorded in placements fitted on them).</summary>
    public string? Source { get; init; }
    /// <summary>[layer][expert]: token-to-expert assignments.</summary>
    public IReadOnlyList<IReadOnlyList<long>> Assignments => _assignments;

    /// <summary>
    /// Pearson correlation of two experts' activations over the tokens counted: each token gives
    /// each expert of the layer 1 if it chose it (among its k), else 0. Per token rather than per
    /// step because a device's load in a step of T tokens is the sum of its experts' per-token
    /// activations, so its variance is T x (the variances plus twice the covariances of the experts
    /// on it): the per-token correlation is exactly what makes one device the busiest in a step,
    /// whatever the step sizes, while per-step count vectors would mostly measure the step sizes
    /// (a prefill chunk against one decode token). An expert that never or always fires has
    /// correlation 0 with every other; an expert with itself, 1.
    /// </summary>
    public double Correlation(int layer, int a, int b) => Correlation(layer, a, layer, b);

    /// <summary>
    /// <see cref="Correlation(int, int, int)"/> of expert <paramref name="a"/> of layer
    /// <paramref name="layerA"/> and expert <paramref name="b"/> of layer <paramref name="layerB"/>
    /// (the same token's choices in two layers).
    /// </summary>
    public double Correlation(int layerA, int a, int layerB, int b)
    {
        if (layerA == layerB && a == b) return 1;
        if (Tokens == 0) return 0;
        int ia = layerA * NumExperts + a, ib = layerB * NumExperts + b, stride = NumLayers * NumExperts;
        double n = Tokens;
        double pa = _together[(long)ia * stride + ia] / n, pb = _together[(long)ib * stride + ib] / n;
        double va = pa * (1 - pa), vb = pb * (1 - pb);
        if (va <= 0 || vb <= 0) return 0;
        return (_together[(long)ia * stride + ib] / n - pa * pb) / Math.Sqrt(va * vb);
    }

    /// <summary>
    /// <see cref="Correlation(int, int, int, int)"/> where it is distinguishable from zero, else 0:
    /// below 2 / sqrt(tokens) in magnitude (about two standard errors of a Pearson correlation
    /// estimated from that many tokens when the true one is 0). On a few hundred tokens most
    /// estimates are noise, and a placement sums many of them.
    /// </summary>
    public double SignificantCorrelation(int layerA, int a, int layerB, int b)
    {
        double c = Correlation(layerA, a, layerB, b);
        return Math.Abs(c) < 2 / Math.Sqrt(Math.Max(1, Tokens)) ? 0 : c;
    }

    /// <summary>Counts the loads of <paramref name="traces"/> (all of the same shape; see <see cref="PlacementEvaluation.Shape"/>).</summary>
    public static ExpertLoads FromTraces(IReadOnlyList<PromptTrace> traces, string? source = null)
    {
        var (layers, experts, _) = PlacementEvaluation.Shape(traces);
        var loads = new ExpertLoads(layers, experts) { Source = source };
        var chosen = new List<int>(); // a token's experts in every layer, as l * E + e
        int stride = layers * experts;
        foreach (var prompt in traces)
        {
            int k = prompt.TopK;
            foreach (var step in prompt.Steps)
            {
                loads.Tokens += step.Tokens;
                for (int t = 0; t < step.Tokens; t++)
                {
                    chosen.Clear();
                    for (int l = 0; l < layers; l++)
                    {
                        var ids = step.Experts[l];
                        for (int j = 0; j < k; j++)
                        {
                            int e = ids[t * k + j];
                            loads._assignments[l][e]++;
                            if (!chosen.Contains(l * experts + e)) chosen.Add(l * experts + e);
                        }
                    }
                    foreach (int a in chosen)
                    {
                        long row = (long)a * stride;
                        foreach (int b in chosen) loads._together[row + b]++;
                    }
                }
            }
        }
        return loads;
    }
}
