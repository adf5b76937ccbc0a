using System.Text.Json;

namespace eMoE.Model;

/// <summary>The few fields of <c>tokenizer_config.json</c> that affect ids.</summary>
internal sealed record TokenizerConfig(bool AddBosToken, bool AddEosToken, string? BosToken, string? EosToken)
{
    /// <summary>What applies when the model directory has no tokenizer_config.json.</summary>
    public static TokenizerConfig Empty { get; } = new(false, false, null, null);

    /// <summary>Reads <paramref name="path"/>; absent flags count as false, like HF's fast tokenizers.</summary>
    public static TokenizerConfig Read(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            return new TokenizerConfig(Flag(root, "add_bos_token"), Flag(root, "add_eos_token"),
                TokenContent(root, "bos_token"), TokenContent(root, "eos_token"));
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: malformed JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new ModelFormatException($"{path}: unexpected content: {e.Message}", e);
        }
    }

    private static bool Flag(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    // Either "<s>" or the serialized AddedToken {"content": "<s>", ...}.
    private static string? TokenContent(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v))
        {
            return null;
        }

        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) => c.GetString(),
            _ => null,
        };
    }
}
