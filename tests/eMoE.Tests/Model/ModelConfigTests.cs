using System.Text.Json;
using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.Model;

public sealed class ModelConfigTests
{
    private static ModelConfig Parse(string json) => ModelConfig.Parse(JsonDocument.Parse(json).RootElement, "config.json");

    private const string Mixtral = """
        {"model_type":"mixtral","vocab_size":100,"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
         "num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":8,"num_experts_per_tok":2,
         "rope_theta":1e6,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":[2,5]}
        """;

    [Test]
    public void ParsesMixtral()
    {
        var c = Parse(Mixtral);
        Assert.Multiple(() =>
        {
            Assert.That(c.Architecture, Is.EqualTo(Architecture.Mixtral));
            Assert.That(c.HeadDim, Is.EqualTo(16));
            Assert.That(c.KvDim, Is.EqualTo(32));
            Assert.That(c.NormTopKProb, Is.True, "Mixtral always renormalises");
            Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 2, 5 }));
            Assert.That(c.RopeTheta, Is.EqualTo(1e6f));
            Assert.That(c.QkNorm, Is.EqualTo(QkNormKind.None));
        });
    }

    [Test]
    public void ParsesTheFixtures()
    {
        var qwen = ModelConfig.Load(RepoPaths.Combine("tests", "fixtures", "models", "qwen3moe-bf16"));
        Assert.That((qwen.Architecture, qwen.HeadDim, qwen.QkNorm, qwen.TieWordEmbeddings), Is.EqualTo((Architecture.Qwen3Moe, 32, QkNormKind.PerHead, true)));
        var olmoe = ModelConfig.Load(RepoPaths.Combine("tests", "fixtures", "models", "olmoe-f16"));
        Assert.That((olmoe.Architecture, olmoe.QkNorm, olmoe.NormTopKProb), Is.EqualTo((Architecture.Olmoe, QkNormKind.Whole, false)));
    }

    [Test]
    public void UnsupportedArchitectureListsTheSupportedOnes()
    {
        var e = Assert.Throws<ModelFormatException>(() => Parse("""{"model_type":"llama"}"""))!;
        Assert.That(e.Message, Does.Contain("llama").And.Contain("mixtral").And.Contain("qwen3_moe").And.Contain("olmoe"));
    }

    [TestCase("\"num_experts_per_tok\":2", "\"num_experts_per_tok\":9", "exceeds")]
    [TestCase("\"num_key_value_heads\":2", "\"num_key_value_heads\":3", "multiple")]
    [TestCase("\"hidden_size\":64", "\"hidden_size\":\"big\"", "hidden_size")]
    [TestCase("\"vocab_size\":100,", "", "vocab_size")]
    public void InvalidFieldsAreNamed(string original, string replacement, string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => Parse(Mixtral.Replace(original, replacement)))!;
        Assert.That(e.Message, Does.Contain(expected));
    }
}
