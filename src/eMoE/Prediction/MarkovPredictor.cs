using System.Globalization;

namespace eMoE.Prediction;

/// <summary>
/// A per-task Markov model of layer-to-layer routing: P(expert j at layer l+1 | expert i at layer l),
/// counted over every token of the task's earlier prompts (every pair of the token's top-k at the
/// two layers) with exponential decay across prompts. Layer 0 comes from a
/// <see cref="FrequencyPredictor"/> (the prompt's prefill routing blended with the task history, or
/// the history alone); deeper layers are that distribution pushed through the transitions.
/// </summary>
public sealed class MarkovPredictor : IExpertPredictor
{
    private sealed class Chain(int layers, int experts)
    {
        public readonly double[][][] Counts = Enumerable.Range(0, Math.Max(0, layers - 1)).Select(_ => FrequencyPredictor.Rows(experts, experts)).ToArray();
        public readonly double[][][] Normalized = Enumerable.Range(0, Math.Max(0, layers - 1)).Select(_ => FrequencyPredictor.Rows(experts, experts)).ToArray();
        public int Prompts;
    }

    private readonly Dictionary<string, Chain> _tasks = new(StringComparer.Ordinal);
    private readonly Chain _global;
    private readonly FrequencyPredictor _layerZero;
    private readonly int _layers, _experts;
    private readonly double _decay;
    private readonly bool _usePrefill;

    /// <summary>A Markov predictor for <paramref name="numLayers"/> layers of <paramref name="numExperts"/> experts.</summary>
    public MarkovPredictor(int numLayers, int numExperts, double decay = 0.9, bool usePrefill = true)
    {
        _layerZero = new FrequencyPredictor(numLayers, numExperts, decay, usePrefill);
        _layers = numLayers;
        _experts = numExperts;
        _decay = decay;
        _usePrefill = usePrefill;
        _global = new Chain(numLayers, numExperts);
    }

    /// <inheritdoc/>
    public string Name => string.Create(CultureInfo.InvariantCulture, $"markov (decay {_decay:0.##}, layer 0 from {(_usePrefill ? "prefill + history" : "history")})");

    /// <inheritdoc/>
    public void Observe(PromptTrace finished)
    {
        ArgumentNullException.ThrowIfNull(finished);
        _layerZero.Observe(finished);
        string key = finished.Task ?? "";
        if (!_tasks.TryGetValue(key, out var chain)) _tasks[key] = chain = new Chain(_layers, _experts);
        int k = Math.Max(1, finished.TopK);
        var transitions = Enumerable.Range(0, Math.Max(0, _layers - 1)).Select(_ => FrequencyPredictor.Rows(_experts, _experts)).ToArray();
        foreach (var step in finished.Steps)
        {
            for (int l = 0; l + 1 < _layers && l + 1 < step.Experts.Length; l++)
            {
                int[] from = step.Experts[l], to = step.Experts[l + 1];
                for (int t = 0; t < step.Tokens && (t + 1) * k <= from.Length && (t + 1) * k <= to.Length; t++)
                {
                    for (int a = 0; a < k; a++)
                    {
                        for (int b = 0; b < k; b++) transitions[l][from[t * k + a]][to[t * k + b]] += 1;
                    }
                }
            }
        }
        // Each prompt's transitions are normalised per source expert before the decayed sum, as the frequencies are.
        foreach (var m in transitions) RoutingCounts.NormalizeRows(m);
        Update(chain, transitions);
        Update(_global, transitions);
    }

    private void Update(Chain chain, double[][][] transitions)
    {
        for (int l = 0; l < transitions.Length; l++)
        {
            for (int i = 0; i < _experts; i++)
            {
                double sum = 0;
                for (int j = 0; j < _experts; j++)
                {
                    chain.Counts[l][i][j] = _decay * chain.Counts[l][i][j] + transitions[l][i][j];
                    sum += chain.Counts[l][i][j];
                }
                for (int j = 0; j < _experts; j++) chain.Normalized[l][i][j] = sum > 0 ? chain.Counts[l][i][j] / sum : 1.0 / _experts;
            }
        }
        chain.Prompts++;
    }

    /// <inheritdoc/>
    public ExpertScores Predict(string? task, PromptTrace? currentPrefix)
    {
        var start = _layerZero.Predict(task, currentPrefix);
        var chain = _tasks.TryGetValue(task ?? "", out var c) && c.Prompts > 0 ? c : _global;
        if (chain.Prompts == 0 || start.IsUniform) return start;
        var scores = new double[_layers][];
        scores[0] = start.Layer(0).ToArray();
        double total = 0;
        foreach (double v in scores[0]) total += v;
        if (total > 0)
        {
            for (int e = 0; e < _experts; e++) scores[0][e] /= total;
        }
        for (int l = 0; l + 1 < _layers; l++)
        {
            var next = new double[_experts];
            var m = chain.Normalized[l];
            for (int i = 0; i < _experts; i++)
            {
                double p = scores[l][i];
                if (p == 0) continue;
                var row = m[i];
                for (int j = 0; j < _experts; j++) next[j] += p * row[j];
            }
            scores[l + 1] = next;
        }
        return new ExpertScores(scores);
    }
}
