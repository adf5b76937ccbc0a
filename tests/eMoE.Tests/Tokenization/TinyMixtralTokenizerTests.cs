using System.Text.Json;
using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.Tokenization;

/// <summary>The shipped model's tokenizer against the goldens its training script wrote with HF.</summary>
public sealed class TinyMixtralTokenizerTests
{
    [Test]
    public void MatchesShippedGoldens()
    {
        string dir = RepoPaths.ShippedModel;
        var tok = MoeTokenizer.Load(dir);
        var goldens = JsonSerializer.Deserialize<TokenizerFixtures.Goldens>(
            File.ReadAllText(Path.Combine(dir, "tokenizer_goldens.json")), TokenizerFixtures.Options)!;
        Assert.That(goldens.Cases, Is.Not.Empty);
        Assert.Multiple(() =>
        {
            foreach (var c in goldens.Cases)
            {
                Assert.That(tok.Encode(c.Text), Is.EqualTo(c.Ids), c.Text);
                Assert.That(tok.Encode(c.Text, addSpecialTokens: true), Is.EqualTo(c.IdsWithSpecial), c.Text);
            }
        });
    }
}
