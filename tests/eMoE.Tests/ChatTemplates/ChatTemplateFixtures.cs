using System.Text.Json;
using eMoE.Model;

namespace eMoE.Tests.ChatTemplates;

/// <summary>The templates and message sets of tests/fixtures/chat_templates and the oracle's goldens.</summary>
public static class ChatTemplateFixtures
{
    internal static string Directory => RepoPaths.Combine("tests", "fixtures", "chat_templates");

    internal static string TemplateSource(string name) => File.ReadAllText(Path.Combine(Directory, name + ".jinja"));

    /// <summary>A message set: its messages, and its other keys as template variables.</summary>
    internal static (JsonElement Messages, Dictionary<string, object?> Variables) MessageSet(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Directory, "messages", name + ".json")));
        var root = doc.RootElement.Clone();
        if (root.ValueKind == JsonValueKind.Array) return (root, []);
        var variables = root.EnumerateObject().Where(p => p.Name != "messages").ToDictionary(p => p.Name, p => (object?)p.Value);
        return (root.GetProperty("messages"), variables);
    }

    internal static Golden LoadGolden() =>
        JsonSerializer.Deserialize<Golden>(File.ReadAllText(RepoPaths.Combine("tests", "golden", "chat_templates.json")), JsonOptions)!;

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public sealed record Golden(string Oracle, string BosToken, string EosToken, DateTimeOffset Now, List<GoldenCase> Cases);

    public sealed record GoldenCase(string Template, string Messages, bool AddGenerationPrompt, string? Output, string? Error, bool? Raised)
    {
        public override string ToString() => $"{Template} x {Messages} (generation prompt: {AddGenerationPrompt})";
    }

    internal static ChatTemplateOptions Options(Golden golden, bool addGenerationPrompt, IReadOnlyDictionary<string, object?> variables) => new()
    {
        AddGenerationPrompt = addGenerationPrompt,
        BosToken = golden.BosToken,
        EosToken = golden.EosToken,
        Variables = variables,
        Clock = new FixedClock(golden.Now),
    };
}

/// <summary>A clock stopped at one instant, in UTC.</summary>
internal sealed class FixedClock(DateTimeOffset now) : TimeProvider
{
    public override DateTimeOffset GetUtcNow() => now.ToUniversalTime();

    public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
}
