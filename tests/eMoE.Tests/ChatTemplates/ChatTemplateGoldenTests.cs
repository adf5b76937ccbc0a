using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.ChatTemplates;

/// <summary>
/// Every template of tests/fixtures/chat_templates with every message set, with and without the
/// generation prompt, rendered byte for byte as @huggingface/jinja renders it
/// (tests/golden/chat_templates.json, from tests/reference/chat_templates/render.mjs).
/// </summary>
public sealed class ChatTemplateGoldenTests
{
    private static readonly ChatTemplateFixtures.Golden Golden = ChatTemplateFixtures.LoadGolden();

    private static IEnumerable<TestCaseData> Cases() =>
        Golden.Cases.Select(c => new TestCaseData(c).SetArgDisplayNames($"{c.Template} x {c.Messages}{(c.AddGenerationPrompt ? " + prompt" : "")}"));

    [TestCaseSource(nameof(Cases))]
    public void RendersAsTheOracle(ChatTemplateFixtures.GoldenCase golden)
    {
        var template = ChatTemplate.Parse(ChatTemplateFixtures.TemplateSource(golden.Template));
        var (messages, variables) = ChatTemplateFixtures.MessageSet(golden.Messages);
        var options = ChatTemplateFixtures.Options(Golden, golden.AddGenerationPrompt, variables);
        if (golden.Output is not null)
        {
            Assert.That(template.RenderJson(messages, options), Is.EqualTo(golden.Output));
        }
        else if (golden.Raised == true)
        {
            var e = Assert.Throws<TemplateRaisedException>(() => template.RenderJson(messages, options));
            Assert.That(e!.Message, Is.EqualTo(golden.Error));
        }
        else
        {
            // The oracle's own error (not the template's raise_exception): ours must fail too, in our words.
            var e = Assert.Catch<ChatTemplateException>(() => template.RenderJson(messages, options), golden.Error ?? "");
            Assert.That(e, Is.Not.InstanceOf<TemplateRaisedException>());
            TestContext.Out.WriteLine($"oracle: {golden.Error}\neMoE:   {e!.Message}");
        }
    }

    [Test]
    public void GoldensCoverEveryTemplateAndMessageSet()
    {
        var templates = Directory.GetFiles(ChatTemplateFixtures.Directory, "*.jinja").Select(Path.GetFileNameWithoutExtension).Order().ToList();
        var sets = Directory.GetFiles(Path.Combine(ChatTemplateFixtures.Directory, "messages"), "*.json").Select(Path.GetFileNameWithoutExtension).Order().ToList();
        Assert.That(Golden.Oracle, Is.EqualTo("@huggingface/jinja 0.5.11"));
        Assert.That(Golden.Cases, Has.Count.EqualTo(templates.Count * sets.Count * 2), "regenerate with tests/reference/chat_templates/render.mjs");
        Assert.That(Golden.Cases.Select(c => c.Template).Distinct().Order(), Is.EqualTo(templates));
        Assert.That(Golden.Cases.Select(c => c.Messages).Distinct().Order(), Is.EqualTo(sets));
        // Most cases render; the errors are the templates' own refusals where they can.
        Assert.That(Golden.Cases.Count(c => c.Output is not null), Is.GreaterThan(Golden.Cases.Count * 3 / 4));
    }

    [Test]
    public void TheFallbackFixtureIsTheShippedFallback()
    {
        Assert.That(ChatTemplateFixtures.TemplateSource("fallback"), Is.EqualTo(ChatTemplate.FallbackSource));
        Assert.That(ChatTemplate.Fallback.Source, Is.EqualTo(ChatTemplate.FallbackSource));
    }
}
