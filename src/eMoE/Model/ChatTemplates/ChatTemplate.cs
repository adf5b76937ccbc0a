using System.Text.Json;
using eMoE.Model.Jinja;

namespace eMoE.Model;

/// <summary>One message of a conversation: its role (system, user, assistant, tool) and text.</summary>
/// <param name="Role">Who speaks: <c>system</c>, <c>user</c>, <c>assistant</c>, <c>tool</c> (templates may know others).</param>
/// <param name="Content">What is said.</param>
public sealed record ChatMessage(string Role, string Content);

/// <summary>The variables a chat template is rendered with, besides the messages.</summary>
public sealed record ChatTemplateOptions
{
    /// <summary><c>add_generation_prompt</c>: end with the opening of an assistant turn (default true).</summary>
    public bool AddGenerationPrompt { get; init; } = true;

    /// <summary><c>bos_token</c>; default: the template's <see cref="ChatTemplate.BosToken"/> (from tokenizer_config.json).</summary>
    public string? BosToken { get; init; }

    /// <summary><c>eos_token</c>; default: the template's <see cref="ChatTemplate.EosToken"/> (from tokenizer_config.json).</summary>
    public string? EosToken { get; init; }

    /// <summary>
    /// More variables (<c>tools</c>, <c>enable_thinking</c>, <c>date_string</c>...): strings, booleans,
    /// numbers, null, <see cref="JsonElement"/>s, dictionaries with string keys and sequences of these.
    /// They override the ones above.
    /// </summary>
    public IReadOnlyDictionary<string, object?>? Variables { get; init; }

    /// <summary>The clock of <c>strftime_now</c> (its local time); default the system's.</summary>
    public TimeProvider? Clock { get; init; }
}

/// <summary>
/// A Hugging Face chat template (the Jinja <c>chat_template</c> of <c>tokenizer_config.json</c>),
/// parsed once and rendered with a conversation. The renderer implements the part of Jinja2 that
/// chat templates use, with the semantics of <c>@huggingface/jinja</c> (what transformers.js
/// renders with), against which it is tested on real templates. Rendering is thread-safe.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>
    /// The source of <see cref="Fallback"/>: every message as <c>&lt;|role|&gt;\n{content}\n</c>, then
    /// <c>&lt;|assistant|&gt;\n</c> with the generation prompt.
    /// </summary>
    internal const string FallbackSource = """
        {#- eMoE's plain fallback for a model without a chat template: <|role|>, a newline, the content, a newline. -#}
        {%- for message in messages -%}
            {%- if message.role is not string -%}
                {{- raise_exception('The plain fallback chat template needs a role in message ' ~ loop.index) -}}
            {%- elif message.role not in ['system', 'user', 'assistant', 'tool'] -%}
                {{- raise_exception("The plain fallback chat template supports the roles system, user, assistant and tool, not '" ~ message.role ~ "'") -}}
            {%- elif message.content is not string -%}
                {{- raise_exception('The plain fallback chat template needs text content in message ' ~ loop.index) -}}
            {%- endif -%}
            {{- '<|' ~ message.role ~ '|>\n' ~ message.content ~ '\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<|assistant|>\n' -}}
        {%- endif -%}

        """;

    private readonly List<Node> _program;

    private ChatTemplate(string source, List<Node> program, string? bosToken, string? eosToken, bool isFallback)
    {
        Source = source;
        _program = program;
        BosToken = bosToken;
        EosToken = eosToken;
        IsFallback = isFallback;
    }

    /// <summary>The Jinja source.</summary>
    public string Source { get; }

    /// <summary>The model's BOS token (tokenizer_config.json's <c>bos_token</c>), used when the options give none.</summary>
    public string? BosToken { get; }

    /// <summary>The model's EOS token (tokenizer_config.json's <c>eos_token</c>), used when the options give none.</summary>
    public string? EosToken { get; }

    /// <summary>True for <see cref="Fallback"/> (the model has no template of its own).</summary>
    public bool IsFallback { get; }

    /// <summary>
    /// The plain template for models without one (such as the shipped weights/tiny-mixtral): each
    /// message as <c>&lt;|role|&gt;</c>, a newline, its content and a newline; with the generation
    /// prompt, <c>&lt;|assistant|&gt;</c> and a newline. Role markers that cannot be mistaken for
    /// text, no special tokens (the tokenizer adds BOS as its configuration says, so the prompt does
    /// not repeat it), the layout of Zephyr-style templates. Roles other than system, user,
    /// assistant and tool, and content that is not text, are errors
    /// (<see cref="TemplateRaisedException"/>).
    /// </summary>
    public static ChatTemplate Fallback { get; } = new(FallbackSource, Parser.Parse(FallbackSource), null, null, isFallback: true);

    /// <summary>Parses a template; a <see cref="TemplateSyntaxException"/> (with line and column) if it is not valid.</summary>
    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(source, Parser.Parse(source), null, null, isFallback: false);
    }

    /// <summary>
    /// The chat template of a model directory: <c>chat_template.jinja</c> if present (as transformers
    /// saves it), else <c>chat_template</c> of <c>tokenizer_config.json</c> (a string, or the one named
    /// "default" of a list of named templates); null when there is none. BOS and EOS come from
    /// tokenizer_config.json (<see cref="ReadSpecialTokens"/>). Needs no config.json or weights.
    /// </summary>
    public static ChatTemplate? FromTokenizerConfig(string modelDirectory)
    {
        if (!Directory.Exists(modelDirectory)) throw new DirectoryNotFoundException($"{modelDirectory}: not found");
        string configFile = Path.Combine(modelDirectory, "tokenizer_config.json");
        string jinjaFile = Path.Combine(modelDirectory, "chat_template.jinja");
        string? source = File.Exists(jinjaFile) ? File.ReadAllText(jinjaFile)
            : File.Exists(configFile) ? TokenizerConfig.ReadChatTemplate(configFile) : null;
        if (source is null) return null;
        var (bos, eos) = ReadSpecialTokens(modelDirectory);
        return new ChatTemplate(source, Parser.Parse(source), bos, eos, isFallback: false);
    }

    /// <summary>The model directory's own template, else <see cref="Fallback"/> (with the directory's BOS and EOS).</summary>
    public static ChatTemplate ForModel(string modelDirectory)
    {
        var own = FromTokenizerConfig(modelDirectory);
        if (own is not null) return own;
        var (bos, eos) = ReadSpecialTokens(modelDirectory);
        return new ChatTemplate(FallbackSource, Fallback._program, bos, eos, isFallback: true);
    }

    /// <summary>
    /// <c>bos_token</c> and <c>eos_token</c> of a directory's tokenizer_config.json (each a string or an
    /// object with "content"); nulls when absent.
    /// </summary>
    public static (string? BosToken, string? EosToken) ReadSpecialTokens(string modelDirectory)
    {
        string configFile = Path.Combine(modelDirectory, "tokenizer_config.json");
        var config = File.Exists(configFile) ? TokenizerConfig.Read(configFile) : TokenizerConfig.Empty;
        return (config.BosToken, config.EosToken);
    }

    /// <summary>The prompt for <paramref name="messages"/> (each as <c>{"role": ..., "content": ...}</c>).</summary>
    /// <exception cref="TemplateRaisedException">The template refused the conversation (its <c>raise_exception</c>).</exception>
    /// <exception cref="ChatTemplateException">The template failed on these messages.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, ChatTemplateOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        return Render(new ListValue([.. messages.Select(m => (Value)Values.FromMessage(m))]), options);
    }

    /// <summary>
    /// The prompt for a JSON array of message objects, which pass to the template as they are
    /// (<c>tool_calls</c>, <c>reasoning_content</c>, list content...).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="messages"/> is not a JSON array.</exception>
    /// <exception cref="TemplateRaisedException">The template refused the conversation (its <c>raise_exception</c>).</exception>
    /// <exception cref="ChatTemplateException">The template failed on these messages.</exception>
    public string RenderJson(JsonElement messages, ChatTemplateOptions? options = null)
    {
        if (messages.ValueKind != JsonValueKind.Array) throw new ArgumentException($"messages must be a JSON array, not {messages.ValueKind}", nameof(messages));
        return Render(Values.FromJson(messages), options);
    }

    private string Render(Value messages, ChatTemplateOptions? options)
    {
        options ??= new ChatTemplateOptions();
        var context = new List<KeyValuePair<string, Value>>
        {
            new("messages", messages),
            new("add_generation_prompt", Value.Bool(options.AddGenerationPrompt)),
        };
        if ((options.BosToken ?? BosToken) is string bos) context.Add(new("bos_token", Value.Str(bos)));
        if ((options.EosToken ?? EosToken) is string eos) context.Add(new("eos_token", Value.Str(eos)));
        foreach (var (name, value) in options.Variables ?? new Dictionary<string, object?>())
            context.Add(new(name, Values.FromObject(value, name)));
        return new Interpreter(Source, options.Clock ?? TimeProvider.System).Render(_program, context);
    }
}
