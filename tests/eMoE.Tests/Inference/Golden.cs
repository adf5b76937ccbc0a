using System.Text.Json;
using System.Text.Json.Serialization;

namespace eMoE.Tests.Inference;

/// <summary>Golden values written by tests/reference/make_goldens.py (an independent torch reference).</summary>
internal sealed class Golden
{
    [JsonPropertyName("model")] public string Model { get; set; } = "";
    [JsonPropertyName("dtype")] public string DType { get; set; } = "";
    [JsonPropertyName("prompts")] public List<GoldenPrompt> Prompts { get; set; } = [];
    [JsonPropertyName("perplexity")] public GoldenPerplexity Perplexity { get; set; } = new();

    public static Golden Load(string name) =>
        JsonSerializer.Deserialize<Golden>(File.ReadAllBytes(RepoPaths.Combine("tests", "golden", name + ".json")))
        ?? throw new InvalidDataException($"golden {name} is empty");
}

internal sealed class GoldenPrompt
{
    [JsonPropertyName("ids")] public List<int> Ids { get; set; } = [];
    [JsonPropertyName("logits")] public List<float[]> Logits { get; set; } = [];
    [JsonPropertyName("last_logits")] public float[] LastLogits { get; set; } = [];
    [JsonPropertyName("greedy")] public List<int> Greedy { get; set; } = [];
}

internal sealed class GoldenPerplexity
{
    [JsonPropertyName("ids")] public List<int> Ids { get; set; } = [];
    [JsonPropertyName("context")] public int Context { get; set; }
    [JsonPropertyName("tokens")] public long Tokens { get; set; }
    [JsonPropertyName("nll")] public double Nll { get; set; }
    [JsonPropertyName("perplexity")] public double Perplexity { get; set; }
    [JsonPropertyName("file")] public string? File { get; set; }
    [JsonPropertyName("chars")] public int? Chars { get; set; }
}
