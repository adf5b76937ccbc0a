using System.Text.Json;

namespace eMoE.Model;

/// <summary>The few fields of <c>tokenizer_config.json</c> that affect ids; and its chat template.</summary>
internal sealed record TokenizerConfig(bool AddBosToken, bool AddEosToken, string? BosToken, string? EosToken)
{
    /// <summary>What applies when the model directory has no tokenizer_config.json.</summary>
    public static TokenizerConfig Empty { get; } = new(false, false, null, null);

    /// <summary>Reads <paramref name="path"/>; absent flags count as false, like HF's fast tokenizers.</summary>
    public static TokenizerConfig Read(string path) => Parse(path, root =>
        new TokenizerConfig(Flag(root, "add_bos_token"), Flag(root, "add_eos_token"), TokenContent(root, "bos_token"), TokenContent(root, "eos_token")));

    /// <summary>
    /// The <c>chat_template</c> of <paramref name="path"/>: a string, or the template named "default"
    /// of a list of <c>{"name", "template"}</c>; null when there is none.
    /// </summary>
    public static string? ReadChatTemplate(string path) => Parse(path, root =>
    {
        if (!root.TryGetProperty("chat_template", out var template) || template.ValueKind == JsonValueKind.Null) return null;
        if (template.ValueKind == JsonValueKind.String) return template.GetString();
        if (template.ValueKind != JsonValueKind.Array) throw new ModelFormatException($"{path}: chat_template must be a string or a list of named templates");
        var names = new List<string>();
        foreach (var named in template.EnumerateArray())
        {
            string name = named.GetProperty("name").GetString()!;
            if (name == "default") return named.GetProperty("template").GetString();
            names.Add(name);
        }
        throw new ModelFormatException($"{path}: chat_template has the named templates {string.Join(", ", names)} but none named 'default'");
    });

    private static T Parse<T>(string path, Func<JsonElement, T> read)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return read(doc.RootElement);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: malformed JSON: {e.Message}", e);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException)
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
