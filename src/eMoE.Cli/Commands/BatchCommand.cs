using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Inference;

namespace eMoE.Cli.Commands;

/// <summary>
/// <c>emoe batch</c>: offline batch inference. Every prompt of a JSON Lines file is submitted at
/// once; the engine runs them with continuous batching; one JSON line per prompt comes out, in
/// input order.
/// </summary>
internal static class BatchCommand
{
    /// <summary>One input line: what to generate.</summary>
    private sealed record BatchRequest(int Line, JsonElement Id, string Prompt, GenerationOptions Options);

    /// <summary>What came out of one request.</summary>
    private sealed record BatchResult(JsonElement Id, string Text, IReadOnlyList<int> Tokens, string FinishReason, int PromptTokens,
        int CompletionTokens, double TtftMs, double E2eMs, eMoE.Prediction.PromptTrace? Trace);

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var file = new Option<FileInfo>("--file")
        {
            Description = "JSON Lines, one request per line: id, prompt, and optionally max_tokens, task, temperature, top_p, top_k, seed " +
                "(the shipped eval/*.jsonl files work as they are)",
            Required = true,
        };
        var output = new Option<FileInfo?>("--out") { Description = "Write the results here (JSON Lines) instead of standard output" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens per request when its line has no max_tokens", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature when a line has none; 0 = greedy", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens when a line has no top_k; 0 = off", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass when a line has no top_p; 1 = off", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Random seed when a line has none" };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Generate max_tokens tokens even past end-of-sequence (fixed-length runs)" };
        var stats = CommonOptions.Stats();
        var trace = new Option<FileInfo?>("--trace")
        {
            Description = "Write every request's routing (per step: experts and weights of each token, and the engine step it shared with others) " +
                "to a JSON Lines file, in input order: a batched serving trace",
        };

        var command = new Command("batch", "Offline batch inference: generate for every prompt of a JSON Lines file, batched; one JSON line per prompt")
        {
            model, device, file, output, maxTokens, temperature, topK, topP, seed, ignoreEos, stats, trace,
        };
        var expertOptions = new CommonOptions.ExpertOptions(command);
        var engineOptions = new CommonOptions.EngineOptionsReader(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var path = parse.GetValue(file)!;
            if (!path.Exists) throw new CliException($"{path.FullName}: not found");
            if (parse.GetValue(maxTokens) < 1) throw new CliException($"--max-tokens must be at least 1, got {parse.GetValue(maxTokens)}");
            var defaults = new GenerationOptions
            {
                MaxTokens = parse.GetValue(maxTokens),
                StopAtEndOfSequence = !parse.GetValue(ignoreEos),
                Sampling = new SamplingOptions
                {
                    Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK), TopP = parse.GetValue(topP), Seed = parse.GetValue(seed),
                },
            };
            defaults.Sampling.Validate();
            var requests = Read(path.FullName, defaults with { RecordRouting = parse.GetValue(trace) is not null });
            if (requests.Count == 0) throw new CliException($"{path.FullName}: no requests");

            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var modelOptions = engineOptions.Read(parse, directory, expertOptions.Read(parse, new ModelOptions { Device = parse.GetValue(device) }));
            using var moe = ModelLoading.Load(directory, modelOptions);
            var tokenizer = moe.RequireTokenizer();
            var prompts = requests.Select(r => tokenizer.Encode(r.Prompt, r.Options.AddSpecialTokens)).ToList();
            for (int i = 0; i < requests.Count; i++)
            {
                if (prompts[i].Count >= moe.ContextLength)
                    throw new CliException($"{path.FullName}:{requests[i].Line}: the prompt has {prompts[i].Count} tokens; the context holds {moe.ContextLength}");
            }

            var progress = new Progress(requests.Count, Console.IsErrorRedirected ? null : Console.Error);
            var clock = Stopwatch.StartNew();
            var results = await Task.WhenAll(requests.Select((r, i) => Run(moe, r, prompts[i], progress, cancellationToken)));
            var elapsed = clock.Elapsed;
            progress.Done();

            using (var writer = parse.GetValue(output) is { } outFile ? new StreamWriter(outFile.FullName) : null)
            {
                var target = writer ?? Console.Out;
                foreach (var r in results) target.WriteLine(ToJson(r));
            }
            if (parse.GetValue(trace) is { } traceFile)
            {
                using var writer = new StreamWriter(traceFile.FullName);
                for (int i = 0; i < results.Length; i++)
                {
                    results[i].Trace!.Prompt = i;
                    results[i].Trace!.WriteLine(writer);
                }
            }
            long generated = results.Sum(r => (long)r.CompletionTokens);
            var engine = moe.EngineStats;
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"requests {results.Length}, prompt tokens {results.Sum(r => (long)r.PromptTokens)}, output tokens {generated} in {elapsed.TotalSeconds:0.00} s: " +
                $"output {generated / elapsed.TotalSeconds:0.0} tok/s, largest batch {engine.LargestBatch}, steps {engine.Steps}, " +
                $"preemptions {engine.Preemptions}, peak KV {ByteSize.Format(engine.KvBytesPeak)} of {ByteSize.Format(moe.KvPoolBytes)}, " +
                $"mean TTFT {results.Average(r => r.TtftMs):0.0} ms, mean e2e {results.Average(r => r.E2eMs):0.0} ms"));
            CommonOptions.ReportExperts(moe, parse.GetValue(stats));
            return 0;
        });
        return command;
    }

    private static async Task<BatchResult> Run(MoeModel model, BatchRequest request, IReadOnlyList<int> prompt, Progress progress,
        CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var stats = new GenerationStats();
        var tokens = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(prompt, request.Options, stats, cancellationToken).ConfigureAwait(false)) tokens.Add(id);
        cancellationToken.ThrowIfCancellationRequested();
        var result = new BatchResult(request.Id, model.RequireTokenizer().Decode(tokens.ToArray()), tokens,
            stats.FinishReason == FinishReason.EndOfSequence ? "stop" : "length", prompt.Count, tokens.Count,
            stats.TimeToFirstToken.TotalMilliseconds, clock.Elapsed.TotalMilliseconds, stats.Trace);
        progress.Completed(tokens.Count);
        return result;
    }

    private static string ToJson(BatchResult r)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            json.WritePropertyName("id");
            r.Id.WriteTo(json);
            json.WriteString("text", r.Text);
            json.WriteStartArray("tokens");
            foreach (int t in r.Tokens) json.WriteNumberValue(t);
            json.WriteEndArray();
            json.WriteString("finish_reason", r.FinishReason);
            json.WriteNumber("prompt_tokens", r.PromptTokens);
            json.WriteNumber("completion_tokens", r.CompletionTokens);
            json.WriteNumber("ttft_ms", Math.Round(r.TtftMs, 3));
            json.WriteNumber("e2e_ms", Math.Round(r.E2eMs, 3));
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Reads every request; a malformed line is an error naming the file, the line and the field.</summary>
    private static List<BatchRequest> Read(string path, GenerationOptions defaults)
    {
        var requests = new List<BatchRequest>();
        int line = 0;
        foreach (string text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            string where = $"{path}:{line}";
            JsonElement root;
            try
            {
                using var document = JsonDocument.Parse(text);
                root = document.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new CliException($"{where}: not JSON ({e.Message})");
            }
            if (root.ValueKind != JsonValueKind.Object) throw new CliException($"{where}: a request is a JSON object");
            if (!root.TryGetProperty("id", out var id) || id.ValueKind is not (JsonValueKind.String or JsonValueKind.Number))
                throw new CliException($"{where}: 'id' (a string or a number) is missing");
            if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind != JsonValueKind.String)
                throw new CliException($"{where}: 'prompt' (a string) is missing");
            var sampling = defaults.Sampling with
            {
                Temperature = Number(root, "temperature", where, v => v >= 0 && float.IsFinite(v), ">= 0") ?? defaults.Sampling.Temperature,
                TopP = Number(root, "top_p", where, v => v > 0 && v <= 1, "in (0, 1]") ?? defaults.Sampling.TopP,
                TopK = Integer(root, "top_k", where, 0) ?? defaults.Sampling.TopK,
                Seed = Integer(root, "seed", where, int.MinValue) ?? defaults.Sampling.Seed,
            };
            string? task = root.TryGetProperty("task", out var t) && t.ValueKind != JsonValueKind.Null
                ? t.ValueKind == JsonValueKind.String ? t.GetString() : throw new CliException($"{where}: 'task' must be a string")
                : null;
            var options = defaults with
            {
                MaxTokens = Integer(root, "max_tokens", where, 1) ?? defaults.MaxTokens,
                Sampling = sampling,
                Task = task,
            };
            requests.Add(new BatchRequest(line, id.Clone(), prompt.GetString()!, options));
        }
        return requests;
    }

    private static float? Number(JsonElement root, string name, string where, Func<float, bool> valid, string range)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetSingle(out float f) || !valid(f))
            throw new CliException($"{where}: '{name}' must be a number {range}, got {v.GetRawText()}");
        return f;
    }

    private static int? Integer(JsonElement root, string name, string where, int min)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i < min)
            throw new CliException($"{where}: '{name}' must be an integer >= {min}, got {v.GetRawText()}");
        return i;
    }

    /// <summary>A one-line progress bar on the terminal's stderr (nothing when redirected).</summary>
    private sealed class Progress(int total, TextWriter? terminal)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly object _lock = new();
        private int _done;
        private long _tokens;

        public void Completed(int tokens)
        {
            lock (_lock)
            {
                _done++;
                _tokens += tokens;
                if (terminal is null) return;
                int width = 30, filled = width * _done / total;
                terminal.Write(string.Create(CultureInfo.InvariantCulture,
                    $"\r[{new string('#', filled)}{new string('.', width - filled)}] {_done}/{total} requests, {_tokens / _clock.Elapsed.TotalSeconds:0.0} tok/s "));
            }
        }

        public void Done() => terminal?.Write("\r" + new string(' ', 78) + "\r");
    }
}
