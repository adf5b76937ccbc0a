using System.Globalization;

namespace eMoE.Prediction;

/// <summary>
/// A tiny learned model: per layer, a softmax (multinomial logistic) regression from usage
/// histograms to the prompt's expert distribution. Features of layer l: the prompt's prefill
/// distribution at l, the task's decayed usage distribution at l (all steps of earlier prompts), and
/// a bias; the target is the prompt's distribution over all its steps (soft labels, cross-entropy).
/// Weights are shared by all tasks, start as "prefill plus history" and are fitted online by SGD
/// over the examples seen so far (a bounded buffer) each time a prompt finishes.
/// </summary>
public sealed class LogisticPredictor : IExpertPredictor
{
    private readonly int _layers, _experts, _features, _epochs, _bufferSize;
    private readonly double _decay, _learningRate;
    private readonly double[][][] _weights; // [layer][expert][feature]
    private readonly Dictionary<string, double[][]> _history = new(StringComparer.Ordinal);
    private readonly List<(double[][] X, double[][] Y)> _examples = [];

    /// <summary>A learned predictor for <paramref name="numLayers"/> layers of <paramref name="numExperts"/> experts.</summary>
    public LogisticPredictor(int numLayers, int numExperts, double decay = 0.9, double learningRate = 0.5, int epochs = 2, int bufferSize = 256)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numLayers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numExperts);
        _layers = numLayers;
        _experts = numExperts;
        _features = 2 * numExperts + 1;
        _decay = decay;
        _learningRate = learningRate;
        _epochs = epochs;
        _bufferSize = bufferSize;
        _weights = new double[numLayers][][];
        for (int l = 0; l < numLayers; l++)
        {
            _weights[l] = FrequencyPredictor.Rows(numExperts, _features);
            for (int e = 0; e < numExperts; e++)
            {
                _weights[l][e][e] = 8;
                _weights[l][e][numExperts + e] = 8;
            }
        }
    }

    /// <inheritdoc/>
    public string Name => string.Create(CultureInfo.InvariantCulture, $"logistic regression (prefill + history histograms, decay {_decay:0.##})");

    private double[][] Features(string? task, PromptTrace? prefix)
    {
        var x = FrequencyPredictor.Rows(_layers, _features);
        var prefill = prefix is { Steps.Count: > 0 } ? RoutingCounts.NormalizeRows(RoutingCounts.Count(prefix, 0, 1)) : null;
        _history.TryGetValue(task ?? "", out var h);
        for (int l = 0; l < _layers; l++)
        {
            if (prefill is not null) Array.Copy(prefill[l], 0, x[l], 0, _experts);
            if (h is not null)
            {
                double sum = 0;
                foreach (double v in h[l]) sum += v;
                for (int e = 0; sum > 0 && e < _experts; e++) x[l][_experts + e] = h[l][e] / sum;
            }
            x[l][_features - 1] = 1;
        }
        return x;
    }

    private void Logits(int layer, double[] x, double[] z)
    {
        var w = _weights[layer];
        for (int e = 0; e < _experts; e++)
        {
            double s = 0;
            var row = w[e];
            for (int j = 0; j < _features; j++) s += row[j] * x[j];
            z[e] = s;
        }
    }

    /// <inheritdoc/>
    public void Observe(PromptTrace finished)
    {
        ArgumentNullException.ThrowIfNull(finished);
        if (finished.NumLayers != _layers || finished.NumExperts != _experts)
            throw new ArgumentException($"trace has {finished.NumLayers} layers of {finished.NumExperts} experts, the predictor {_layers} of {_experts}");
        string key = finished.Task ?? "";
        var y = RoutingCounts.NormalizeRows(RoutingCounts.Count(finished));
        if (_history.ContainsKey(key)) _examples.Add((Features(key, finished), y));
        if (_examples.Count > _bufferSize) _examples.RemoveAt(0);
        if (!_history.TryGetValue(key, out var h)) _history[key] = h = FrequencyPredictor.Rows(_layers, _experts);
        for (int l = 0; l < _layers; l++)
        {
            for (int e = 0; e < _experts; e++) h[l][e] = _decay * h[l][e] + y[l][e];
        }
        Train();
    }

    private void Train()
    {
        var z = new double[_experts];
        for (int epoch = 0; epoch < _epochs; epoch++)
        {
            foreach (var (x, y) in _examples)
            {
                for (int l = 0; l < _layers; l++)
                {
                    Logits(l, x[l], z);
                    double max = z.Max(), sum = 0;
                    for (int e = 0; e < _experts; e++) sum += z[e] = Math.Exp(z[e] - max);
                    var w = _weights[l];
                    for (int e = 0; e < _experts; e++)
                    {
                        double g = _learningRate * (z[e] / sum - y[l][e]);
                        if (g == 0) continue;
                        var row = w[e];
                        var xl = x[l];
                        for (int j = 0; j < _features; j++) row[j] -= g * xl[j];
                    }
                }
            }
        }
    }

    /// <inheritdoc/>
    public ExpertScores Predict(string? task, PromptTrace? currentPrefix)
    {
        bool hasPrefix = currentPrefix is { Steps.Count: > 0 };
        if (!hasPrefix && !_history.ContainsKey(task ?? "")) return ExpertScores.Uniform(_layers, _experts);
        var x = Features(task, currentPrefix);
        var scores = FrequencyPredictor.Rows(_layers, _experts);
        for (int l = 0; l < _layers; l++) Logits(l, x[l], scores[l]);
        return new ExpertScores(scores);
    }
}
