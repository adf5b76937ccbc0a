using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using eMoE.Model;
using eMoE.Scheduling;
using Microsoft.Extensions.AI;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;
using TemplateMessage = eMoE.Model.ChatMessage;

namespace eMoE.Inference;

/// <summary>
/// <see cref="IChatClient"/> (Microsoft.Extensions.AI) over the in-process engine: the conversation
/// goes through the model's chat template (<see cref="ChatPrompt"/>), the engine batches concurrent
/// calls, and streaming yields text as it is decoded. Safe for concurrent calls. It does not own the
/// model: disposing it leaves the model loaded.
/// </summary>
/// <remarks>
/// <see cref="ChatOptions"/> maps to <see cref="GenerationOptions"/>: Temperature, TopP, TopK, Seed,
/// StopSequences and MaxOutputTokens (default: the rest of the context). eMoE's own settings come
/// through <see cref="ChatOptions.AdditionalProperties"/>: <c>"task"</c> (a string: the request's task
/// label) and <c>"slo_ttft_ms"</c>, <c>"slo_tpot_ms"</c> (numbers: its SLO). Messages are text only; tools
/// and response formats are not supported (they are ignored).
/// </remarks>
public sealed class MoeChatClient : IChatClient
{
    private readonly MoeModel _model;
    private readonly ChatTemplate _template;

    /// <summary>A chat client for <paramref name="model"/>.</summary>
    /// <param name="model">The loaded model (its engine serves every call).</param>
    /// <param name="template">The chat template; default <see cref="ChatTemplate.ForModel"/> of the model's directory.</param>
    /// <param name="modelId">The model id reported in responses; default the directory's name.</param>
    public MoeChatClient(MoeModel model, ChatTemplate? template = null, string? modelId = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _template = template ?? ChatTemplate.ForModel(model.Directory);
        ModelId = modelId ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(model.Directory)));
        Metadata = new ChatClientMetadata("eMoE", null, ModelId);
    }

    /// <summary>The model id reported in responses.</summary>
    public string ModelId { get; }

    /// <summary>Provider "eMoE" and the model id.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AiChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var (generation, created) = Start(messages, options);
        var text = new StringBuilder();
        await foreach (var token in generation.WithCancellation(cancellationToken).ConfigureAwait(false)) text.Append(token.Text);
        cancellationToken.ThrowIfCancellationRequested();
        text.Append(generation.FlushText());
        return new ChatResponse(new AiChatMessage(ChatRole.Assistant, text.ToString()))
        {
            ResponseId = created.Id,
            ModelId = ModelId,
            CreatedAt = created.At,
            FinishReason = Finish(generation.Stats.FinishReason),
            Usage = Usage(generation),
        };
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AiChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (generation, created) = Start(messages, options);
        await foreach (var token in generation.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            if (token.Text.Length > 0) yield return Update(token.Text, created);
        }
        cancellationToken.ThrowIfCancellationRequested();
        string tail = generation.FlushText();
        if (tail.Length > 0) yield return Update(tail, created);
        var last = Update(null, created);
        last.FinishReason = Finish(generation.Stats.FinishReason);
        last.Contents.Add(new UsageContent(Usage(generation)));
        yield return last;
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType == typeof(MoeModel)) return _model;
        if (serviceType == typeof(ChatTemplate)) return _template;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Nothing to release: the model stays loaded (dispose it yourself).</summary>
    public void Dispose()
    {
    }

    private readonly record struct Created(string Id, DateTimeOffset At);

    private ChatResponseUpdate Update(string? text, Created created) => new(ChatRole.Assistant, text)
    {
        ResponseId = created.Id,
        MessageId = created.Id,
        ModelId = ModelId,
        CreatedAt = created.At,
    };

    /// <summary>Renders and tokenizes the conversation and starts its generation (nothing runs until it is enumerated).</summary>
    private (Generation Generation, Created Created) Start(IEnumerable<AiChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var conversation = messages.Select(ToTemplateMessage).ToList();
        if (conversation.Count == 0) throw new ArgumentException("the conversation has no messages", nameof(messages));
        var prompt = ChatPrompt.Create(_model.RequireTokenizer(), _template, conversation);
        int room = _model.ContextLength - prompt.Ids.Count;
        if (room < 1)
            throw new ArgumentException($"the prompt has {prompt.Ids.Count} tokens; the context holds {_model.ContextLength}", nameof(messages));
        int maxTokens = options?.MaxOutputTokens ?? room;
        if (maxTokens < 1) throw new ArgumentException($"MaxOutputTokens must be at least 1, got {maxTokens}", nameof(options));
        if (maxTokens > room)
        {
            throw new ArgumentException(
                $"the prompt has {prompt.Ids.Count} tokens and MaxOutputTokens is {maxTokens}: {prompt.Ids.Count + maxTokens} tokens, but the context holds {_model.ContextLength}",
                nameof(options));
        }
        var generation = _model.Generate(prompt.Ids, ToGenerationOptions(options, maxTokens));
        return (generation, new Created("chatcmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow));
    }

    private static TemplateMessage ToTemplateMessage(AiChatMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        foreach (var content in message.Contents)
        {
            if (content is not (TextContent or UsageContent))
                throw new NotSupportedException($"eMoE's chat client takes text messages only, not {content.GetType().Name}");
        }
        return new TemplateMessage(message.Role.Value, message.Text);
    }

    /// <summary>The generation settings of <paramref name="options"/> (validated by the engine when it starts).</summary>
    internal static GenerationOptions ToGenerationOptions(ChatOptions? options, int maxTokens)
    {
        var sampling = new SamplingOptions
        {
            Temperature = options?.Temperature ?? 0f,
            TopP = options?.TopP ?? 1f,
            TopK = options?.TopK ?? 0,
            Seed = options?.Seed is long seed ? SamplingOptions.FoldSeed(seed) : null,
        };
        sampling.Validate();
        var extra = options?.AdditionalProperties;
        double? ttft = Milliseconds(extra, "slo_ttft_ms"), tpot = Milliseconds(extra, "slo_tpot_ms");
        var slo = ttft is null && tpot is null ? null : new Slo
        {
            TimeToFirstToken = ttft is double a ? TimeSpan.FromMilliseconds(a) : null,
            TimePerOutputToken = tpot is double b ? TimeSpan.FromMilliseconds(b) : null,
        };
        slo?.Validate();
        return new GenerationOptions
        {
            MaxTokens = maxTokens,
            Sampling = sampling,
            StopSequences = options?.StopSequences is { Count: > 0 } stops ? [.. stops] : null,
            Task = Text(extra, "task"),
            Slo = slo,
        };
    }

    private static string? Text(AdditionalPropertiesDictionary? extra, string key) =>
        extra is null || !extra.TryGetValue(key, out object? value) || value is null ? null
        : value switch
        {
            string s => s,
            JsonElement { ValueKind: JsonValueKind.String } e => e.GetString(),
            _ => throw new ArgumentException($"AdditionalProperties[\"{key}\"] must be a string, got {value.GetType().Name}"),
        };

    private static double? Milliseconds(AdditionalPropertiesDictionary? extra, string key)
    {
        if (extra is null || !extra.TryGetValue(key, out object? value) || value is null) return null;
        double ms = value switch
        {
            JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
            IConvertible c when value is not (string or bool) => c.ToDouble(CultureInfo.InvariantCulture),
            _ => throw new ArgumentException($"AdditionalProperties[\"{key}\"] must be a number of milliseconds, got {value}"),
        };
        if (!(ms > 0) || double.IsInfinity(ms)) throw new ArgumentException($"AdditionalProperties[\"{key}\"] must be a positive number of milliseconds, got {ms}");
        return ms;
    }

    private static ChatFinishReason Finish(FinishReason reason) =>
        reason is FinishReason.MaxTokens or FinishReason.ContextFull ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails Usage(Generation generation) => new()
    {
        InputTokenCount = generation.Stats.PromptTokens,
        OutputTokenCount = generation.Stats.GeneratedTokens,
        TotalTokenCount = generation.Stats.PromptTokens + generation.Stats.GeneratedTokens,
    };
}

/// <summary>The <see cref="IChatClient"/> of a model.</summary>
public static class MoeChatClientExtensions
{
    /// <summary>An <see cref="IChatClient"/> over <paramref name="model"/>'s engine (see <see cref="MoeChatClient"/>); it does not own the model.</summary>
    public static IChatClient AsChatClient(this MoeModel model, ChatTemplate? template = null, string? modelId = null) =>
        new MoeChatClient(model, template, modelId);
}
