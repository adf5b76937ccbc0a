using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;

namespace eMoE.Cli.Bench;

/// <summary>What `emoe bench hybrid` runs.</summary>
/// <param name="Prompts">Evaluation prompts (tasks interleaved), each decoded in turn.</param>
/// <param name="Tokens">Tokens generated per prompt (end of sequence ignored).</param>
/// <param name="Budgets">Expert memory, fractions of all expert bytes.</param>
/// <param name="Links">Modelled links: name and bytes per second.</param>
/// <param name="DeviceBytesPerSecond">Modelled device memory bandwidth for the experts that run on the device.</param>
internal sealed record HybridBenchOptions(int Prompts, int Tokens, IReadOnlyList<double> Budgets, IReadOnlyList<(string Name, double BytesPerSecond)> Links,
    double DeviceBytesPerSecond);

/// <summary>
/// `emoe bench hybrid`: hybrid expert execution's cost model on modelled links. The real engine
/// decodes evaluation prompts with each of copy-only (device), host-only and auto at each budget;
/// auto decides by the modelled link. The expert cost of a decoded token is then modelled from what
/// the engine really did: bytes copied over the link, the host's measured compute time, the
/// activations' round trip over the link, and the experts run on the device at the device's memory
/// bandwidth (an expert is memory bound for a few tokens). The device here is ILGPU's CPU
/// accelerator, whose own compute time says nothing about a GPU's, so it is modelled too.
/// </summary>
internal sealed class HybridBenchmark(string modelDirectory, DeviceSpec device, HybridBenchOptions options, TextWriter log)
{
    private static readonly (string Name, ExpertExecution Execution)[] Modes =
        [("copy-only", ExpertExecution.Device), ("host-only", ExpertExecution.Host), ("auto", ExpertExecution.Auto)];

    public async Task<string> RunAsync(string outDirectory, CancellationToken cancel)
    {
        var prompts = EvalPrompts.LoadInterleaved(modelDirectory, (options.Prompts + 4) / 5).Take(options.Prompts).ToList();
        log.WriteLine($"{prompts.Count} prompts x {options.Tokens} tokens, device {device}");
        var reference = await Decode(new ExpertCacheOptions(), prompts, cancel);
        var rows = new List<Dictionary<string, object>>();
        foreach (double budget in options.Budgets)
        {
            foreach (var (linkName, link) in options.Links)
            {
                foreach (var (mode, execution) in Modes)
                {
                    var experts = new ExpertCacheOptions { Budget = ExpertBudget.FromFraction(budget), Execution = execution, LinkBytesPerSecond = link };
                    var run = await Decode(experts, prompts, cancel);
                    var o = run.Stats.Overall;
                    double copy = o.BytesCopied / link;
                    double activations = 2.0 * o.HostAssignments * run.HiddenSize * sizeof(float) / link;
                    double deviceCompute = (o.Requests) * (double)run.Stats.ExpertBytes / options.DeviceBytesPerSecond;
                    double total = copy + o.HostSeconds + activations + deviceCompute;
                    rows.Add(new Dictionary<string, object>
                    {
                        ["budget"] = budget, ["link"] = linkName, ["link_bytes_per_second"] = link, ["mode"] = mode,
                        ["tokens"] = run.Tokens, ["expert_ms_per_token"] = 1000 * total / run.Tokens,
                        ["copy_ms_per_token"] = 1000 * copy / run.Tokens, ["host_ms_per_token"] = 1000 * o.HostSeconds / run.Tokens,
                        ["activation_ms_per_token"] = 1000 * activations / run.Tokens, ["device_ms_per_token"] = 1000 * deviceCompute / run.Tokens,
                        ["bytes_copied_per_token"] = (double)o.BytesCopied / run.Tokens, ["host_assignments"] = o.HostAssignments,
                        ["hit_rate"] = o.HitRate, ["outputs_equal_all_resident"] = run.Outputs.SequenceEqual(reference.Outputs, ListComparer.Instance),
                    });
                    log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{budget:P0} {linkName} {mode}: {rows[^1]["expert_ms_per_token"]:0.000} ms/token of expert cost, {o.HostAssignments} host assignments, {o.BytesCopied} B copied"));
                }
            }
        }
        Directory.CreateDirectory(outDirectory);
        var result = new Dictionary<string, object>
        {
            ["model"] = modelDirectory, ["device"] = device.ToString(), ["prompts"] = prompts.Count, ["tokens_per_prompt"] = options.Tokens,
            ["expert_bytes"] = reference.Stats.ExpertBytes, ["device_bytes_per_second"] = options.DeviceBytesPerSecond, ["rows"] = rows,
        };
        File.WriteAllText(Path.Combine(outDirectory, "results.json"), JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
        string table = Markdown(rows, prompts.Count, reference.Stats.ExpertBytes);
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), table);
        return table;
    }

    private sealed record Outcome(List<List<int>> Outputs, ResidencyStats Stats, long Tokens, int HiddenSize);

    private async Task<Outcome> Decode(ExpertCacheOptions experts, IReadOnlyList<EvalPrompt> prompts, CancellationToken cancel)
    {
        using var model = MoeModel.Load(modelDirectory, new ModelOptions { Device = device, Experts = experts });
        var tokenizer = model.RequireTokenizer();
        var outputs = new List<List<int>>();
        long tokens = 0;
        foreach (var prompt in prompts)
        {
            var ids = new List<int>();
            var generation = new GenerationOptions { MaxTokens = options.Tokens, StopAtEndOfSequence = false };
            await foreach (int id in model.GenerateIdsAsync(tokenizer.Encode(prompt.Prompt, addSpecialTokens: true), generation, new GenerationStats(), cancel))
                ids.Add(id);
            outputs.Add(ids);
            tokens += ids.Count;
        }
        return new Outcome(outputs, model.ExpertStats, tokens, model.Config.HiddenSize);
    }

    private string Markdown(List<Dictionary<string, object>> rows, int prompts, long expertBytes)
    {
        var md = new StringBuilder();
        string F(object v) => string.Create(CultureInfo.InvariantCulture, $"{(double)v:0.000}");
        md.AppendLine("# Hybrid expert execution: copy-only vs host-only vs auto on modelled links").AppendLine();
        md.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"Model `{modelDirectory}`, {prompts} evaluation prompts x {options.Tokens} greedy tokens (end of sequence ignored), " +
            $"one expert = {ByteSize.Format(expertBytes)}. Device: `{device}` plays the GPU; its expert compute is modelled at " +
            $"{options.DeviceBytesPerSecond / 1e12:0.00} TB/s (an expert read once per step), copies and activations at the link's bandwidth, and the " +
            $"host's expert compute is measured on this machine. Expert cost per generated token (the prompts' prefill included), in ms (lower is better):")).AppendLine();
        md.AppendLine("| budget | link | copy-only | host-only | auto | auto vs best of the two | outputs equal |");
        md.AppendLine("|---|---|---:|---:|---:|---|---|");
        foreach (var group in rows.GroupBy(r => ((double)r["budget"], (string)r["link"])))
        {
            var by = group.ToDictionary(r => (string)r["mode"]);
            double copy = (double)by["copy-only"]["expert_ms_per_token"], host = (double)by["host-only"]["expert_ms_per_token"];
            double auto = (double)by["auto"]["expert_ms_per_token"], best = Math.Min(copy, host);
            bool equal = group.All(r => (bool)r["outputs_equal_all_resident"]);
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {group.Key.Item1:P0} | {group.Key.Item2} | {F(copy)} | {F(host)} | {F(auto)} | {(auto <= best * 1.05 ? "not slower" : "slower")} ({auto / best:0.00}x) | {(equal ? "yes" : "NO")} |");
        }
        md.AppendLine().AppendLine("Per mode, the parts (ms per token): copy / host compute / activations / device compute.").AppendLine();
        md.AppendLine("| budget | link | mode | copy | host | activations | device | bytes copied per token | host assignments | hit rate |");
        md.AppendLine("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            md.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {(double)r["budget"]:P0} | {r["link"]} | {r["mode"]} | {F(r["copy_ms_per_token"])} | {F(r["host_ms_per_token"])} | {F(r["activation_ms_per_token"])} | " +
                $"{F(r["device_ms_per_token"])} | {(double)r["bytes_copied_per_token"]:0} | {r["host_assignments"]} | {(double)r["hit_rate"]:P1} |"));
        }
        md.AppendLine().AppendLine("\"not slower\" allows 5 % for the noise of the host's measured time between runs.");
        return md.ToString();
    }

    private sealed class ListComparer : IEqualityComparer<List<int>>
    {
        public static readonly ListComparer Instance = new();
        public bool Equals(List<int>? x, List<int>? y) => x is not null && y is not null && x.SequenceEqual(y);
        public int GetHashCode(List<int> obj) => obj.Count;
    }
}
