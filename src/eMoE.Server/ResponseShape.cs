using System.Text.Json;

namespace eMoE.Server;

/// <summary>Token counts of a response's <c>usage</c>.</summary>
internal readonly record struct Usage(int PromptTokens, int CompletionTokens)
{
    public void Write(Utf8JsonWriter json)
    {
        json.WriteStartObject("usage");
        json.WriteNumber("prompt_tokens", PromptTokens);
        json.WriteNumber("completion_tokens", CompletionTokens);
        json.WriteNumber("total_tokens", PromptTokens + CompletionTokens);
        json.WriteEndObject();
    }
}

/// <summary>
/// The JSON of one endpoint's answers: a whole response, a streamed chunk, the final chunk with
/// finish_reason, and the usage chunk (empty choices). Chat completions and text completions differ
/// only in their object names and choices.
/// </summary>
internal abstract class ResponseShape(string id, long created, string model)
{
    protected abstract string ObjectName { get; }
    protected abstract string ChunkObjectName { get; }

    /// <summary>The choice of a whole response.</summary>
    protected abstract void WriteChoice(Utf8JsonWriter json, string text, string finish);

    /// <summary>A streamed choice: <paramref name="text"/> (null: none), the role on the first chunk, finish_reason on the last.</summary>
    protected abstract void WriteDelta(Utf8JsonWriter json, string? text, bool role, string? finish);

    private void Envelope(Utf8JsonWriter json, string objectName)
    {
        json.WriteString("id", id);
        json.WriteString("object", objectName);
        json.WriteNumber("created", created);
        json.WriteString("model", model);
        json.WriteNull("system_fingerprint");
    }

    public void WriteResponse(Utf8JsonWriter json, string text, string finish, Usage usage)
    {
        json.WriteStartObject();
        Envelope(json, ObjectName);
        json.WriteStartArray("choices");
        WriteChoice(json, text, finish);
        json.WriteEndArray();
        usage.Write(json);
        json.WriteEndObject();
    }

    public void WriteChunk(Utf8JsonWriter json, string? text, bool role, string? finish, bool usageNull)
    {
        json.WriteStartObject();
        Envelope(json, ChunkObjectName);
        json.WriteStartArray("choices");
        WriteDelta(json, text, role, finish);
        json.WriteEndArray();
        if (usageNull) json.WriteNull("usage");
        json.WriteEndObject();
    }

    public void WriteUsageChunk(Utf8JsonWriter json, Usage usage)
    {
        json.WriteStartObject();
        Envelope(json, ChunkObjectName);
        json.WriteStartArray("choices");
        json.WriteEndArray();
        usage.Write(json);
        json.WriteEndObject();
    }
}

/// <summary><c>chat.completion</c> and <c>chat.completion.chunk</c>.</summary>
internal sealed class ChatShape(string id, long created, string model) : ResponseShape(id, created, model)
{
    protected override string ObjectName => "chat.completion";
    protected override string ChunkObjectName => "chat.completion.chunk";

    protected override void WriteChoice(Utf8JsonWriter json, string text, string finish)
    {
        json.WriteStartObject();
        json.WriteNumber("index", 0);
        json.WriteStartObject("message");
        json.WriteString("role", "assistant");
        json.WriteString("content", text);
        json.WriteEndObject();
        json.WriteNull("logprobs");
        json.WriteString("finish_reason", finish);
        json.WriteEndObject();
    }

    protected override void WriteDelta(Utf8JsonWriter json, string? text, bool role, string? finish)
    {
        json.WriteStartObject();
        json.WriteNumber("index", 0);
        json.WriteStartObject("delta");
        if (role) json.WriteString("role", "assistant");
        if (text is not null) json.WriteString("content", text);
        json.WriteEndObject();
        json.WriteNull("logprobs");
        if (finish is null) json.WriteNull("finish_reason");
        else json.WriteString("finish_reason", finish);
        json.WriteEndObject();
    }
}

/// <summary><c>text_completion</c> (its chunks have the same object name, as OpenAI's do).</summary>
internal sealed class TextShape(string id, long created, string model) : ResponseShape(id, created, model)
{
    protected override string ObjectName => "text_completion";
    protected override string ChunkObjectName => "text_completion";

    protected override void WriteChoice(Utf8JsonWriter json, string text, string finish)
    {
        json.WriteStartObject();
        json.WriteString("text", text);
        json.WriteNumber("index", 0);
        json.WriteNull("logprobs");
        json.WriteString("finish_reason", finish);
        json.WriteEndObject();
    }

    protected override void WriteDelta(Utf8JsonWriter json, string? text, bool role, string? finish)
    {
        json.WriteStartObject();
        json.WriteString("text", text ?? "");
        json.WriteNumber("index", 0);
        json.WriteNull("logprobs");
        if (finish is null) json.WriteNull("finish_reason");
        else json.WriteString("finish_reason", finish);
        json.WriteEndObject();
    }
}
