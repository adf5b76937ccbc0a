using System.Text.Json;
using System.Text.Json.Serialization;

namespace eMoE.GpuCheck.Checks;

/// <summary>Golden values written by tests/reference/make_goldens.py (an independent torch reference).</summary>
internal sealed class Golden
{
    [JsonPropertyName("model")] public string Model { get; set; } = "";
    [JsonPropertyName("dtype")] public string DType { get; set; } = "";
    [JsonPropertyName("prompts")] public List<GoldenPrompt> Prompts { get; set; } = [];
    [JsonPropertyName("perplexity")] public GoldenPerplexity Perplexity { get; set; } = new();

    /// <summary>Reads a golden file (tests/golden/NAME.json).</summary>
    public static Golden Load(string path) =>
        JsonSerializer.Deserialize(File.ReadAllBytes(path), GoldenJson.Default.Golden)
        ?? throw new InvalidDataException($"golden {path} is empty");
}

internal sealed class GoldenPrompt
{
    [JsonPropertyName("text")] public string? Text { get; set; }
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

/// <summary>Source-generated reading (no reflection: the published check is trimmed).</summary>
[JsonSerializable(typeof(Golden))]
internal sealed partial class GoldenJson : JsonSerializerContext;
