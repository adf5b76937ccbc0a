using System.Text.Json;
using eMoE.Inference;
using eMoE.Scheduling;

namespace eMoE.Server;

/// <summary>The sampling defaults of a model: its generation_config.json (do_sample false: greedy), else OpenAI's (temperature 1).</summary>
internal sealed record SamplingDefaults(float Temperature, float TopP, int TopK)
{
    public static SamplingDefaults Read(string modelDirectory)
    {
        string file = Path.Combine(modelDirectory, "generation_config.json");
        float temperature = 1f, topP = 1f;
        int topK = 0;
        if (!File.Exists(file)) return new SamplingDefaults(temperature, topP, topK);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(file));
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return new SamplingDefaults(temperature, topP, topK);
            bool sample = !root.TryGetProperty("do_sample", out var d) || d.ValueKind != JsonValueKind.False;
            if (root.TryGetProperty("temperature", out var t) && t.TryGetSingle(out float tv) && tv >= 0) temperature = tv;
            if (root.TryGetProperty("top_p", out var p) && p.TryGetSingle(out float pv) && pv > 0 && pv <= 1) topP = pv;
            if (root.TryGetProperty("top_k", out var k) && k.TryGetInt32(out int kv) && kv >= 0) topK = kv;
            return sample ? new SamplingDefaults(temperature, topP, topK) : new SamplingDefaults(0f, 1f, 0);
        }
        catch (JsonException)
        {
            return new SamplingDefaults(temperature, topP, topK);
        }
    }
}

/// <summary>What chat and text completion requests share: streaming, sampling, limits, stops and eMoE's extensions.</summary>
internal sealed class GenerationRequest
{
    public const int MaxStopSequences = 16;

    public bool Stream { get; private set; }
    public bool IncludeUsage { get; private set; }
    /// <summary>max_completion_tokens, else max_tokens; null: the endpoint's default.</summary>
    public int? MaxTokens { get; private set; }
    /// <summary>Which field gave <see cref="MaxTokens"/> (named in errors).</summary>
    public string MaxTokensField { get; private set; } = "max_tokens";
    public SamplingOptions Sampling { get; private set; } = new();
    public IReadOnlyList<string>? Stop { get; private set; }
    public string? Task { get; private set; }
    public Slo? Slo { get; private set; }

    /// <summary>Reads and checks the shared fields. The model must be the served one (404 otherwise); n must be 1.</summary>
    public static GenerationRequest Read(JsonFields f, string servedModel, SamplingDefaults defaults)
    {
        if (f.Get("model") is { } m && (m.ValueKind != JsonValueKind.String || !string.Equals(m.GetString(), servedModel, StringComparison.Ordinal)))
        {
            if (m.ValueKind != JsonValueKind.String) throw f.WrongType("model", "a string", m);
            throw new ApiException(404, $"The model '{m.GetString()}' does not exist; this server serves '{servedModel}'", "model", "model_not_found");
        }
        if (f.Integer("n", long.MinValue, long.MaxValue) is long n && n != 1)
            throw ApiException.BadRequest($"'n' must be 1 (one choice per request), got {n}", "n", "invalid_value");
        var request = new GenerationRequest { Stream = f.Bool("stream") ?? false };
        var streamOptions = f.Object("stream_options");
        if (streamOptions is not null && !request.Stream)
            throw ApiException.BadRequest("'stream_options' is only allowed with \"stream\": true", "stream_options", "invalid_value");
        request.IncludeUsage = streamOptions?.Bool("include_usage") ?? false;
        _ = f.String("user");

        long? maxCompletion = f.Integer("max_completion_tokens", 1, int.MaxValue);
        long? maxTokens = f.Integer("max_tokens", 1, int.MaxValue);
        if (maxCompletion is long mc)
        {
            request.MaxTokens = (int)mc;
            request.MaxTokensField = "max_completion_tokens";
        }
        else if (maxTokens is long mt)
        {
            request.MaxTokens = (int)mt;
        }
        request.Sampling = new SamplingOptions
        {
            Temperature = (float)(f.Number("temperature", t => t is >= 0 and <= 2, "a number between 0 and 2") ?? defaults.Temperature),
            TopP = (float)(f.Number("top_p", p => p is > 0 and <= 1, "a number in (0, 1]") ?? defaults.TopP),
            // vLLM's -1 and 0 both mean no top-k.
            TopK = (int)Math.Max(0, f.Integer("top_k", -1, int.MaxValue) ?? defaults.TopK),
            Seed = f.Integer("seed", long.MinValue, long.MaxValue) is long seed ? SamplingOptions.FoldSeed(seed) : null,
        };
        request.Stop = ReadStop(f);
        request.Task = f.String("task");
        if (request.Task is { Length: 0 }) throw ApiException.BadRequest("'task' must not be empty", "task", "invalid_value");
        if (f.Object("slo") is { } slo)
        {
            double? ttft = slo.Number("ttft_ms", v => v > 0, "a positive number of milliseconds");
            double? tpot = slo.Number("tpot_ms", v => v > 0, "a positive number of milliseconds");
            if (ttft is not null || tpot is not null)
            {
                request.Slo = new Slo
                {
                    TimeToFirstToken = ttft is double a ? TimeSpan.FromMilliseconds(a) : null,
                    TimePerOutputToken = tpot is double b ? TimeSpan.FromMilliseconds(b) : null,
                };
            }
        }
        return request;
    }

    private static List<string>? ReadStop(JsonFields f)
    {
        if (f.Get("stop") is not { } stop) return null;
        List<string> stops;
        if (stop.ValueKind == JsonValueKind.String)
        {
            stops = [stop.GetString()!];
        }
        else if (stop.ValueKind == JsonValueKind.Array)
        {
            stops = [];
            int i = 0;
            foreach (var item in stop.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.String)
                    throw ApiException.BadRequest($"'stop[{i}]' must be a string, got {JsonFields.Describe(item.ValueKind)}", $"stop[{i}]", "invalid_type");
                stops.Add(item.GetString()!);
                i++;
            }
            if (stops.Count > MaxStopSequences)
                throw ApiException.BadRequest($"'stop' takes at most {MaxStopSequences} sequences, got {stops.Count}", "stop", "invalid_value");
        }
        else
        {
            throw f.WrongType("stop", "a string or an array of strings", stop);
        }
        if (stops.Any(s => s.Length == 0)) throw ApiException.BadRequest("'stop' sequences must not be empty", "stop", "invalid_value");
        return stops.Count == 0 ? null : stops;
    }

    /// <summary>
    /// The engine's options for a prompt of <paramref name="promptTokens"/> tokens: the requested
    /// max tokens (else <paramref name="defaultMaxTokens"/>, capped by the context), refused with both
    /// numbers when prompt plus output exceed the context.
    /// </summary>
    public GenerationOptions ToOptions(int promptTokens, int context, int? defaultMaxTokens, string promptField)
    {
        if (promptTokens >= context)
        {
            throw ApiException.BadRequest(
                $"This model's maximum context length is {context} tokens; the prompt has {promptTokens} tokens, leaving no room for a completion",
                promptField, "context_length_exceeded");
        }
        int maxTokens = MaxTokens ?? Math.Min(defaultMaxTokens ?? int.MaxValue, context - promptTokens);
        if ((long)promptTokens + maxTokens > context)
        {
            throw ApiException.BadRequest(
                $"This model's maximum context length is {context} tokens. However, you requested {(long)promptTokens + maxTokens} tokens " +
                $"({promptTokens} in the prompt, {maxTokens} for the completion: '{MaxTokensField}'). Reduce the prompt or '{MaxTokensField}'.",
                MaxTokensField, "context_length_exceeded");
        }
        return new GenerationOptions { MaxTokens = maxTokens, Sampling = Sampling, StopSequences = Stop, Task = Task, Slo = Slo };
    }
}
