using System.Diagnostics;

namespace eMoE.Prediction;

/// <summary>Prediction quality for one task (or all prompts together), averaged over the prompts evaluated.</summary>
public sealed class PredictionMetrics
{
    /// <summary>The task, or "all".</summary>
    public required string Task { get; init; }
    /// <summary>Prompts scored (every prompt of the task but its first, which has no history).</summary>
    public int Prompts { get; init; }
    /// <summary>
    /// Mean over prompts and layers of |predicted top-k ∩ the prompt's own k most-used experts| / k
    /// (precision = recall = F1, since both sets have k members).
    /// </summary>
    public double F1 { get; init; }
    /// <summary>Per budget: share of the prompt's token-to-expert assignments landing on the predicted top-n per layer.</summary>
    public required double[] Coverage { get; init; }
    /// <summary>Per budget: the same for the prompt's own n most-used experts per layer (the bound).</summary>
    public required double[] OracleCoverage { get; init; }
    /// <summary>Per budget: the same for the globally most-used experts of every earlier prompt (all tasks).</summary>
    public required double[] StaticCoverage { get; init; }
    /// <summary>F1 of the static set's top-k.</summary>
    public double StaticF1 { get; init; }
    /// <summary>F1 against the decode steps alone (the prompt's k most-used experts after its prefill): what the prefill does not give away.</summary>
    public double DecodeF1 { get; init; }
    /// <summary>Per budget: coverage of the decode steps' assignments alone.</summary>
    public required double[] DecodeCoverage { get; init; }
    /// <summary>Per budget: the oracle's coverage of the decode steps (their own most-used n).</summary>
    public required double[] DecodeOracleCoverage { get; init; }
}

/// <summary>The evaluation of one predictor over a stream of prompts.</summary>
public sealed class PredictionEvaluation
{
    /// <summary>The predictor's name.</summary>
    public required string Predictor { get; init; }
    /// <summary>Budgets as fractions of a layer's experts; n = round(fraction * experts).</summary>
    public required double[] Budgets { get; init; }
    /// <summary>Per task, in order of first appearance.</summary>
    public required IReadOnlyList<PredictionMetrics> Tasks { get; init; }
    /// <summary>All scored prompts together.</summary>
    public required PredictionMetrics Overall { get; init; }
    /// <summary>Mean wall time of one Predict call during the evaluation, microseconds (includes the first, cold calls).</summary>
    public double PredictMicroseconds { get; init; }
}

/// <summary>
/// Replays a stream of routing traces in arrival order (tasks interleaved): before each prompt the
/// predictor sees only the earlier prompts and the prompt's own prefill step; its prediction is
/// scored against the prompt's routing over all its steps; then the prompt is observed.
/// </summary>
public static class PredictionEvaluator
{
    /// <summary>The budgets reported by default: 25%, 50% and 75% of a layer's experts.</summary>
    public static IReadOnlyList<double> DefaultBudgets { get; } = [0.25, 0.5, 0.75];

    private sealed class Sums(int budgets)
    {
        public int Prompts;
        public double F1, StaticF1, DecodeF1;
        public readonly double[] Coverage = new double[budgets], Oracle = new double[budgets], Static = new double[budgets];
        public readonly double[] DecodeCoverage = new double[budgets], DecodeOracle = new double[budgets];

        public PredictionMetrics ToMetrics(string task)
        {
            double n = Math.Max(1, Prompts);
            return new PredictionMetrics
            {
                Task = task,
                Prompts = Prompts,
                F1 = F1 / n,
                StaticF1 = StaticF1 / n,
                Coverage = Coverage.Select(c => c / n).ToArray(),
                OracleCoverage = Oracle.Select(c => c / n).ToArray(),
                StaticCoverage = Static.Select(c => c / n).ToArray(),
                DecodeF1 = DecodeF1 / n,
                DecodeCoverage = DecodeCoverage.Select(c => c / n).ToArray(),
                DecodeOracleCoverage = DecodeOracle.Select(c => c / n).ToArray(),
            };
        }
    }

    /// <summary>Evaluates <paramref name="predictor"/> (fresh, untrained) over <paramref name="stream"/>.</summary>
    public static PredictionEvaluation Evaluate(IReadOnlyList<PromptTrace> stream, IExpertPredictor predictor, IReadOnlyList<double>? budgets = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(predictor);
        var fractions = (budgets ?? DefaultBudgets).ToArray();
        if (stream.Count == 0) throw new ArgumentException("no prompts to evaluate", nameof(stream));
        int layers = stream[0].NumLayers, experts = stream[0].NumExperts;
        var staticSet = new StaticPredictor(layers, experts);
        var perTask = new Dictionary<string, Sums>(StringComparer.Ordinal);
        var order = new List<string>();
        var all = new Sums(fractions.Length);
        long ticks = 0;
        int calls = 0;
        foreach (var trace in stream)
        {
            if (trace.NumLayers != layers || trace.NumExperts != experts)
                throw new ArgumentException($"prompt {trace.Prompt}: {trace.NumLayers} layers of {trace.NumExperts} experts, the stream started with {layers} of {experts}");
            string task = trace.Task ?? "";
            bool seen = perTask.TryGetValue(task, out var sums);
            if (!seen)
            {
                perTask[task] = sums = new Sums(fractions.Length);
                order.Add(task);
            }
            var prefix = RoutingCounts.Prefill(trace);
            long t0 = Stopwatch.GetTimestamp();
            var predicted = predictor.Predict(trace.Task, prefix);
            ticks += Stopwatch.GetTimestamp() - t0;
            calls++;
            if (seen)
            {
                var target = RoutingCounts.Count(trace);
                var targetScores = new ExpertScores(target);
                var decode = RoutingCounts.Count(trace, 1);
                var decodeScores = new ExpertScores(decode);
                var stat = staticSet.Predict(trace.Task, prefix);
                int k = Math.Clamp(trace.TopK, 1, experts);
                double f1 = 0, sf1 = 0, df1 = 0;
                for (int l = 0; l < layers; l++)
                {
                    var truth = targetScores.TopK(l, k);
                    f1 += Overlap(predicted.TopK(l, k), truth) / (double)k;
                    sf1 += Overlap(stat.TopK(l, k), truth) / (double)k;
                    df1 += Overlap(predicted.TopK(l, k), decodeScores.TopK(l, k)) / (double)k;
                }
                foreach (var s in new[] { sums!, all })
                {
                    s.Prompts++;
                    s.F1 += f1 / layers;
                    s.StaticF1 += sf1 / layers;
                    s.DecodeF1 += df1 / layers;
                }
                for (int b = 0; b < fractions.Length; b++)
                {
                    int n = ExpertScores.ExpertsAtBudget(fractions[b], experts);
                    double c = Coverage(target, predicted, n), o = Coverage(target, targetScores, n), st = Coverage(target, stat, n);
                    double dc = Coverage(decode, predicted, n), dor = Coverage(decode, decodeScores, n);
                    foreach (var s in new[] { sums!, all })
                    {
                        s.DecodeCoverage[b] += dc;
                        s.DecodeOracle[b] += dor;
                        s.Coverage[b] += c;
                        s.Oracle[b] += o;
                        s.Static[b] += st;
                    }
                }
            }
            predictor.Observe(trace);
            staticSet.Observe(trace);
        }
        return new PredictionEvaluation
        {
            Predictor = predictor.Name,
            Budgets = fractions,
            Tasks = order.Select(t => perTask[t].ToMetrics(t.Length == 0 ? "(none)" : t)).ToList(),
            Overall = all.ToMetrics("all"),
            PredictMicroseconds = ticks * 1e6 / Stopwatch.Frequency / Math.Max(1, calls),
        };
    }

    /// <summary>
    /// Share of the assignments in <paramref name="counts"/> ([layer][expert]) that land on the
    /// top <paramref name="n"/> experts per layer of <paramref name="scores"/>, over all layers.
    /// </summary>
    public static double Coverage(double[][] counts, ExpertScores scores, int n)
    {
        ArgumentNullException.ThrowIfNull(counts);
        ArgumentNullException.ThrowIfNull(scores);
        double covered = 0, total = 0;
        for (int l = 0; l < counts.Length; l++)
        {
            foreach (int e in scores.TopN(l, n)) covered += counts[l][e];
            foreach (double v in counts[l]) total += v;
        }
        return total > 0 ? covered / total : 0;
    }

    private static int Overlap(int[] a, int[] b)
    {
        int n = 0;
        foreach (int x in a)
        {
            if (Array.IndexOf(b, x) >= 0) n++;
        }
        return n;
    }

    /// <summary>
    /// Mean microseconds of one Predict call of an already trained <paramref name="predictor"/>,
    /// over <paramref name="invocations"/> calls cycling through <paramref name="prompts"/> (each with
    /// its task and prefill), after a warm-up (so tiered JIT has settled): the fastest of twenty rounds.
    /// </summary>
    public static double MeasurePredictMicroseconds(IExpertPredictor predictor, IReadOnlyList<PromptTrace> prompts, int invocations = 10_000)
    {
        ArgumentNullException.ThrowIfNull(predictor);
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) return 0;
        var inputs = prompts.Select(p => (p.Task, Prefix: RoutingCounts.Prefill(p))).ToArray();
        for (int i = 0; i < Math.Min(invocations, 5000); i++) predictor.Predict(inputs[i % inputs.Length].Task, inputs[i % inputs.Length].Prefix);
        // Twenty rounds of invocations / 20 calls; the fastest round (the machine is shared, so slower rounds are mostly noise).
        int perRound = Math.Max(1, invocations / 20);
        double best = double.MaxValue;
        for (int round = 0; round < 20; round++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < perRound; i++) predictor.Predict(inputs[i % inputs.Length].Task, inputs[i % inputs.Length].Prefix);
            best = Math.Min(best, (Stopwatch.GetTimestamp() - t0) * 1e6 / Stopwatch.Frequency / perRound);
        }
        return best;
    }
}
