using System.Text.Json;
using NUnit.Framework;

namespace eMoE.Tests.ChatTemplates;

/// <summary><c>emoe template</c> in-process: the prompt exactly on stdout, errors as one line.</summary>
[NonParallelizable]
public sealed class TemplateCommandTests
{
    private static readonly ChatTemplateFixtures.Golden Golden = ChatTemplateFixtures.LoadGolden();

    private static Task<(int Code, string Out, string Err)> Emoe(params string[] args) => eMoE.Tests.Cli.CliTests.Emoe(args);

    /// <summary>A model directory holding only a tokenizer_config.json with this fixture's template.</summary>
    private static string TokenizerOnlyModel(string template)
    {
        string dir = Directory.CreateTempSubdirectory("emoe-template-cli-").FullName;
        var config = new Dictionary<string, object?>
        {
            ["bos_token"] = Golden.BosToken,
            ["eos_token"] = new Dictionary<string, object?> { ["content"] = Golden.EosToken, ["special"] = true },
            ["chat_template"] = ChatTemplateFixtures.TemplateSource(template),
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config));
        return dir;
    }

    private static string MessageSet(string name) => Path.Combine(ChatTemplateFixtures.Directory, "messages", name + ".json");

    private static string GoldenOutput(string template, string messages, bool prompt) =>
        Golden.Cases.Single(c => c.Template == template && c.Messages == messages && c.AddGenerationPrompt == prompt).Output!;

    [TestCase("qwen3", "tool_call_string_args")]
    [TestCase("mistral_nemo", "tool_call")]
    [TestCase("llama3_1", "multi_turn")]
    [TestCase("deepseek_r1", "thinking")]
    public async Task PrintsTheOraclesPromptExactly(string template, string messages)
    {
        string dir = TokenizerOnlyModel(template);
        var (code, stdout, stderr) = await Emoe("template", "--model", dir, "--messages", MessageSet(messages));
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Is.EqualTo(GoldenOutput(template, messages, prompt: true)));
        Assert.That(stderr, Is.Empty);

        var (code2, withoutPrompt, _) = await Emoe("template", "--model", dir, "--messages", MessageSet(messages), "--no-generation-prompt");
        Assert.That(code2, Is.EqualTo(0));
        Assert.That(withoutPrompt, Is.EqualTo(GoldenOutput(template, messages, prompt: false)));
    }

    [Test]
    public async Task TheShippedModelUsesThePlainFallback()
    {
        var (code, stdout, stderr) = await Emoe("template", "--model", RepoPaths.ShippedModel, "--messages", MessageSet("system_user"));
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Is.EqualTo("<|system|>\nYou are a helpful assistant.\n<|user|>\nHello, how are you?\n<|assistant|>\n"));
        Assert.That(stderr, Does.Contain("plain fallback"));
        var (_, withoutPrompt, _) = await Emoe("template", "--model", RepoPaths.ShippedModel, "--messages", MessageSet("user_only"), "--no-generation-prompt");
        Assert.That(withoutPrompt, Is.EqualTo("<|user|>\nWhat is the capital of France?\n"));
    }

    [TestCase(null, "not found")]
    [TestCase("{ not json", "not JSON")]
    [TestCase("\"a string\"", "expected an array of messages or {\"messages\": [...]}, got a string")]
    [TestCase("{\"conversation\": []}", "an object needs \"messages\"")]
    [TestCase("[{\"role\": \"user\", \"content\": \"hi\"}, {\"content\": \"no role\"}]", "message 2 has no \"role\" string")]
    [TestCase("[{\"role\": \"user\", \"content\": \"hi\"}, 7]", "message 2 is a number, not an object")]
    public async Task BadMessageFilesAreOneLineErrors(string? content, string message)
    {
        string file = Path.Combine(Directory.CreateTempSubdirectory("emoe-template-cli-").FullName, "messages.json");
        if (content is not null) File.WriteAllText(file, content);
        var (code, stdout, stderr) = await Emoe("template", "--model", RepoPaths.ShippedModel, "--messages", file);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith("emoe: error: ").And.Contain(message).And.Contain(file));
    }

    [Test]
    public async Task ATemplatesRefusalIsAnError()
    {
        var (code, stdout, stderr) = await Emoe("template", "--model", TokenizerOnlyModel("gemma2"), "--messages", MessageSet("system_user"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd(), Is.EqualTo("emoe: error: the chat template refused the conversation: System role not supported"));
    }

    [Test]
    public async Task AnInvalidTemplateSaysWhere()
    {
        string dir = Directory.CreateTempSubdirectory("emoe-template-cli-").FullName;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}\n{{ m.role }"}""");
        var (code, _, stderr) = await Emoe("template", "--model", dir, "--messages", MessageSet("user_only"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("emoe: error: ").And.Contain("not valid Jinja: line 2"));
    }

    [Test]
    public async Task AMissingModelDirectoryIsAnError()
    {
        var (code, _, stderr) = await Emoe("template", "--model", "/nonexistent/model", "--messages", MessageSet("user_only"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("emoe: error: ").And.Contain("/nonexistent/model"));
    }
}
