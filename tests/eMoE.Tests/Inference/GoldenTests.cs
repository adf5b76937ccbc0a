using eMoE.Compute;
using eMoE.GpuCheck.Checks;
using eMoE.Inference;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Inference;

/// <summary>
/// The engine against golden values from an independent torch implementation of the same
/// architectures (tests/reference), on ILGPU's CPU accelerator (the GPU kernels) and on the host
/// backend (SIMD code): both must match the reference. The comparisons and tolerances are
/// <see cref="EngineChecks"/>', which the GPU check (bench/gpu) runs on CUDA.
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
        _golden = Golden.Load(RepoPaths.Combine("tests", "golden", name + ".json"));
        // A small step size makes prefill run in several chunks, exercising the KV-cache offsets.
        _model = MoeModel.Load(RepoPaths.Combine(_golden.Model), new ModelOptions { Device = device, Engine = new EngineOptions { MaxTokensPerStep = 16 } });
    }

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    [Test]
    public void LogitsMatchReference()
    {
        foreach (var (where, worst) in EngineChecks.GoldenLogitDifferences(_model, _golden))
            Assert.That(worst, Is.LessThanOrEqualTo(EngineChecks.LogitTolerance), $"max |logit difference| at {where}");
    }

    [Test]
    public async Task GreedyContinuationMatchesReference()
    {
        foreach (var prompt in _golden.Prompts)
        {
            var generated = await EngineChecks.GreedyAsync(_model, prompt.Ids, prompt.Greedy.Count);
            Assert.That(generated, Is.EqualTo(prompt.Greedy), $"greedy continuation of a {prompt.Ids.Count}-token prompt");
        }
    }

    [Test]
    public void PerplexityMatchesReference()
    {
        var (result, percentOff) = EngineChecks.GoldenPerplexity(_model, _golden);
        Assert.That(result.Tokens, Is.EqualTo(_golden.Perplexity.Tokens));
        Assert.That(percentOff, Is.LessThanOrEqualTo(EngineChecks.PerplexityTolerancePercent), $"perplexity {result.Perplexity}, golden {_golden.Perplexity.Perplexity}");
    }

    [Test]
    public void PerplexityTextTokenizesToTheReferenceIds()
    {
        var ids = EngineChecks.GoldenTextIds(_model, _golden, RepoPaths.Root);
        if (ids is null) Assert.Pass("this golden scores random ids, not a text");
        Assert.That(ids, Is.EqualTo(_golden.Perplexity.Ids));
    }
}
