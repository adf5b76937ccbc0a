using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Inference;
using eMoE.Scheduling;

namespace eMoE.Cli.Bench;

/// <summary>The settings of one <c>emoe bench speed</c> run.</summary>
internal sealed record SpeedBenchOptions(DeviceSpec Device, int? Threads, int PromptTokens, int GenTokens, int Reps);

/// <summary>
/// `emoe bench speed`: llama-bench-style prefill and decode speed of one model, measured the way the peer
/// harness (llama_speed.py) measures llama.cpp, so that the two can be compared on the same weights:
/// prefill = one request of N_PROMPT fixed pseudo-random ids (the same ids as llama_speed.py: its LCG over
/// the model's vocabulary, ids 3 and up), run as one step; decode = N_GEN single-token steps, each on the
/// greedy choice of the one before, end of sequence ignored. One warm-up run, then R timed runs; medians.
/// </summary>
internal sealed class SpeedBenchmark(string modelDirectory, SpeedBenchOptions options, TextWriter log)
{
    /// <summary>One timed run: prompt tokens per second of prefill, decode steps per second, the first ids generated.</summary>
    private sealed record Run(double PrefillTokensPerSecond, double DecodeTokensPerSecond, List<int> Generated);

    public async Task<Dictionary<string, object?>> RunAsync(CancellationToken cancel)
    {
        int np = options.PromptTokens, ng = options.GenTokens;
        var modelOptions = new ModelOptions
        {
            Device = options.Device,
            Threads = options.Threads,
            // As llama_speed.py: a context of the prompt, the generated tokens and 16 more; one sequence; the prompt in one step.
            ContextLength = np + ng + 16,
            Engine = new EngineOptions { MaxBatch = 1, MaxTokensPerStep = np },
        };
        using var model = ModelLoading.Load(modelDirectory, modelOptions);
        var prompt = PromptIds(np, model.Config.VocabSize);
        log.WriteLine($"model {modelDirectory}, {model.Device.Kind}: {model.Device.Name}, prompt {np} tokens, {ng} decode steps, 1 warm-up + {options.Reps} runs");

        await RunOnce(model, prompt, cancel);
        var runs = new List<Run>();
        for (int i = 0; i < options.Reps; i++)
        {
            var run = await RunOnce(model, prompt, cancel);
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"run {i + 1}/{options.Reps}: prefill {run.PrefillTokensPerSecond:0.0} tok/s, decode {run.DecodeTokensPerSecond:0.0} tok/s"));
            runs.Add(run);
        }

        int threads = options.Threads ?? Environment.ProcessorCount;
        return new Dictionary<string, object?>
        {
            ["n_prompt"] = np,
            ["n_gen"] = ng,
            ["threads"] = model.Device.Kind == DeviceKind.Cpu ? threads : null,
            ["reps"] = options.Reps,
            ["prefill_tok_s"] = Math.Round(Median(runs.Select(r => r.PrefillTokensPerSecond)), 2),
            ["decode_tok_s"] = Math.Round(Median(runs.Select(r => r.DecodeTokensPerSecond)), 2),
            ["prefill_tok_s_runs"] = runs.Select(r => Math.Round(r.PrefillTokensPerSecond, 2)).ToList(),
            ["decode_tok_s_runs"] = runs.Select(r => Math.Round(r.DecodeTokensPerSecond, 2)).ToList(),
            ["first_generated"] = runs[0].Generated.Take(8).ToList(),
            ["engine"] = "eMoE",
            ["device"] = $"{model.Device.Kind}: {model.Device.Name}",
            ["kv_cache"] = "F32",
            ["model"] = modelDirectory,
            ["model_bytes"] = ModelBytes(modelDirectory),
            ["peak_rss_bytes"] = PeakRssBytes(),
        };
    }

    /// <summary>
    /// One run: the prompt, then N_GEN + 1 tokens. The first comes from the prefill; each of the other N_GEN
    /// is one decode step (as llama_speed.py's N_GEN single-token calls after the prompt).
    /// </summary>
    private async Task<Run> RunOnce(MoeModel model, IReadOnlyList<int> prompt, CancellationToken cancel)
    {
        var generation = new GenerationOptions { MaxTokens = options.GenTokens + 1, StopAtEndOfSequence = false };
        var stats = new GenerationStats();
        var ids = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(prompt, generation, stats, cancel)) ids.Add(id);
        if (stats.GeneratedTokens != options.GenTokens + 1)
            throw new CliException($"generated {stats.GeneratedTokens} tokens instead of {options.GenTokens + 1} (finish: {stats.FinishReason})");
        // The first token comes from the prefill; llama_speed.py's first generated id is the argmax after its first decode call.
        return new Run(stats.PromptTokens / stats.PrefillTime.TotalSeconds, (stats.GeneratedTokens - 1) / stats.DecodeTime.TotalSeconds, ids.Skip(1).ToList());
    }

    /// <summary>N pseudo-random ids in 3..vocab-1, the same sequence as llama_speed.py's (and llama_peer.mjs's) lcg_ids.</summary>
    internal static int[] PromptIds(int count, int vocab)
    {
        const int First = 3;
        if (vocab <= First) throw new CliException($"the vocabulary has {vocab} tokens; the benchmark prompt needs more than {First}");
        var ids = new int[count];
        uint x = 12345;
        for (int i = 0; i < count; i++)
        {
            x = unchecked(x * 1103515245u + 12345u);
            ids[i] = First + (int)((x >> 8) % (uint)(vocab - First));
        }
        return ids;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    /// <summary>Bytes of the checkpoint's safetensors files.</summary>
    internal static long ModelBytes(string directory) =>
        Directory.GetFiles(directory, "*.safetensors").Sum(f => new FileInfo(f).Length);

    /// <summary>The process's peak resident set (VmHWM of /proc/self/status), or null where there is none (not Linux).</summary>
    internal static long? PeakRssBytes()
    {
        const string Path = "/proc/self/status";
        if (!File.Exists(Path)) return null;
        foreach (string line in File.ReadLines(Path))
        {
            if (!line.StartsWith("VmHWM:", StringComparison.Ordinal)) continue;
            var parts = line["VmHWM:".Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return long.Parse(parts[0], CultureInfo.InvariantCulture) * 1024; // kB
        }
        return null;
    }

    /// <summary>The result as llama-bench prints it: one row per test.</summary>
    public static string Table(Dictionary<string, object?> r)
    {
        var inv = CultureInfo.InvariantCulture;
        static string Range(object? runs) => runs is List<double> { Count: > 0 } v ? string.Create(CultureInfo.InvariantCulture, $"{v.Min():0.0}-{v.Max():0.0}") : "";
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"model: {r["model"]} ({ByteSize.Format((long)r["model_bytes"]!)}), {r["device"]}");
        sb.AppendLine();
        sb.AppendLine("| test | tok/s (median) | runs min-max |");
        sb.AppendLine("|---|---:|---:|");
        sb.AppendLine(inv, $"| pp{r["n_prompt"]} | {(double)r["prefill_tok_s"]!:0.00} | {Range(r["prefill_tok_s_runs"])} |");
        sb.AppendLine(inv, $"| tg{r["n_gen"]} | {(double)r["decode_tok_s"]!:0.00} | {Range(r["decode_tok_s_runs"])} |");
        sb.AppendLine();
        sb.AppendLine(inv, $"peak RSS: {(r["peak_rss_bytes"] is long rss ? $"{ByteSize.Format(rss)} ({rss:N0} bytes)" : "n/a")}");
        return sb.ToString();
    }

    public static string Json(Dictionary<string, object?> r) => JsonSerializer.Serialize(r);
}
