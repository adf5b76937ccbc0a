using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Prediction;

namespace eMoE.Cli.Bench;

/// <summary>
/// `emoe bench residency`: the shipped model over the evaluation prompts of every task (tasks
/// interleaved). One all-resident pass records the routing and the reference outputs; every policy
/// is replayed on that trace at each budget beside the Belady bound; then the real engine runs
/// each budget to measure decode speed relative to all-resident and to check outputs are identical.
/// </summary>
internal sealed class ResidencyBenchmark(string modelDirectory, DeviceSpec device, int perTask, int speedPrompts, TextWriter log)
{
    private static readonly double[] BudgetFractions = [0.125, 0.25, 0.5, 0.75];
    private static readonly EvictionPolicyKind[] Policies =
        [EvictionPolicyKind.Lru, EvictionPolicyKind.Lfu, EvictionPolicyKind.LifoInactiveFirst, EvictionPolicyKind.Predicted, EvictionPolicyKind.Belady];

    private sealed record Run(List<List<int>> Outputs, List<PromptTrace> Traces, long DecodeTokens, double DecodeSeconds)
    {
        public double DecodeTokensPerSecond => DecodeTokens / DecodeSeconds;
    }

    public async Task<string> RunAsync(string outDirectory, CancellationToken cancel)
    {
        var prompts = EvalPrompts.LoadInterleaved(modelDirectory, perTask);
        log.WriteLine($"{prompts.Count} prompts ({perTask} per task), device {device}");

        var reference = await Generate(ExpertBudget.All, EvictionPolicyKind.LifoInactiveFirst, prompts, cancel);
        long tokens = reference.Traces.Sum(t => t.Steps.Sum(s => (long)s.Tokens));
        Directory.CreateDirectory(outDirectory);
        using (var writer = new StreamWriter(Path.Combine(outDirectory, "trace.jsonl")))
        {
            foreach (var trace in reference.Traces) trace.WriteLine(writer);
        }

        long expertBytes;
        int totalExperts, topK;
        using (var probe = MoeModel.Load(modelDirectory, new ModelOptions { Device = device }))
        {
            expertBytes = probe.ExpertStats.ExpertBytes;
            totalExperts = probe.ExpertStats.TotalExperts;
            topK = probe.Config.TopK;
        }

        var rows = new List<Dictionary<string, object>>();
        var speed = new List<Dictionary<string, object>>();
        var speedPromptList = prompts.Take(speedPrompts).ToList();
        var speedReference = await Generate(ExpertBudget.All, EvictionPolicyKind.LifoInactiveFirst, speedPromptList, cancel);
        foreach (double fraction in BudgetFractions)
        {
            int slots = ExpertBudget.FromFraction(fraction).SlotCount(expertBytes, totalExperts, topK);
            foreach (var policy in Policies)
            {
                var c = CacheSimulator.Run(reference.Traces, slots, policy, expertBytes,
                    policy == EvictionPolicyKind.Predicted ? PredictorSchedule(reference.Traces, slots) : null);
                rows.Add(new()
                {
                    ["budget"] = fraction, ["slots"] = slots, ["policy"] = policy.ToString(),
                    ["requests"] = c.Requests, ["hits"] = c.Hits, ["hit_rate"] = c.HitRate,
                    ["bytes_copied"] = c.BytesCopied, ["bytes_per_token"] = (double)c.BytesCopied / tokens,
                });
            }
            var run = await Generate(ExpertBudget.FromFraction(fraction), EvictionPolicyKind.LifoInactiveFirst, speedPromptList, cancel);
            bool identical = run.Outputs.Zip(speedReference.Outputs).All(p => p.First.SequenceEqual(p.Second));
            speed.Add(new()
            {
                ["budget"] = fraction, ["slots"] = slots, ["decode_tokens_per_second"] = run.DecodeTokensPerSecond,
                ["relative_to_all_resident"] = run.DecodeTokensPerSecond / speedReference.DecodeTokensPerSecond,
                ["outputs_identical"] = identical,
            });
            log.WriteLine($"budget {fraction:P1}: {slots} slots, decode {run.DecodeTokensPerSecond:0.0} tok/s, identical outputs: {identical}");
        }

        var result = new Dictionary<string, object>
        {
            ["model"] = modelDirectory, ["device"] = device.ToString(), ["prompts"] = prompts.Count,
            ["tokens"] = tokens, ["expert_bytes"] = expertBytes, ["total_experts"] = totalExperts,
            ["all_resident_decode_tokens_per_second"] = speedReference.DecodeTokensPerSecond,
            ["speed_prompts"] = speedPromptList.Count, ["policies"] = rows, ["speed"] = speed,
        };
        File.WriteAllText(Path.Combine(outDirectory, "results.json"), JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(outDirectory, "hit_rate.svg"), SvgChart.GroupedBars(
            "Expert cache hit rate by budget (shipped model, eval prompts)", "hit rate",
            BudgetFractions.Select(f => f.ToString("P1", CultureInfo.InvariantCulture)).ToList(),
            Policies.Select(p => (p.ToString(), BudgetFractions.Select(f => (double)rows.First(r => (double)r["budget"] == f && (string)r["policy"] == p.ToString())["hit_rate"]).ToArray())).ToList(),
            1.0));
        string table = Markdown(rows, speed, speedReference.DecodeTokensPerSecond, prompts.Count, tokens);
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), table);
        return table;
    }

    /// <summary>
    /// The eMoE-style predictor in the loop (simulated) through the engine's own planner: before
    /// each prompt and again after its prefill it names the experts to keep resident; the planner
    /// learns each prompt's routing after it finishes.
    /// </summary>
    private static Func<int, int, IReadOnlyCollection<ExpertKey>?> PredictorSchedule(List<PromptTrace> traces, int slots)
    {
        var first = traces[0];
        var planner = new ResidencyPlanner(first.NumLayers, first.NumExperts, slots, first.TopK, new PredictionOptions());
        int observed = 0;
        return (prompt, step) =>
        {
            if (step > 1) return null;
            for (; observed < prompt; observed++) planner.EndPrompt(traces[observed]);
            return step == 0 ? planner.BeginPrompt(traces[prompt].Task) : planner.AfterPrefill(traces[prompt].Task, RoutingCounts.Prefill(traces[prompt]));
        };
    }

    private async Task<Run> Generate(ExpertBudget budget, EvictionPolicyKind policy, List<EvalPrompt> prompts, CancellationToken cancel)
    {
        using var model = MoeModel.Load(modelDirectory, new ModelOptions { Device = device, Experts = new ExpertCacheOptions { Budget = budget, Policy = policy } });
        var outputs = new List<List<int>>();
        var traces = new List<PromptTrace>();
        long decodeTokens = 0;
        double decodeSeconds = 0;
        foreach (var (prompt, index) in prompts.Select((p, i) => (p, i)))
        {
            var options = new GenerationOptions { MaxTokens = prompt.MaxTokens, StopAtEndOfSequence = false, RecordRouting = true, Task = prompt.Task };
            var generation = model.Generate(prompt.Prompt, options);
            var ids = new List<int>();
            await foreach (var token in generation.WithCancellation(cancel)) ids.Add(token.Id);
            outputs.Add(ids);
            generation.Stats.Trace!.Prompt = index;
            traces.Add(generation.Stats.Trace);
            decodeTokens += generation.Stats.GeneratedTokens - 1;
            decodeSeconds += generation.Stats.DecodeTime.TotalSeconds;
        }
        return new Run(outputs, traces, decodeTokens, decodeSeconds);
    }

    private static string Markdown(List<Dictionary<string, object>> rows, List<Dictionary<string, object>> speed, double allResident, int prompts, long tokens)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine(inv, $"Workload: {prompts} evaluation prompts (tasks interleaved), {tokens:N0} tokens routed (prompt + generated), greedy, max_tokens per task.");
        sb.AppendLine("Hit rates are replays of the recorded routing through the cache's own bookkeeping. \"predictor\": the eMoE-style predictor in the loop (simulated; its prefetches land at once and count as bytes copied): before each prompt and again after its prefill it names slots/layers experts per layer, which are prefetched and spared from eviction (LRU otherwise).");
        sb.AppendLine();
        sb.AppendLine("| budget | slots | LRU hit rate | LFU hit rate | LIFO-inactive-first hit rate | predictor hit rate | Belady bound | LIFO-IF gap to Belady | LRU KiB/token | LFU KiB/token | LIFO-IF KiB/token | predictor KiB/token | Belady KiB/token |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var group in rows.GroupBy(r => (double)r["budget"]))
        {
            var byPolicy = group.ToDictionary(r => (string)r["policy"]);
            double Hit(string p) => (double)byPolicy[p]["hit_rate"];
            double Kib(string p) => (double)byPolicy[p]["bytes_per_token"] / 1024;
            sb.AppendLine(inv,
                $"| {group.Key:P1} | {group.First()["slots"]} | {Hit("Lru"):P1} | {Hit("Lfu"):P1} | {Hit("LifoInactiveFirst"):P1} | {Hit("Predicted"):P1} | {Hit("Belady"):P1} | " +
                $"{(Hit("Belady") - Hit("LifoInactiveFirst")) * 100:0.0} points | {Kib("Lru"):0.0} | {Kib("Lfu"):0.0} | {Kib("LifoInactiveFirst"):0.0} | {Kib("Predicted"):0.0} | {Kib("Belady"):0.0} |");
        }
        sb.AppendLine();
        sb.AppendLine(inv, $"Decode speed, real engine (LIFO-inactive-first), measured in the same run; all-resident: {allResident:0.0} tok/s.");
        sb.AppendLine();
        sb.AppendLine("| budget | slots | decode tok/s | relative to all-resident | outputs identical to all-resident |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var s in speed)
        {
            sb.AppendLine(inv, $"| {(double)s["budget"]:P1} | {s["slots"]} | {(double)s["decode_tokens_per_second"]:0.0} | {(double)s["relative_to_all_resident"]:0.00}x | {((bool)s["outputs_identical"] ? "yes" : "NO")} |");
        }
        return sb.ToString();
    }
}
