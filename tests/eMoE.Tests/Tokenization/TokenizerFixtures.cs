using System.Text.Json;

namespace eMoE.Tests.Tokenization;

/// <summary>Locates the repository and reads the golden files written by make_goldens.js.</summary>
internal static class TokenizerFixtures
{
    /// <summary>
    /// Qwen2-style byte-level BPE; Mistral-style BPE with byte fallback (Prepend + Replace normalizer);
    /// the same vocabulary with transformers' non-legacy Metaspace("first") layout; and with the
    /// SentencePieceBPETokenizer layout (splitting Metaspace, Metaspace + ByteFallback decoder).
    /// </summary>
    public static readonly string[] Names = ["bytelevel", "sentencepiece", "metaspace", "metaspace_split"];

    public static string Directory(string name) => RepoPaths.Combine("tests", "fixtures", "tokenizers", name);

    public static Goldens Load(string name) =>
        JsonSerializer.Deserialize<Goldens>(File.ReadAllText(Path.Combine(Directory(name), "goldens.json")), Options)!;

    public static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public sealed record Goldens(List<GoldenCase> Cases, List<InvalidCase>? InvalidUtf8, List<GoldenCase>? Fuzz, List<PreTokenizedCase>? PreTokenized);

    public sealed record PreTokenizedCase(string Text, string[] Pieces);

    public sealed record GoldenCase(string Text, int[] Ids, int[] IdsWithSpecial, string? Decoded, string? DecodedWithSpecial);

    public sealed record InvalidCase(int[] Ids, string Decoded);
}
