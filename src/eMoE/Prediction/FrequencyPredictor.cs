using System.Globalization;

namespace eMoE.Prediction;

/// <summary>
/// Per task and layer, how often each expert was used by the task's earlier prompts, with
/// exponential decay across prompts (each prompt's usage normalised first, so long prompts do not
/// dominate). With the current prompt's prefill routing the prediction is the expected number of
/// token assignments over the whole prompt: the prefill's own assignments plus the task's average
/// decode length times its decode distribution. Optionally the decode distribution leans towards
/// the prefill's (all of it, or only its last tokens) by a per-task mix fitted online by least
/// squares on earlier prompts.
/// A task with no history falls back to all tasks' history, then to the prefill, then to uniform.
/// </summary>
public sealed class FrequencyPredictor : IExpertPredictor
{
    private sealed class History(int layers, int experts)
    {
        public readonly double[][] Full = Rows(layers, experts);
        public readonly double[][] Decode = Rows(layers, experts);
        public readonly double[][] Prefill = Rows(layers, experts);
        public readonly double[] LayerMixNumerator = new double[layers], LayerMixDenominator = new double[layers];
        public double Weight, DecodeTokens, MixNumerator, MixDenominator;
        public int Prompts;
    }

    private readonly Dictionary<string, History> _tasks = new(StringComparer.Ordinal);
    private History? _global;
    private readonly double _decay;
    private readonly int _layers, _experts;
    private readonly bool _usePrefill, _learnMix;
    private readonly int _recentTokens;
    private readonly bool _transfer, _mixPerLayer;

    /// <summary>
    /// A frequency predictor for a model of <paramref name="numLayers"/> MoE layers of
    /// <paramref name="numExperts"/> experts. <paramref name="decay"/> in (0, 1] multiplies the history before each
    /// new prompt is added (1 = plain counts). <paramref name="usePrefill"/> blends in the current
    /// prompt's prefill routing; <paramref name="learnMix"/> also fits how much the decode steps follow the prefill,
    /// or only its last <paramref name="recentTokens"/> tokens when positive. <paramref name="transfer"/> scales the
    /// task's decode distribution by how the prompt's prefill departs from the task's usual prefill
    /// (decode_e ∝ history_decode_e × (prefill_e + 1/E) / (history_prefill_e + 1/E)) instead of mixing.
    /// <paramref name="mixPerLayer"/> fits the mix per task and layer rather than per task.
    /// </summary>
    public FrequencyPredictor(int numLayers, int numExperts, double decay = 0.9, bool usePrefill = true, bool learnMix = false, int recentTokens = 0,
        bool transfer = false, bool mixPerLayer = false)
    {
        _mixPerLayer = mixPerLayer && learnMix;
        _transfer = transfer && usePrefill;
        _recentTokens = Math.Max(0, recentTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numLayers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numExperts);
        _layers = numLayers;
        _experts = numExperts;
        if (!(decay > 0 && decay <= 1)) throw new ArgumentOutOfRangeException(nameof(decay), "decay must be in (0, 1]");
        _decay = decay;
        _usePrefill = usePrefill;
        _learnMix = learnMix && usePrefill;
    }

    /// <inheritdoc/>
    public string Name => string.Create(CultureInfo.InvariantCulture,
        $"frequency (decay {_decay:0.##}{(_usePrefill ? ", + prefill" : "")}{(_learnMix ? ", learned mix" : "")}{(_learnMix && _recentTokens > 0 ? $" of last {_recentTokens} tokens" : "")}{(_mixPerLayer ? " per layer" : "")}{(_transfer ? ", prefill-to-decode transfer" : "")})");

    /// <inheritdoc/>
    public void Observe(PromptTrace finished)
    {
        ArgumentNullException.ThrowIfNull(finished);
        var full = RoutingCounts.NormalizeRows(RoutingCounts.Count(finished));
        var prefill = RecentPrefill(finished);
        var decode = RoutingCounts.NormalizeRows(RoutingCounts.Count(finished, 1));
        int decodeTokens = RoutingCounts.Tokens(finished, 1);
        string key = finished.Task ?? "";
        if (finished.NumLayers != _layers || finished.NumExperts != _experts)
            throw new ArgumentException($"trace has {finished.NumLayers} layers of {finished.NumExperts} experts, the predictor {_layers} of {_experts}");
        if (!_tasks.TryGetValue(key, out var task)) _tasks[key] = task = new History(_layers, _experts);
        _global ??= new History(_layers, _experts);
        Update(task, full, prefill, decode, decodeTokens);
        Update(_global, full, prefill, decode, decodeTokens);
    }

    private void Update(History h, double[][] full, double[][] prefill, double[][] decode, int decodeTokens)
    {
        if (_learnMix && h.Prompts > 0 && decodeTokens > 0)
        {
            // Least squares for decode ≈ mix * prefill + (1 - mix) * history, accumulated with the same decay.
            double num = 0, den = 0;
            for (int l = 0; l < decode.Length; l++)
            {
                double ln = 0, ld = 0;
                double sum = 0;
                foreach (double v in h.Decode[l]) sum += v;
                for (int e = 0; e < decode[l].Length; e++)
                {
                    double hist = sum > 0 ? h.Decode[l][e] / sum : 0;
                    ln += (decode[l][e] - hist) * (prefill[l][e] - hist);
                    ld += (prefill[l][e] - hist) * (prefill[l][e] - hist);
                }
                h.LayerMixNumerator[l] = _decay * h.LayerMixNumerator[l] + ln;
                h.LayerMixDenominator[l] = _decay * h.LayerMixDenominator[l] + ld;
                num += ln;
                den += ld;
            }
            h.MixNumerator = _decay * h.MixNumerator + num;
            h.MixDenominator = _decay * h.MixDenominator + den;
        }
        for (int l = 0; l < full.Length; l++)
        {
            for (int e = 0; e < full[l].Length; e++)
            {
                h.Full[l][e] = _decay * h.Full[l][e] + full[l][e];
                h.Decode[l][e] = _decay * h.Decode[l][e] + decode[l][e];
                h.Prefill[l][e] = _decay * h.Prefill[l][e] + prefill[l][e];
            }
        }
        h.Weight = _decay * h.Weight + 1;
        h.DecodeTokens = _decay * h.DecodeTokens + decodeTokens;
        h.Prompts++;
    }

    /// <summary>The fitted share of the prefill in the decode distribution of <paramref name="task"/> (0 when not learned).</summary>
    public double Mix(string? task) => _tasks.TryGetValue(task ?? "", out var h) ? MixOf(h) : 0;

    private double MixOf(History h) => _learnMix && h.MixDenominator > 0 ? Math.Clamp(h.MixNumerator / h.MixDenominator, 0, 1) : 0;

    private double MixOf(History h, int layer) => !_mixPerLayer ? MixOf(h)
        : h.LayerMixDenominator[layer] > 0 ? Math.Clamp(h.LayerMixNumerator[layer] / h.LayerMixDenominator[layer], 0, 1) : 0;

    /// <inheritdoc/>
    public ExpertScores Predict(string? task, PromptTrace? currentPrefix)
    {
        var h = _tasks.TryGetValue(task ?? "", out var t) && t.Prompts > 0 ? t : _global;
        var prefix = _usePrefill && currentPrefix is { Steps.Count: > 0 } ? currentPrefix : null;
        if (h is null)
        {
            if (prefix is null) return ExpertScores.Uniform(_layers, _experts);
            var own = Rows(_layers, _experts);
            RoutingCounts.AddTo(own, prefix, 0, int.MaxValue, 1.0);
            return new ExpertScores(own);
        }
        int layers = _layers, experts = _experts;
        var scores = Rows(layers, experts);
        if (prefix is null)
        {
            for (int l = 0; l < layers; l++) Array.Copy(h.Full[l], scores[l], experts);
            return new ExpertScores(scores);
        }
        // Expected assignments over the whole prompt: the prefill's own plus the expected decode.
        RoutingCounts.AddTo(scores, prefix, 0, int.MaxValue, 1.0);
        int topK = Math.Max(1, prefix.TopK);
        double decodeAssignments = h.DecodeTokens / h.Weight * topK;
        double mix = MixOf(h);
        var recent = mix > 0 || _mixPerLayer || _transfer ? RecentPrefill(prefix) : null;
        if (_transfer && recent is not null)
        {
            for (int l = 0; l < layers; l++)
            {
                double hs = 0, ps = 0, total = 0;
                foreach (double v in h.Decode[l]) hs += v;
                foreach (double v in h.Prefill[l]) ps += v;
                if (hs <= 0 || ps <= 0) continue;
                var est = new double[experts];
                for (int e = 0; e < experts; e++)
                {
                    est[e] = h.Decode[l][e] / hs * (recent[l][e] + 1.0 / experts) / (h.Prefill[l][e] / ps + 1.0 / experts);
                    total += est[e];
                }
                for (int e = 0; e < experts; e++) scores[l][e] += decodeAssignments * est[e] / total;
            }
            return new ExpertScores(scores);
        }
        for (int l = 0; l < layers; l++)
        {
            double hs = 0;
            foreach (double v in h.Decode[l]) hs += v;
            if (hs <= 0) continue;
            mix = MixOf(h, l);
            double historyScale = (1 - mix) * decodeAssignments / hs, prefillScale = mix * decodeAssignments;
            var row = scores[l];
            var hist = h.Decode[l];
            for (int e = 0; e < experts; e++) row[e] += historyScale * hist[e] + (recent is null ? 0 : prefillScale * recent[l][e]);
        }
        return new ExpertScores(scores);
    }

    /// <summary>The routing distribution of the prefill step's last <c>recentTokens</c> tokens (all of them when 0), per layer.</summary>
    private double[][] RecentPrefill(PromptTrace trace)
    {
        var counts = Rows(_layers, _experts);
        if (trace.Steps.Count == 0) return counts;
        var step = trace.Steps[0];
        int k = Math.Max(1, trace.TopK);
        int skip = _recentTokens > 0 ? Math.Max(0, step.Tokens - _recentTokens) * k : 0;
        for (int l = 0; l < _layers && l < step.Experts.Length; l++)
        {
            var ids = step.Experts[l];
            for (int i = skip; i < ids.Length; i++)
            {
                if ((uint)ids[i] < (uint)_experts) counts[l][ids[i]] += 1;
            }
        }
        return RoutingCounts.NormalizeRows(counts);
    }

    internal static double[][] Rows(int layers, int experts)
    {
        var r = new double[layers][];
        for (int l = 0; l < layers; l++) r[l] = new double[experts];
        return r;
    }
}
