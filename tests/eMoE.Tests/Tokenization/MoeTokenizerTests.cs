using System.Text.Json.Nodes;
using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.Tokenization;

/// <summary>Special-token metadata, config fallbacks and the errors of unsupported files.</summary>
public sealed class MoeTokenizerTests
{
    private string _scratch = null!;

    [SetUp]
    public void CreateScratch()
    {
        _scratch = Path.Combine(Path.GetTempPath(), "emoe-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_scratch);
    }

    [TearDown]
    public void DeleteScratch() => Directory.Delete(_scratch, recursive: true);

    [Test]
    public void ByteLevelSpecialTokens()
    {
        var tok = MoeTokenizer.Load(TokenizerFixtures.Directory("bytelevel"));
        Assert.Multiple(() =>
        {
            Assert.That(tok.VocabSize, Is.EqualTo(705));
            Assert.That(tok.BosTokenId, Is.Null);
            Assert.That(tok.EosTokenId, Is.EqualTo(700));
            Assert.That(tok.TokenToString(700), Is.EqualTo("<|endoftext|>"));
            Assert.That(tok.IsSpecial(700), Is.True);
            Assert.That(tok.IsSpecial(65), Is.False);
            Assert.That(tok.TokenToString(65), Is.EqualTo("A"));
            Assert.That(tok.TokenToString(32), Is.EqualTo("\u0120"));
            Assert.That(tok.Encode("<|im_start|>"), Is.EqualTo(new[] { 701 }));
        });
    }

    [Test]
    public void SentencePieceSpecialTokens()
    {
        var tok = MoeTokenizer.Load(TokenizerFixtures.Directory("sentencepiece"));
        Assert.Multiple(() =>
        {
            Assert.That(tok.VocabSize, Is.EqualTo(902));
            Assert.That(tok.BosTokenId, Is.EqualTo(1));
            Assert.That(tok.EosTokenId, Is.EqualTo(2));
            Assert.That(tok.IsSpecial(1), Is.True);
            Assert.That(tok.TokenToString(3), Is.EqualTo("<0x00>"));
            Assert.That(tok.Encode("hi", addSpecialTokens: true)[0], Is.EqualTo(1));
        });
    }

    [Test]
    public void ConfigFlagsApplyWhenThereIsNoTemplate()
    {
        var json = ReadFixture("sentencepiece");
        json["post_processor"] = null;
        Write(json, """{"add_bos_token": true, "add_eos_token": true, "bos_token": "<s>", "eos_token": {"content": "</s>"}}""");
        var tok = MoeTokenizer.Load(_scratch);
        var plain = tok.Encode("hello");
        Assert.That(tok.Encode("hello", addSpecialTokens: true), Is.EqualTo(new[] { 1 }.Concat(plain).Append(2)));
    }

    [Test]
    public void MissingConfigMeansNoSpecialTokenIds()
    {
        Write(ReadFixture("bytelevel"), config: null);
        var tok = MoeTokenizer.Load(_scratch);
        Assert.Multiple(() =>
        {
            Assert.That(tok.BosTokenId, Is.Null);
            Assert.That(tok.EosTokenId, Is.Null);
            // The file's template still decides add_special_tokens.
            Assert.That(tok.Encode("x", addSpecialTokens: true)[^1], Is.EqualTo(700));
        });
    }

    [Test]
    public void MalformedJsonNamesTheFile()
    {
        File.WriteAllText(Path.Combine(_scratch, "tokenizer.json"), "{ \"model\": ");
        var e = Assert.Throws<ModelFormatException>(() => MoeTokenizer.Load(_scratch));
        Assert.That(e!.Message, Does.Contain(Path.Combine(_scratch, "tokenizer.json")));
    }

    [TestCase("merges", """[["a"]]""")]
    [TestCase("vocab", """{"a": "zero"}""")]
    public void MalformedModelFieldsNameTheFile(string field, string value)
    {
        var json = ReadFixture("bytelevel");
        json["model"]![field] = JsonNode.Parse(value);
        Write(json, config: null);
        var e = Assert.Throws<ModelFormatException>(() => MoeTokenizer.Load(_scratch));
        Assert.That(e!.Message, Does.Contain(Path.Combine(_scratch, "tokenizer.json")));
    }

    [Test]
    public void MalformedConfigNamesTheFile()
    {
        Write(ReadFixture("bytelevel"), "{ nope");
        var e = Assert.Throws<ModelFormatException>(() => MoeTokenizer.Load(_scratch));
        Assert.That(e!.Message, Does.Contain("tokenizer_config.json"));
    }

    [TestCase("model", """{"type": "WordPiece", "vocab": {}}""", "WordPiece")]
    [TestCase("model", """{"type": "Unigram", "vocab": []}""", "Unigram")]
    [TestCase("normalizer", """{"type": "Lowercase"}""", "Lowercase")]
    [TestCase("pre_tokenizer", """{"type": "Whitespace"}""", "Whitespace")]
    [TestCase("decoder", """{"type": "WordPiece", "prefix": "##"}""", "WordPiece")]
    [TestCase("post_processor", """{"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]}""", "BertProcessing")]
    public void UnsupportedComponentsAreNamed(string section, string replacement, string item)
    {
        var json = ReadFixture("sentencepiece");
        json[section] = JsonNode.Parse(replacement);
        Write(json, config: null);
        var e = Assert.Throws<ModelFormatException>(() => MoeTokenizer.Load(_scratch));
        Assert.That(e!.Message, Does.Contain("tokenizer.json").And.Contain(item));
    }

    [Test]
    public void MissingDirectoryThrowsFileNotFound() =>
        Assert.Throws<FileNotFoundException>(() => MoeTokenizer.Load(Path.Combine(_scratch, "absent")));

    [Test]
    public void ConcurrentEncodeIsConsistent()
    {
        var tok = MoeTokenizer.Load(TokenizerFixtures.Directory("bytelevel"));
        var goldens = TokenizerFixtures.Load("bytelevel").Cases;
        Parallel.For(0, 64, i =>
        {
            var c = goldens[i % goldens.Count];
            Assert.That(tok.Encode(c.Text), Is.EqualTo(c.Ids));
        });
    }

    private static JsonNode ReadFixture(string name) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Directory(name), "tokenizer.json")))!;

    private void Write(JsonNode tokenizer, string? config)
    {
        File.WriteAllText(Path.Combine(_scratch, "tokenizer.json"), tokenizer.ToJsonString());
        if (config is not null)
        {
            File.WriteAllText(Path.Combine(_scratch, "tokenizer_config.json"), config);
        }
    }
}
