using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Model;
using eMoE.Prediction;

namespace eMoE.Cli.Bench;

/// <summary>What `emoe bench engine` runs.</summary>
/// <param name="PromptsPerTask">Evaluation prompts per task in the stream.</param>
/// <param name="TextTokens">Tokens of each task's test text scored per configuration.</param>
/// <param name="LayerProfile">Layer sensitivity profile for the predictor, or none.</param>
/// <param name="PregateWidth">Experts per token the pre-gate prefetches.</param>
/// <param name="FittedPregate">Fitted pre-gates, or null for the training-free pre-gate.</param>
/// <param name="Modes">Missing-expert modes to run.</param>
/// <param name="PredictorOnly">Run only the predictor configurations.</param>
/// <param name="RerouteMaxWeight">In reroute mode, also run the predictor loading absent experts weighted above this; null: not run.</param>
/// <param name="Budgets">Fractions of expert bytes to run, ascending.</param>
internal sealed record EngineBenchOptions(int PromptsPerTask, int TextTokens, LayerSensitivityProfile? LayerProfile, int PregateWidth,
    FittedPregate? FittedPregate, IReadOnlySet<MissMode> Modes, bool PredictorOnly, float? RerouteMaxWeight, IReadOnlyList<double> Budgets);

/// <summary>
/// `emoe bench engine`: the real engine on a stream of evaluation prompts (tasks interleaved,
/// greedy), then the held-out test text of every task, for each {LRU, LIFO-inactive-first,
/// predictor, predictor + pre-gate} x {load, reroute} x budget: hit rate, bytes copied per token,
/// stall time, greedy agreement with all-resident and perplexity relative to all-resident; the
/// Belady bound for the demand-only policies; and the predictor run every N prompts.
/// </summary>
internal sealed class QualityBenchmark(string modelDirectory, DeviceSpec device, EngineBenchOptions options, TextWriter log)
{
    private static readonly int[] Periods = [1, 5, 10, 20, 40];

    private sealed record Config(string Name, EvictionPolicyKind Policy, bool Predict, bool Pregate, float? RerouteMaxWeight = null);

    private static readonly Config[] Configs =
    [
        new("LRU", EvictionPolicyKind.Lru, false, false),
        new("LIFO-inactive-first", EvictionPolicyKind.LifoInactiveFirst, false, false),
        new("predictor", EvictionPolicyKind.Predicted, true, false),
        new("predictor + pre-gate", EvictionPolicyKind.Predicted, true, true),
    ];

    /// <summary>The configurations of a mode: in reroute mode with a weight limit, also the predictor under that limit.</summary>
    private IEnumerable<Config> ConfigsFor(MissMode mode) =>
        mode == MissMode.Reroute && options.RerouteMaxWeight is float limit
            ? Configs.Append(Configs[2] with { Name = string.Create(CultureInfo.InvariantCulture, $"predictor, reroute weight <= {limit}"), RerouteMaxWeight = limit })
            : Configs;

    /// <summary>What one configuration did over the stream and the test texts.</summary>
    private sealed record Outcome(List<List<int>> Outputs, List<PromptTrace> Traces, long StreamTokens, ResidencyStats Stream,
        Dictionary<string, double> Perplexity, int PredictorRuns, double PredictSeconds);

    public async Task<string> RunAsync(string outDirectory, CancellationToken cancel)
    {
        var prompts = EvalPrompts.LoadInterleaved(modelDirectory, options.PromptsPerTask);
        var texts = TestTexts();
        log.WriteLine($"{prompts.Count} prompts ({options.PromptsPerTask} per task), {options.TextTokens} test tokens per task, device {device}");
        var reference = await RunConfig(ExpertBudget.All, Configs[0], MissMode.Load, 1, prompts, texts, cancel);
        var rows = new List<Dictionary<string, object>>();
        long expertBytes = reference.Stream.ExpertBytes;
        int totalExperts = reference.Stream.TotalExperts;
        int topK = reference.Traces[0].TopK;

        foreach (double budget in options.Budgets)
        {
            int slots = ExpertBudget.FromFraction(budget).SlotCount(expertBytes, totalExperts, topK);
            var belady = CacheSimulator.Run(reference.Traces, slots, EvictionPolicyKind.Belady, expertBytes);
            rows.Add(Row(budget, slots, "Belady bound (simulated)", "load", 1, null, reference, belady.HitRate, (double)belady.BytesCopied / reference.StreamTokens));
            foreach (var mode in new[] { MissMode.Load, MissMode.Reroute }.Where(options.Modes.Contains))
            {
                foreach (var config in ConfigsFor(mode).Where(c => c.Predict || !options.PredictorOnly))
                {
                    var outcome = await RunConfig(ExpertBudget.FromFraction(budget), config, mode, 1, prompts, texts, cancel);
                    rows.Add(Row(budget, slots, config.Name, mode.ToString().ToLowerInvariant(), 1, outcome, reference));
                    log.WriteLine(Describe(rows[^1]));
                }
            }
        }
        foreach (var (budget, mode) in new[] { (0.5, MissMode.Load), (0.6, MissMode.Reroute) }.Where(p => options.Modes.Contains(p.Item2) && options.Budgets.Contains(p.Item1)))
        {
            int slots = ExpertBudget.FromFraction(budget).SlotCount(expertBytes, totalExperts, topK);
            foreach (int n in Periods)
            {
                var outcome = await RunConfig(ExpertBudget.FromFraction(budget), Configs[2], mode, n, prompts, texts, cancel);
                rows.Add(Row(budget, slots, $"predictor every {n}", mode.ToString().ToLowerInvariant(), n, outcome, reference));
                log.WriteLine(Describe(rows[^1]));
            }
        }

        Directory.CreateDirectory(outDirectory);
        var result = new Dictionary<string, object>
        {
            ["model"] = modelDirectory, ["device"] = device.ToString(), ["prompts"] = prompts.Count, ["stream_tokens"] = reference.StreamTokens,
            ["test_tokens_per_task"] = options.TextTokens, ["layer_profile"] = options.LayerProfile is not null, ["pregate_width"] = options.PregateWidth,
            ["pregate"] = options.FittedPregate is null ? "training-free" : "fitted",
            ["reroute_max_weight"] = options.RerouteMaxWeight is float w ? w : "none",
            ["all_resident_perplexity"] = reference.Perplexity, ["rows"] = rows,
        };
        File.WriteAllText(Path.Combine(outDirectory, "results.json"), JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
        var matrix = rows.Where(r => (int)r["predict_every"] == 1 && !((string)r["config"]).StartsWith("predictor every", StringComparison.Ordinal)).ToList();
        if (options.Modes.Contains(MissMode.Reroute) && !options.PredictorOnly)
        {
            File.WriteAllText(Path.Combine(outDirectory, "perplexity.svg"), SvgChart.GroupedBars(
            "Worst-task perplexity change vs all-resident, reroute mode", "perplexity +%",
            options.Budgets.Select(b => b.ToString("P0", CultureInfo.InvariantCulture)).ToList(),
            Configs.Select(c => (c.Name, options.Budgets.Select(b => 100 * (double)matrix.First(r => (double)r["budget"] == b && (string)r["config"] == c.Name && (string)r["mode"] == "reroute")["worst_perplexity_change"]).ToArray())).ToList(),
            100 * matrix.Where(r => (string)r["mode"] == "reroute").Max(r => (double)r["worst_perplexity_change"])));
        }
        string table = Markdown(rows, reference, prompts.Count, options);
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), table);
        return table;
    }

    /// <summary>The first <see cref="EngineBenchOptions.TextTokens"/> tokens of each task's held-out test text, encoded once for every configuration.</summary>
    private Dictionary<string, int[]> TestTexts()
    {
        var tokenizer = MoeTokenizer.Load(modelDirectory);
        return EvalPrompts.TestTexts(modelDirectory).ToDictionary(
            t => t.Task, t => tokenizer.Encode(File.ReadAllText(t.File), addSpecialTokens: false).Take(options.TextTokens).ToArray());
    }

    private async Task<Outcome> RunConfig(ExpertBudget budget, Config config, MissMode mode, int every, List<EvalPrompt> prompts,
        Dictionary<string, int[]> texts, CancellationToken cancel)
    {
        var modelOptions = new ModelOptions
        {
            Device = device,
            Experts = new ExpertCacheOptions
            {
                Budget = budget, Policy = config.Policy, OnMiss = mode, Pregate = config.Pregate, RerouteMaxWeight = config.RerouteMaxWeight,
                PregateWidth = config.Pregate ? options.PregateWidth : null,
                FittedPregate = config.Pregate ? options.FittedPregate : null,
            },
            Prediction = config.Predict ? new PredictionOptions { PredictEvery = every, LayerProfile = options.LayerProfile } : null,
        };
        using var model = MoeModel.Load(modelDirectory, modelOptions);
        var outputs = new List<List<int>>();
        var traces = new List<PromptTrace>();
        long tokens = 0;
        foreach (var prompt in prompts)
        {
            var generation = model.Generate(prompt.Prompt, new GenerationOptions
            {
                MaxTokens = prompt.MaxTokens, StopAtEndOfSequence = false, RecordRouting = true, Task = prompt.Task,
            });
            var ids = new List<int>();
            await foreach (var token in generation.WithCancellation(cancel)) ids.Add(token.Id);
            outputs.Add(ids);
            traces.Add(generation.Stats.Trace!);
            tokens += generation.Stats.PromptTokens + Math.Max(0, generation.Stats.GeneratedTokens - 1);
        }
        var stream = model.ExpertStats;
        var perplexity = new Dictionary<string, double>();
        foreach (var (task, ids) in texts)
            perplexity[task] = model.ScorePerplexity(ids, new PerplexityOptions { Context = 256, Task = task }, cancel).Perplexity;
        return new Outcome(outputs, traces, tokens, stream, perplexity, model.Planner?.Invocations ?? 0, model.Planner?.PredictTime.TotalSeconds ?? 0);
    }

    private static Dictionary<string, object> Row(double budget, int slots, string config, string mode, int every, Outcome? o, Outcome reference,
        double? simulatedHitRate = null, double? simulatedBytesPerToken = null)
    {
        var row = new Dictionary<string, object>
        {
            ["budget"] = budget, ["slots"] = slots, ["config"] = config, ["mode"] = mode, ["predict_every"] = every,
        };
        if (o is null)
        {
            row["hit_rate"] = simulatedHitRate!.Value;
            row["bytes_per_token"] = simulatedBytesPerToken!.Value;
            return row;
        }
        var s = o.Stream.Overall;
        int identical = o.Outputs.Zip(reference.Outputs).Count(p => p.First.SequenceEqual(p.Second));
        double agreement = o.Outputs.Zip(reference.Outputs).Average(p => MatchedPrefix(p.First, p.Second) / (double)Math.Max(1, p.Second.Count));
        var change = o.Perplexity.ToDictionary(p => p.Key, p => p.Value / reference.Perplexity[p.Key] - 1);
        row["hit_rate"] = s.HitRate;
        row["bytes_per_token"] = (double)s.BytesCopied / o.StreamTokens;
        row["stall_ms_per_token"] = 1000 * (s.StallSeconds + o.Stream.PredictedSetWaitSeconds) / o.StreamTokens;
        row["rerouted_share"] = s.Rerouted / (double)(o.StreamTokens * reference.Traces[0].TopK * reference.Traces[0].NumLayers);
        row["pregate_accuracy"] = s.LookaheadAccuracy;
        row["identical_outputs"] = identical / (double)o.Outputs.Count;
        row["greedy_agreement"] = agreement;
        row["perplexity"] = o.Perplexity;
        row["perplexity_change"] = change;
        row["worst_perplexity_change"] = change.Values.Max();
        row["predictor_runs"] = o.PredictorRuns;
        row["predict_seconds"] = o.PredictSeconds;
        return row;
    }

    /// <summary>Tokens equal from the start until the first difference.</summary>
    private static int MatchedPrefix(List<int> a, List<int> b)
    {
        int n = 0;
        while (n < a.Count && n < b.Count && a[n] == b[n]) n++;
        return n;
    }

    private static string Describe(Dictionary<string, object> r) => string.Create(CultureInfo.InvariantCulture,
        $"{(double)r["budget"]:P0} {r["config"]} {r["mode"]}: hit {(double)r["hit_rate"]:P1}, {(double)r["bytes_per_token"] / 1024:0.0} KiB/token, " +
        $"agreement {(double)r["greedy_agreement"]:P1}, worst perplexity {(double)r["worst_perplexity_change"]:+0.0%;-0.0%}");

    private static string Markdown(List<Dictionary<string, object>> rows, Outcome reference, int prompts, EngineBenchOptions options)
    {
        var inv = CultureInfo.InvariantCulture;
        var tasks = reference.Perplexity.Keys.ToList();
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"Stream: {prompts} evaluation prompts (tasks interleaved, greedy, max_tokens per task), {reference.StreamTokens:N0} tokens; then the first tokens of each task's held-out test text in 256-token windows (each window one request of its task).");
        sb.AppendLine(inv, $"All-resident perplexity: {string.Join(", ", tasks.Select(t => string.Create(inv, $"{t} {reference.Perplexity[t]:0.00}")))}.");
        sb.AppendLine(inv, $"Pre-gate: {(options.FittedPregate is null ? "training-free (next layer's router)" : "fitted (emoe fit-pregate)")}, {options.PregateWidth} experts per token; layer profile: {(options.LayerProfile is null ? "none" : "given")}.");
        sb.AppendLine("Hit rate, bytes and stall are over the prompt stream; \"agreement\" is the mean share of each greedy continuation that matches all-resident before the first difference.");
        sb.AppendLine();
        sb.AppendLine("| budget | config | on miss | hit rate | KiB copied/token | stall ms/token | rerouted | pre-gate acc. | identical outputs | agreement | " +
            string.Join(" | ", tasks.Select(t => $"{t} ppl")) + " | predictor runs |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|" + string.Concat(tasks.Select(_ => "---|")) + "---|");
        foreach (var r in rows)
        {
            string F(string key, string format) => r.TryGetValue(key, out var v) ? string.Format(inv, $"{{0:{format}}}", v) : "";
            string ppl = r.TryGetValue("perplexity_change", out var c)
                ? string.Join(" | ", tasks.Select(t => string.Create(inv, $"{((Dictionary<string, double>)c)[t]:+0.0%;-0.0%;0.0%}")))
                : string.Join(" | ", tasks.Select(_ => ""));
            sb.AppendLine(inv,
                $"| {(double)r["budget"]:P0} | {r["config"]} | {r["mode"]} | {F("hit_rate", "P1")} | {(double)r["bytes_per_token"] / 1024:0.0} | {F("stall_ms_per_token", "0.000")} | " +
                $"{F("rerouted_share", "P1")} | {(r.TryGetValue("pregate_accuracy", out var a) && (double)a > 0 ? string.Format(inv, "{0:P1}", a) : "")} | {F("identical_outputs", "P0")} | {F("greedy_agreement", "P1")} | {ppl} | {F("predictor_runs", "0")} |");
        }
        return sb.ToString();
    }
}
