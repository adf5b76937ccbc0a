using System.Text.Json;
using eMoE.Model;
using eMoE.Model.Jinja;
using NUnit.Framework;

namespace eMoE.Tests.ChatTemplates;

/// <summary>Errors, the fallback, loading from a model directory, variables, and what goes beyond the oracle.</summary>
public sealed class ChatTemplateTests
{
    private static string Render(string template, ChatTemplateOptions? options = null) => ChatTemplateFeatureTests.Render(template, options);

    [Test]
    public void RaiseExceptionSurfacesTheTemplatesMessage()
    {
        var e = Assert.Throws<TemplateRaisedException>(() => Render("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported (' ~ messages | length ~ ' messages)') }}{% endif %}"));
        Assert.That(e!.Message, Is.EqualTo("System role not supported (2 messages)"));
        Assert.That(e, Is.InstanceOf<ChatTemplateException>());
    }

    [TestCase("{% if x %}\nno end", 2, 7, "endif")]
    [TestCase("a\n  {{ x + }}", 2, 10, "'}}'")]
    [TestCase("{% frobnicate %}", 1, 4, "unknown statement 'frobnicate'")]
    [TestCase("ok\n{{ 'unclosed }}", 2, 4, "string literal not closed")]
    [TestCase("{% for x y %}{% endfor %}", 1, 10, "expected 'in'")]
    [TestCase("{{ x | 3 }}", 1, 8, "filter name")]
    [TestCase("{% endif %}", 1, 4, "unknown statement 'endif'")]
    [TestCase("{{ 'a\\q' }}", 1, 6, "unknown escape")]
    [TestCase("\n\n  {# never closed", 3, 3, "comment not closed")]
    [TestCase("{% for m in messages %}{% if m %}{% endfor %}", 1, 37, "unknown statement 'endfor'")]
    public void SyntaxErrorsSayWhere(string source, int line, int column, string message)
    {
        var e = Assert.Throws<TemplateSyntaxException>(() => ChatTemplate.Parse(source));
        Assert.That((e!.Line, e.Column), Is.EqualTo((line, column)), e.Message);
        Assert.That(e.Message, Does.StartWith($"line {line}, column {column}: ").And.Contain(message));
    }

    [Test]
    public void SyntaxErrorPositionsCountTheOriginalSource()
    {
        // trim_blocks and lstrip_blocks remove characters before the lexer runs; positions must not shift.
        var e = Assert.Throws<TemplateSyntaxException>(() => ChatTemplate.Parse("{% if true %}\n    {% if %}\n{% endif %}"));
        Assert.That((e!.Line, e.Column), Is.EqualTo((2, 11)), e.Message);
    }

    [TestCase("{{ messages[0].role + none }}", "'+' to none")]
    [TestCase("{{ nothing + 'x' }}", "undefined value ('nothing')")]
    [TestCase("{% for x in nothing %}{% endfor %}", "cannot loop over an undefined value")]
    [TestCase("{{ 'a' | frobnicate }}", "the filter 'frobnicate' does not apply to a string")]
    [TestCase("{{ (1, 2) }}", "tuple")]
    [TestCase("{% set x = 1 %}{% set x.y = 2 %}", "only of a namespace")]
    [TestCase("{{ messages.append(1) }}", "cannot call an undefined value ('append')")]
    [TestCase("{{ 1 is frobnicated }}", "unknown test 'frobnicated'")]
    public void RuntimeErrorsSayWhatAndWhere(string source, string message)
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render(source));
        Assert.That(e!.Message, Does.Contain(message));
        Assert.That((e.Line, e.Column), Is.Not.EqualTo(((int?)null, (int?)null)), e.Message);
    }

    [Test]
    public void RuntimeErrorsPointAtTheFailingExpression()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("line one\n{% for m in messages %}\n  {{ m.role ~ m.missing.deeper + 1 }}\n{% endfor %}"));
        Assert.That(e!.Line, Is.EqualTo(3), e.Message);
    }

    [Test]
    public void RunawayRecursionIsAnErrorNotACrash()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));
        Assert.That(e!.Message, Does.Contain("nested more than"));
    }

    [Test]
    public void ShippedModelHasNoTemplateAndUsesTheFallback()
    {
        Assert.That(ChatTemplate.FromTokenizerConfig(RepoPaths.ShippedModel), Is.Null);
        var template = ChatTemplate.ForModel(RepoPaths.ShippedModel);
        Assert.That(template.IsFallback, Is.True);
        Assert.That((template.BosToken, template.EosToken), Is.EqualTo(("<s>", "</s>")));
        ChatMessage[] chat = [new("system", "Be brief."), new("user", "Hi"), new("assistant", "Hello."), new("user", "Bye")];
        Assert.That(template.Render(chat), Is.EqualTo("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello.\n<|user|>\nBye\n<|assistant|>\n"));
        Assert.That(template.Render(chat, new ChatTemplateOptions { AddGenerationPrompt = false }),
            Is.EqualTo("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello.\n<|user|>\nBye\n"));
        Assert.That(template.Render([new("tool", "42")]), Is.EqualTo("<|tool|>\n42\n<|assistant|>\n"));
        Assert.That(template.Render([]), Is.EqualTo("<|assistant|>\n"));
    }

    [Test]
    public void FallbackRejectsUnknownRolesAndMissingText()
    {
        var e = Assert.Throws<TemplateRaisedException>(() => ChatTemplate.Fallback.Render([new("user", "x"), new("narrator", "y")]));
        Assert.That(e!.Message, Is.EqualTo("The plain fallback chat template supports the roles system, user, assistant and tool, not 'narrator'"));
        using var noText = JsonDocument.Parse("""[{"role": "assistant", "content": null, "tool_calls": []}]""");
        Assert.That(() => ChatTemplate.Fallback.RenderJson(noText.RootElement), Throws.TypeOf<TemplateRaisedException>().With.Message.Contains("text content in message 1"));
        using var noRole = JsonDocument.Parse("""[{"content": "x"}]""");
        Assert.That(() => ChatTemplate.Fallback.RenderJson(noRole.RootElement), Throws.TypeOf<TemplateRaisedException>().With.Message.Contains("role in message 1"));
    }

    [Test]
    public void ReadsTheTemplateAndSpecialTokensOfATokenizerConfig()
    {
        string dir = TempModel("""
            {"bos_token": {"content": "<|begin|>", "lstrip": false}, "eos_token": "<|end|>",
             "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}"}
            """);
        var template = ChatTemplate.FromTokenizerConfig(dir)!;
        Assert.That(template.IsFallback, Is.False);
        Assert.That(ChatTemplate.ReadSpecialTokens(dir), Is.EqualTo(("<|begin|>", "<|end|>")));
        Assert.That(template.Render([new("user", "hi")]), Is.EqualTo("<|begin|>[user]hi<|end|>"));
        Assert.That(template.Render([new("user", "hi")], new ChatTemplateOptions { BosToken = "B", EosToken = "E" }), Is.EqualTo("B[user]hiE"));
    }

    [Test]
    public void ANamedTemplateListUsesItsDefault()
    {
        string dir = TempModel("""{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]}""");
        Assert.That(ChatTemplate.FromTokenizerConfig(dir)!.Render([]), Is.EqualTo("plain"));
        string noDefault = TempModel("""{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "rag", "template": "rag"}]}""");
        Assert.That(() => ChatTemplate.FromTokenizerConfig(noDefault), Throws.TypeOf<ModelFormatException>().With.Message.Contains("tool_use, rag"));
    }

    [Test]
    public void AChatTemplateFileTakesPrecedenceAndNothingElseIsNeeded()
    {
        string dir = TempModel("""{"chat_template": "from the config"}""");
        File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), "from the file\n");
        Assert.That(ChatTemplate.FromTokenizerConfig(dir)!.Render([]), Is.EqualTo("from the file"));
        string empty = Directory.CreateTempSubdirectory("emoe-template-").FullName;
        Assert.That(ChatTemplate.FromTokenizerConfig(empty), Is.Null);
        Assert.That(ChatTemplate.ForModel(empty).IsFallback, Is.True);
        Assert.That(() => ChatTemplate.FromTokenizerConfig(Path.Combine(empty, "missing")), Throws.InstanceOf<DirectoryNotFoundException>());
    }

    [Test]
    public void RenderAndRenderJsonAgree()
    {
        var template = ChatTemplate.Parse(ChatTemplateFixtures.TemplateSource("qwen3"));
        ChatMessage[] chat = [new("system", "S"), new("user", "U"), new("assistant", "<think>t</think>A"), new("user", "U2")];
        using var json = JsonDocument.Parse(JsonSerializer.Serialize(chat.Select(m => new { role = m.Role, content = m.Content })));
        Assert.That(template.Render(chat), Is.EqualTo(template.RenderJson(json.RootElement)));
    }

    [Test]
    public void RenderJsonNeedsAnArray()
    {
        using var json = JsonDocument.Parse("""{"role": "user"}""");
        Assert.That(() => ChatTemplate.Fallback.RenderJson(json.RootElement), Throws.ArgumentException);
    }

    [Test]
    public void VariablesFromDotNetObjectsAreLikeJson()
    {
        var template = ChatTemplate.Parse("{{ tools | tojson }} {{ flag }} {{ count + 1 }} {{ ratio }} {{ nothing is none }} {{ names | join(',') }}");
        var tools = new List<Dictionary<string, object?>> { new() { ["type"] = "function", ["function"] = new Dictionary<string, object?> { ["name"] = "f", ["n"] = 2 } } };
        string fromObjects = template.Render([], new ChatTemplateOptions
        {
            Variables = new Dictionary<string, object?> { ["tools"] = tools, ["flag"] = true, ["count"] = 41, ["ratio"] = 0.5, ["nothing"] = null, ["names"] = new[] { "a", "b" } },
        });
        using var json = JsonDocument.Parse("""{"tools": [{"type": "function", "function": {"name": "f", "n": 2}}]}""");
        string fromJson = template.Render([], new ChatTemplateOptions
        {
            Variables = new Dictionary<string, object?> { ["tools"] = json.RootElement.GetProperty("tools"), ["flag"] = true, ["count"] = 41, ["ratio"] = 0.5, ["nothing"] = null, ["names"] = new[] { "a", "b" } },
        });
        Assert.That(fromObjects, Is.EqualTo("""[{"type": "function", "function": {"name": "f", "n": 2}}] true 42 0.5 true a,b"""));
        Assert.That(fromJson, Is.EqualTo(fromObjects));
        Assert.That(() => template.Render([], new ChatTemplateOptions { Variables = new Dictionary<string, object?> { ["tools"] = new object() } }),
            Throws.ArgumentException.With.Message.Contains("'tools'"));
    }

    [Test]
    public void JsonMessagesKeepJavaScriptsKeyOrderAndIntegers()
    {
        // JSON.parse lists integer-like keys first, and 1.0 is an integer there.
        using var json = JsonDocument.Parse("""[{"role": "user", "content": "x", "b": 1, "2": 2.0, "a": 1.5, "10": true}]""");
        Assert.That(ChatTemplate.Parse("{{ messages[0] | tojson }}").RenderJson(json.RootElement),
            Is.EqualTo("""{"2": 2, "10": true, "role": "user", "content": "x", "b": 1, "a": 1.5}"""));
    }

    [Test]
    public void StrftimeNowUsesTheInjectedClock()
    {
        var clock = new FixedClock(new DateTimeOffset(2024, 9, 5, 7, 3, 0, TimeSpan.Zero));
        string text = Render("{{ strftime_now('%d %b %Y, %B, %Y-%m-%d %H:%M %% %j') }}", new ChatTemplateOptions { Clock = clock });
        Assert.That(text, Is.EqualTo("05 Sep 2024, September, 2024-09-05 07:03 % %j"));
    }

    [TestCase("{{ '{} and {}'.format('a', 'b') }}|{{ '{1}{0}{name}{{}}'.format('x', 'y', name='z') }}", "a and b|yxz{}")]
    [TestCase("{{ [1, 2, 3, 4] | select('even') | list }} {{ [1, 2, 3] | reject('odd') | list }} {{ [0, 1, '', 'a'] | select | list }}", "[2, 4] [2] [1, \"a\"]")]
    [TestCase("{{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.4 | round(0, 'ceil') }} {{ -2.5 | round }}", "2.57 3.0 3.0 -3.0")]
    [TestCase("{{ '<a href=\"x\">Tom & \\'Jerry\\'</a>' | escape }}", "&lt;a href=&#34;x&#34;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;")]
    [TestCase("{{ ['a', 'b'] | map('upper') | list }} {{ 'ab' | list }}", "[\"A\", \"B\"] [\"a\", \"b\"]")]
    public void JinjaFeaturesBeyondTheOracle(string template, string expected) => Assert.That(Render(template), Is.EqualTo(expected));

    [TestCase(0.0, "0")]
    [TestCase(-0.0, "0")]
    [TestCase(123.456, "123.456")]
    [TestCase(1e21, "1e+21")]
    [TestCase(1e20, "100000000000000000000")]
    [TestCase(1.5e-7, "1.5e-7")]
    [TestCase(0.000001, "0.000001")]
    [TestCase(5e-324, "5e-324")]
    [TestCase(1.7976931348623157e308, "1.7976931348623157e+308")]
    [TestCase(0.1 + 0.2, "0.30000000000000004")]
    [TestCase(-42.0, "-42")]
    public void NumbersPrintAsJavaScriptPrintsThem(double value, string expected) => Assert.That(Js.NumberToString(value), Is.EqualTo(expected));

    [Test]
    public void JsonStringsEscapeAsJsonStringify()
    {
        Assert.That(Js.JsonString("a\"b\\c\n\t\u0001\u2028é😀\ud800"), Is.EqualTo("\"a\\\"b\\\\c\\n\\t\\u0001\u2028é😀\\ud800\""));
    }

    [Test]
    public void RenderingIsThreadSafe()
    {
        var template = ChatTemplate.Parse(ChatTemplateFixtures.TemplateSource("qwen3"));
        var (messages, variables) = ChatTemplateFixtures.MessageSet("multi_turn");
        string expected = template.RenderJson(messages, new ChatTemplateOptions { Variables = variables });
        var results = new string[64];
        Parallel.For(0, results.Length, i => results[i] = template.RenderJson(messages, new ChatTemplateOptions { Variables = variables }));
        Assert.That(results, Is.All.EqualTo(expected));
    }

    private static string TempModel(string tokenizerConfig)
    {
        string dir = Directory.CreateTempSubdirectory("emoe-template-").FullName;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig);
        return dir;
    }
}
