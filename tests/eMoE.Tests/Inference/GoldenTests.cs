using eMoE.Compute;
using eMoE.Inference;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Inference;

/// <summary>
/// The engine against golden values from an independent torch implementation of the same
/// architectures (tests/reference), on ILGPU's CPU accelerator (the GPU kernels) and on the host
/// backend (SIMD code): both must match the reference.
/// </summary>
[TestFixture("mixtral-f32", DeviceKind.IlgpuCpu)]
[TestFixture("qwen3moe-bf16", DeviceKind.IlgpuCpu)]
[TestFixture("olmoe-f16", DeviceKind.IlgpuCpu)]
[TestFixture("tiny-mixtral", DeviceKind.IlgpuCpu)]
[TestFixture("mixtral-f32", DeviceKind.Cpu)]
[TestFixture("qwen3moe-bf16", DeviceKind.Cpu)]
[TestFixture("olmoe-f16", DeviceKind.Cpu)]
[TestFixture("tiny-mixtral", DeviceKind.Cpu)]
public sealed class GoldenTests(string name, DeviceKind device)
{
    private Golden _golden = null!;
    private MoeModel _model = null!;

    [OneTimeSetUp]
    public void Load()
    {
        _golden = Golden.Load(name);
        // A small step size makes prefill run in several chunks, exercising the KV-cache offsets.
        _model = MoeModel.Load(RepoPaths.Combine(_golden.Model), new ModelOptions { Device = device, Engine = new EngineOptions { MaxTokensPerStep = 16 } });
    }

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    [Test]
    public void LogitsMatchReference()
    {
        int vocab = _model.Config.VocabSize;
        foreach (var prompt in _golden.Prompts)
        {
            var logits = _model.ComputeLogits(prompt.Ids);
            for (int p = 0; p < prompt.Logits.Count; p++)
                AssertClose(logits.AsSpan(p * vocab, vocab), prompt.Logits[p], $"position {p} of a {prompt.Ids.Count}-token prompt");
            AssertClose(logits.AsSpan((prompt.Ids.Count - 1) * vocab, vocab), prompt.LastLogits, $"last position of a {prompt.Ids.Count}-token prompt");
        }
    }

    [Test]
    public async Task GreedyContinuationMatchesReference()
    {
        foreach (var prompt in _golden.Prompts)
        {
            var options = new GenerationOptions { MaxTokens = prompt.Greedy.Count, StopAtEndOfSequence = false };
            var generated = new List<int>();
            await foreach (int id in _model.GenerateIdsAsync(prompt.Ids, options, new GenerationStats()))
                generated.Add(id);
            Assert.That(generated, Is.EqualTo(prompt.Greedy), $"greedy continuation of a {prompt.Ids.Count}-token prompt");
        }
    }

    [Test]
    public void PerplexityMatchesReference()
    {
        var expected = _golden.Perplexity;
        var result = _model.ScorePerplexity(expected.Ids, new PerplexityOptions { Context = expected.Context });
        Assert.That(result.Tokens, Is.EqualTo(expected.Tokens));
        Assert.That(result.Perplexity, Is.EqualTo(expected.Perplexity).Within(0.1).Percent);
    }

    [Test]
    public void PerplexityTextTokenizesToTheReferenceIds()
    {
        var expected = _golden.Perplexity;
        if (expected.File is null) Assert.Pass("this golden scores random ids, not a text");
        string text = File.ReadAllText(RepoPaths.Combine(expected.File))[..expected.Chars!.Value];
        Assert.That(_model.RequireTokenizer().Encode(text), Is.EqualTo(expected.Ids));
    }

    private static void AssertClose(ReadOnlySpan<float> actual, float[] expected, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]));
        Assert.That(worst, Is.LessThanOrEqualTo(1e-3f), $"max |logit difference| at {what}");
    }
}
