using System.Text;
using System.Text.Json;
using eMoE.Model;

namespace eMoE.Server;

/// <summary>
/// A <c>POST /v1/chat/completions</c> body: <c>messages</c> (each with a known role and text content:
/// a string or <c>{"type": "text", "text": ...}</c> parts) and the shared generation fields.
/// </summary>
internal sealed class ChatRequest
{
    /// <summary>Roles the templates know; OpenAI's "developer" is a system message.</summary>
    private static readonly string[] Roles = ["system", "user", "assistant", "tool", "developer"];

    public required IReadOnlyList<ChatMessage> Messages { get; init; }
    public required GenerationRequest Generation { get; init; }

    public static ChatRequest Read(JsonElement body, string servedModel, SamplingDefaults defaults)
    {
        var f = new JsonFields(body);
        var messages = ReadMessages(f);
        if (f.Get("logprobs") is { ValueKind: JsonValueKind.True })
            throw ApiException.BadRequest("'logprobs' are not supported by this server", "logprobs", "unsupported_value");
        return new ChatRequest { Messages = messages, Generation = GenerationRequest.Read(f, servedModel, defaults) };
    }

    private static List<ChatMessage> ReadMessages(JsonFields f)
    {
        if (f.Get("messages") is not { } list) throw ApiException.BadRequest("'messages' is required", "messages", "missing_field");
        if (list.ValueKind != JsonValueKind.Array) throw f.WrongType("messages", "an array of messages", list);
        var messages = new List<ChatMessage>();
        int i = 0;
        foreach (var item in list.EnumerateArray())
        {
            string at = $"messages[{i}]";
            if (item.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest($"'{at}' must be an object with 'role' and 'content', got {JsonFields.Describe(item.ValueKind)}", at, "invalid_type");
            var m = new JsonFields(item, at);
            string role = m.String("role") ?? throw ApiException.BadRequest($"'{at}.role' is required", $"{at}.role", "missing_field");
            if (!Roles.Contains(role, StringComparer.Ordinal))
            {
                throw ApiException.BadRequest($"'{at}.role' must be one of {string.Join(", ", Roles)}, got '{role}'", $"{at}.role",
                    "invalid_value");
            }
            if (role == "developer") role = "system";
            messages.Add(new ChatMessage(role, ReadContent(m, at, role)));
            i++;
        }
        if (messages.Count == 0) throw ApiException.BadRequest("'messages' must not be empty", "messages", "invalid_value");
        return messages;
    }

    /// <summary>A string, or text parts joined; null only for an assistant message (empty).</summary>
    private static string ReadContent(JsonFields m, string at, string role)
    {
        if (m.Get("content") is not { } content)
        {
            if (role == "assistant") return "";
            throw ApiException.BadRequest($"'{at}.content' is required", $"{at}.content", "missing_field");
        }
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        if (content.ValueKind != JsonValueKind.Array) throw m.WrongType("content", "a string or an array of text parts", content);
        var text = new StringBuilder();
        int j = 0;
        foreach (var part in content.EnumerateArray())
        {
            string partAt = $"{at}.content[{j}]";
            if (part.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest($"'{partAt}' must be a content part object, got {JsonFields.Describe(part.ValueKind)}", partAt, "invalid_type");
            var p = new JsonFields(part, partAt);
            string type = p.String("type") ?? throw ApiException.BadRequest($"'{partAt}.type' is required", $"{partAt}.type", "missing_field");
            if (type != "text")
                throw ApiException.BadRequest($"'{partAt}.type' must be \"text\" (this model reads text only), got '{type}'", $"{partAt}.type", "unsupported_value");
            text.Append(p.String("text") ?? throw ApiException.BadRequest($"'{partAt}.text' is required", $"{partAt}.text", "missing_field"));
            j++;
        }
        return text.ToString();
    }
}

/// <summary>
/// A <c>POST /v1/completions</c> body: <c>prompt</c> as a string, token ids, or an array holding one
/// of these (arrays of more than one prompt are refused: send one request per prompt), <c>echo</c>,
/// and the shared generation fields.
/// </summary>
internal sealed class CompletionRequest
{
    /// <summary>The prompt text, or null when it was given as token ids.</summary>
    public string? Text { get; init; }
    public IReadOnlyList<int>? Ids { get; init; }
    public bool Echo { get; init; }
    public required GenerationRequest Generation { get; init; }

    public static CompletionRequest Read(JsonElement body, string servedModel, SamplingDefaults defaults, int vocabSize)
    {
        var f = new JsonFields(body);
        if (f.Get("prompt") is not { } prompt) throw ApiException.BadRequest("'prompt' is required", "prompt", "missing_field");
        string? text = null;
        IReadOnlyList<int>? ids = null;
        if (prompt.ValueKind == JsonValueKind.String)
        {
            text = prompt.GetString();
        }
        else if (prompt.ValueKind == JsonValueKind.Array)
        {
            int count = prompt.GetArrayLength();
            if (count == 0) throw ApiException.BadRequest("'prompt' must not be an empty array", "prompt", "invalid_value");
            var first = prompt[0];
            if (first.ValueKind == JsonValueKind.Number)
            {
                ids = ReadIds(prompt, "prompt", vocabSize);
            }
            else if (first.ValueKind is JsonValueKind.String or JsonValueKind.Array)
            {
                if (count > 1)
                {
                    throw ApiException.BadRequest(
                        $"'prompt' holds {count} prompts; this server takes one prompt per request (send {count} requests)", "prompt", "unsupported_value");
                }
                if (first.ValueKind == JsonValueKind.String) text = first.GetString();
                else ids = ReadIds(first, "prompt[0]", vocabSize);
            }
            else
            {
                throw ApiException.BadRequest($"'prompt[0]' must be a string, a token id or an array of token ids, got {JsonFields.Describe(first.ValueKind)}",
                    "prompt[0]", "invalid_type");
            }
        }
        else
        {
            throw f.WrongType("prompt", "a string, an array of strings or an array of token ids", prompt);
        }
        if (f.Get("logprobs") is { ValueKind: JsonValueKind.Number } lp && lp.TryGetInt32(out int n) && n > 0)
            throw ApiException.BadRequest("'logprobs' are not supported by this server", "logprobs", "unsupported_value");
        if (f.Integer("best_of", long.MinValue, long.MaxValue) is long best && best != 1)
            throw ApiException.BadRequest($"'best_of' must be 1, got {best}", "best_of", "invalid_value");
        return new CompletionRequest { Text = text, Ids = ids, Echo = f.Bool("echo") ?? false, Generation = GenerationRequest.Read(f, servedModel, defaults) };
    }

    private static List<int> ReadIds(JsonElement array, string at, int vocabSize)
    {
        var ids = new List<int>();
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id) || id < 0 || id >= vocabSize)
            {
                throw ApiException.BadRequest($"'{at}[{i}]' must be a token id between 0 and {vocabSize - 1}, got {item.GetRawText()}", $"{at}[{i}]",
                    "invalid_value");
            }
            ids.Add(id);
            i++;
        }
        if (ids.Count == 0) throw ApiException.BadRequest($"'{at}' must not be empty", at, "invalid_value");
        return ids;
    }
}
