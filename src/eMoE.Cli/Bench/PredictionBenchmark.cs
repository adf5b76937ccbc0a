using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Prediction;

namespace eMoE.Cli.Bench;

/// <summary>
/// `emoe bench prediction`: every expert predictor design over a recorded routing trace (the
/// trace.jsonl `emoe bench residency` writes), prompts in arrival order: eMoE's top-k accuracy per
/// task, coverage at 25/50/75% of a layer's experts beside the oracle and the static set, the best
/// design invoked every N prompts, and the cost of one prediction.
/// </summary>
internal sealed class PredictionBenchmark(string tracePath, int timingInvocations, TextWriter log)
{
    private static readonly int[] Periods = [1, 5, 10, 20, 40];
    private const double F1Target = 0.85, CoverageGapTarget = 0.05;

    private sealed record Design(string Name, Func<IExpertPredictor> Create, bool UsesPrefill);

    public string Run(string outDirectory)
    {
        if (!File.Exists(tracePath)) throw new CliException($"{tracePath}: no such trace file");
        var stream = PromptTrace.ReadAll(tracePath);
        if (stream.Count == 0) throw new CliException($"{tracePath}: no prompts");
        if (stream.Any(t => string.IsNullOrEmpty(t.Task))) log.WriteLine("warning: some prompts have no task; they are grouped as one task");
        int layers = stream[0].NumLayers, experts = stream[0].NumExperts, topK = stream[0].TopK;
        log.WriteLine($"{stream.Count} prompts, {layers} layers x {experts} experts, top-{topK}");

        var designs = new List<Design>
        {
            new("static", () => new StaticPredictor(layers, experts), false),
            new("prefill", () => new PrefillPredictor(layers, experts), true),
            new("freq-0.5", () => new FrequencyPredictor(layers, experts, 0.5, usePrefill: false), false),
            new("freq-0.9", () => new FrequencyPredictor(layers, experts, 0.9, usePrefill: false), false),
            new("freq-1", () => new FrequencyPredictor(layers, experts, 1.0, usePrefill: false), false),
            new("freq-0.9+prefill", () => new FrequencyPredictor(layers, experts, 0.9, usePrefill: true), true),
            new("freq-0.9+prefill+mix", () => new FrequencyPredictor(layers, experts, 0.9, usePrefill: true, learnMix: true), true),
            new("freq-0.9+prefill+mix-last16", () => new FrequencyPredictor(layers, experts, 0.9, usePrefill: true, learnMix: true, recentTokens: 16), true),
            new("freq-0.5+prefill+mix", () => new FrequencyPredictor(layers, experts, 0.5, usePrefill: true, learnMix: true), true),
            new("freq-1+prefill+mix", () => new FrequencyPredictor(layers, experts, 1.0, usePrefill: true, learnMix: true), true),
            new("freq-0.9+prefill+mix-per-layer", () => new FrequencyPredictor(layers, experts, 0.9, usePrefill: true, learnMix: true, mixPerLayer: true), true),
            new("freq-0.9+prefill+transfer", () => new FrequencyPredictor(layers, experts, 0.9, usePrefill: true, transfer: true), true),
            new("markov-0.9", () => new MarkovPredictor(layers, experts, 0.9, usePrefill: false), false),
            new("markov-0.9+prefill", () => new MarkovPredictor(layers, experts, 0.9, usePrefill: true), true),
            new("logistic", () => new LogisticPredictor(layers, experts), true),
        };

        var results = new List<(Design Design, PredictionEvaluation Eval, double PredictUs, double ObserveUs)>();
        foreach (var d in designs)
        {
            var eval = PredictionEvaluator.Evaluate(stream, d.Create());
            var trained = d.Create();
            long t0 = Stopwatch.GetTimestamp();
            foreach (var t in stream) trained.Observe(t);
            double observeUs = (Stopwatch.GetTimestamp() - t0) * 1e6 / Stopwatch.Frequency / stream.Count;
            double predictUs = PredictionEvaluator.MeasurePredictMicroseconds(trained, stream, timingInvocations);
            results.Add((d, eval, predictUs, observeUs));
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{eval.Predictor}: F1 {eval.Overall.F1:0.000}, coverage@50% {eval.Overall.Coverage[1]:P1} (oracle {eval.Overall.OracleCoverage[1]:P1}), predict {predictUs:0.0} us"));
        }
        // Keep the best by measurement: mean F1 over prompts, coverage at 50% to break ties; the static set is a baseline only.
        var best = results.Where(r => r.Design.Name != "static")
            .OrderByDescending(r => Math.Round(r.Eval.Overall.F1, 4)).ThenByDescending(r => r.Eval.Overall.Coverage[1]).First();

        // Periodic invocation of the best design, and of the best one that does not read the current
        // prompt (a reused prediction of a prefill-reading design carries an older prompt's prefill).
        var bestHistory = results.Where(r => r.Design.Name != "static" && !r.Design.UsesPrefill)
            .OrderByDescending(r => Math.Round(r.Eval.Overall.F1, 4)).ThenByDescending(r => r.Eval.Overall.Coverage[1]).First();
        var periodic = new List<(string Inner, int N, PredictionEvaluation Eval, int Invocations)>();
        foreach (var inner in new[] { best, bestHistory }.Distinct())
        {
            foreach (int n in Periods)
            {
                var wrapper = new PeriodicPredictor(inner.Design.Create(), n, layers, experts);
                var eval = PredictionEvaluator.Evaluate(stream, wrapper);
                periodic.Add((inner.Eval.Predictor, n, eval, wrapper.Invocations));
            }
        }

        var (forward, model) = RecordingRun(stream);
        string table = Markdown(stream, model, results, best.Design.Name, periodic, forward);
        Directory.CreateDirectory(outDirectory);
        var json = new Dictionary<string, object?>
        {
            ["trace"] = tracePath,
            ["prompts"] = stream.Count,
            ["layers"] = layers,
            ["experts"] = experts,
            ["top_k"] = topK,
            ["scoring"] = "every prompt but the first of its task; F1 = |predicted top-k ∩ prompt's k most-used| / k per layer; coverage = share of token assignments on the predicted top-n per layer",
            ["budgets"] = PredictionEvaluator.DefaultBudgets,
            ["best"] = best.Design.Name,
            ["prompt_decode_ms_estimate"] = forward,
            ["designs"] = results.Select(r => new Dictionary<string, object>
            {
                ["id"] = r.Design.Name,
                ["name"] = r.Eval.Predictor,
                ["predict_us"] = r.PredictUs,
                ["observe_us"] = r.ObserveUs,
                ["overall"] = r.Eval.Overall,
                ["tasks"] = r.Eval.Tasks,
            }).ToList(),
            ["periodic"] = periodic.Select(p => new Dictionary<string, object>
            {
                ["every_n"] = p.N,
                ["inner"] = best.Design.Name,
                ["invocations"] = p.Invocations,
                ["overall"] = p.Eval.Overall,
                ["tasks"] = p.Eval.Tasks,
            }).ToList(),
        };
        File.WriteAllText(Path.Combine(outDirectory, "results.json"), JsonSerializer.Serialize(json, new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), table);
        return table;
    }

    /// <summary>
    /// From the results.json `emoe bench residency` wrote beside the trace, if there: the model, and
    /// the mean decode time of one prompt (decode tokens per prompt / all-resident decode tokens per second).
    /// </summary>
    private (double? PromptDecodeMs, string? Model) RecordingRun(List<PromptTrace> stream)
    {
        string path = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tracePath)) ?? ".", "results.json");
        if (!File.Exists(path)) return (null, null);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            string? model = doc.RootElement.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
            if (!doc.RootElement.TryGetProperty("all_resident_decode_tokens_per_second", out var rate) || rate.GetDouble() <= 0) return (null, model);
            double decodeTokens = stream.Average(t => (double)RoutingCounts.Tokens(t, 1));
            return (decodeTokens / rate.GetDouble() * 1000, model);
        }
        catch (JsonException)
        {
            return (null, null);
        }
    }

    private static string Markdown(List<PromptTrace> stream, string? model, List<(Design Design, PredictionEvaluation Eval, double PredictUs, double ObserveUs)> results,
        string best, List<(string Inner, int N, PredictionEvaluation Eval, int Invocations)> periodic, double? forwardMs)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        var tasks = results[0].Eval.Tasks.Select(t => t.Task).ToList();
        var bestEval = results.First(r => r.Design.Name == best);
        if (model is not null) sb.AppendLine(inv, $"Model: `{model}` (from the residency run that recorded the trace).").AppendLine();
        sb.AppendLine(inv, $"Trace: {stream.Count} prompts in arrival order (tasks interleaved), {stream[0].NumLayers} MoE layers x {stream[0].NumExperts} experts, top-{stream[0].TopK}. " +
            $"Each prompt is scored against its routing over all its steps (prefill + decode) with the predictor having seen only earlier prompts and, where the design uses it, the prompt's prefill step; " +
            $"the first prompt of each task (no history) is not scored ({bestEval.Eval.Overall.Prompts} prompts scored).");
        sb.AppendLine();
        sb.AppendLine("F1 (= precision = recall): predicted top-k vs the prompt's own k most-used experts per layer, mean over prompts and layers. " +
            "Decode-only columns score the same prediction against the decode steps alone (the part of the prompt a prefill-reading design has not seen). " +
            "Predict cost: fastest of twenty rounds of calls on the trained predictor; observe cost: mean per finished prompt; wall time on this (shared, 2-core) machine.");
        sb.AppendLine();
        sb.AppendLine("| design | " + string.Join(" | ", tasks) + " | all | coverage@50% (all) | decode-only F1 (all) | decode-only coverage@50% (all; oracle) | predict µs | observe µs |");
        sb.AppendLine("|---|" + string.Concat(Enumerable.Repeat("---|", tasks.Count + 6)));
        foreach (var r in results)
        {
            string name = r.Design.Name == best ? $"**{r.Eval.Predictor}** (best)" : r.Eval.Predictor;
            string perTask = string.Join(" | ", r.Eval.Tasks.Select(t => t.F1.ToString("0.000", inv)));
            sb.AppendLine(inv, $"| {name} | {perTask} | {r.Eval.Overall.F1:0.000} | {r.Eval.Overall.Coverage[1]:P1} | {r.Eval.Overall.DecodeF1:0.000} | {r.Eval.Overall.DecodeCoverage[1]:P1} ({r.Eval.Overall.DecodeOracleCoverage[1]:P1}) | {r.PredictUs:0.0} | {r.ObserveUs:0.0} |");
        }
        sb.AppendLine();
        sb.AppendLine(inv, $"Coverage: share of each prompt's token-to-expert assignments that land on the n experts per layer the design keeps (n = round(budget x {stream[0].NumExperts})), best design ({bestEval.Eval.Predictor}) vs the prompt's own most-used n (oracle) vs the most-used n over all earlier prompts of all tasks (static).");
        sb.AppendLine();
        sb.AppendLine("| task | 25% best | 25% oracle | 25% static | 50% best | 50% oracle | 50% static | 75% best | 75% oracle | 75% static | gap to oracle @50% |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var t in bestEval.Eval.Tasks.Append(bestEval.Eval.Overall))
        {
            sb.Append(inv, $"| {t.Task} |");
            for (int b = 0; b < t.Coverage.Length; b++) sb.Append(inv, $" {t.Coverage[b]:P1} | {t.OracleCoverage[b]:P1} | {t.StaticCoverage[b]:P1} |");
            sb.AppendLine(inv, $" {(t.OracleCoverage[1] - t.Coverage[1]) * 100:0.0} points |");
        }
        sb.AppendLine();
        sb.AppendLine("Periodic invocation of the best design and of the best design that does not read the current prompt: the predictor runs at a task's prompts 1, 1+N, 1+2N, ... (prompt 0 of a task has no history: uniform, not scored) and its last prediction is reused in between (for a prefill-reading design, with the older prompt's prefill in it).");
        sb.AppendLine();
        sb.AppendLine("| inner design | N | invocations | " + string.Join(" | ", tasks.Select(t => $"{t} F1")) + " | all F1 | all coverage@50% |");
        sb.AppendLine("|---|---|---|" + string.Concat(Enumerable.Repeat("---|", tasks.Count + 2)));
        foreach (var p in periodic)
        {
            string perTask = string.Join(" | ", p.Eval.Tasks.Select(t => t.F1.ToString("0.000", inv)));
            sb.AppendLine(inv, $"| {p.Inner} | {p.N} | {p.Invocations} | {perTask} | {p.Eval.Overall.F1:0.000} | {p.Eval.Overall.Coverage[1]:P1} |");
        }
        sb.AppendLine();
        sb.AppendLine("Targets (issue): F1 >= 0.85 per task; coverage at 50% within 5 points of the oracle.");
        sb.AppendLine();
        foreach (var t in bestEval.Eval.Tasks)
        {
            double gap = t.OracleCoverage[1] - t.Coverage[1];
            sb.AppendLine(inv, $"- {t.Task}: F1 {t.F1:0.000} ({(t.F1 >= F1Target ? "met" : "NOT met")}), coverage@50% gap {gap * 100:0.0} points ({(gap <= CoverageGapTarget ? "met" : "NOT met")})");
        }
        sb.AppendLine();
        string cost = forwardMs is double ms
            ? string.Create(inv, $"{bestEval.PredictUs:0.0} µs per prediction = {bestEval.PredictUs / 10 / ms:0.#####}% of a prompt's mean decode time in the recording run ({ms:0.0} ms)")
            : string.Create(inv, $"{bestEval.PredictUs:0.0} µs per prediction (no results.json beside the trace to compare with the forward time)");
        sb.AppendLine(inv, $"Predictor cost (best design): {cost}; observing a finished prompt {bestEval.ObserveUs:0.0} µs.");
        return sb.ToString();
    }
}
