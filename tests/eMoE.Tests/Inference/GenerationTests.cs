using eMoE.Compute;
using eMoE.Inference;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Inference;

/// <summary>Generation and scoring behaviour beyond the golden values, on the Mixtral fixture.</summary>
public sealed class GenerationTests
{
    private MoeModel _model = null!;
    private static readonly int[] Prompt = [1, 17, 230, 45, 99, 310, 7];

    [OneTimeSetUp]
    public void Load() => _model = MoeModel.Load(RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32"),
        new ModelOptions { Device = DeviceKind.IlgpuCpu, ContextLength = 64 });

    [OneTimeTearDown]
    public void Unload() => _model.Dispose();

    private async Task<(List<int> Ids, GenerationStats Stats)> Run(GenerationOptions options, CancellationToken cancel = default, int cancelAfter = -1,
        CancellationTokenSource? source = null)
    {
        var stats = new GenerationStats();
        var ids = new List<int>();
        await foreach (int id in _model.GenerateIdsAsync(Prompt, options, stats, cancel))
        {
            ids.Add(id);
            if (ids.Count == cancelAfter) source!.Cancel();
        }
        return (ids, stats);
    }

    [Test]
    public async Task SameSeedSameTokensAndSeedsDiffer()
    {
        GenerationOptions Sampled(int seed) => new()
        {
            MaxTokens = 24, StopAtEndOfSequence = false,
            Sampling = new SamplingOptions { Temperature = 1.5f, TopK = 50, TopP = 0.95f, Seed = seed },
        };
        var a = await Run(Sampled(7));
        var b = await Run(Sampled(7));
        var c = await Run(Sampled(8));
        Assert.That(a.Ids, Is.EqualTo(b.Ids));
        Assert.That(a.Ids, Is.Not.EqualTo(c.Ids));
        Assert.That(a.Stats.GeneratedTokens, Is.EqualTo(24));
        Assert.That(a.Stats.FinishReason, Is.EqualTo(FinishReason.MaxTokens));
    }

    [Test]
    public async Task GreedyEqualsArgmaxOfLogits()
    {
        var (ids, _) = await Run(new GenerationOptions { MaxTokens = 1, StopAtEndOfSequence = false });
        var logits = _model.ComputeLogits(Prompt);
        int vocab = _model.Config.VocabSize;
        var last = logits.AsSpan((Prompt.Length - 1) * vocab, vocab).ToArray();
        Assert.That(ids[0], Is.EqualTo(Array.IndexOf(last, last.Max())));
    }

    [Test]
    public async Task CancellationStopsTheStream()
    {
        using var source = new CancellationTokenSource();
        var (ids, stats) = await Run(new GenerationOptions { MaxTokens = 40, StopAtEndOfSequence = false }, source.Token, 3, source);
        Assert.That(ids, Has.Count.EqualTo(3));
        Assert.That(stats.FinishReason, Is.EqualTo(FinishReason.Cancelled));
    }

    [Test]
    public async Task StopsWhenTheContextIsFull()
    {
        var (ids, stats) = await Run(new GenerationOptions { MaxTokens = 500, StopAtEndOfSequence = false });
        Assert.That(stats.FinishReason, Is.EqualTo(FinishReason.ContextFull));
        Assert.That(ids, Has.Count.EqualTo(64 - Prompt.Length + 1), "each position fed once, the last sampled token unfed");
    }

    [Test]
    public void ChunkedPrefillGivesTheSameLogits()
    {
        using var chunked = MoeModel.Load(_model.Directory, new ModelOptions { Device = DeviceKind.IlgpuCpu, ContextLength = 64, Engine = new EngineOptions { MaxTokensPerStep = 3 } });
        var ids = Enumerable.Range(0, 20).Select(i => (i * 37 + 1) % 512).ToArray();
        var a = _model.ComputeLogits(ids);
        var b = chunked.ComputeLogits(ids);
        Assert.That(b, Is.EqualTo(a).Within(1e-4f));
    }

    [Test]
    public void BadRequestsAreRejectedWithClearErrors()
    {
        Assert.That(Assert.Throws<ArgumentException>(() => _model.ComputeLogits([1, 512]))!.Message, Does.Contain("512").And.Contain("vocabulary"));
        Assert.That(Assert.Throws<ArgumentException>(() => _model.ScorePerplexity([1, 2, 3], new PerplexityOptions { Context = 1 }))!.Message, Does.Contain("context"));
        Assert.ThrowsAsync<ArgumentException>(async () => await Run(new GenerationOptions { Sampling = new SamplingOptions { TopP = 0 } }));
        var tooLong = Enumerable.Repeat(5, 64).ToArray();
        Assert.ThrowsAsync<ArgumentException>(async () =>
        {
            await foreach (int _ in _model.GenerateIdsAsync(tooLong, new GenerationOptions(), new GenerationStats())) { }
        });
    }

    [Test]
    public void PerplexityWindowsScoreEveryTokenButTheFirst()
    {
        var ids = Enumerable.Range(0, 50).Select(i => (i * 11 + 3) % 512).ToArray();
        var result = _model.ScorePerplexity(ids, new PerplexityOptions { Context = 16 });
        Assert.That(result.Tokens, Is.EqualTo(15 + 15 + 15 + 1), "windows of 16, 16, 16 and 2 tokens");

        // The first window's mean NLL, recomputed from the logits on the host.
        var one = _model.ScorePerplexity(ids[..16], new PerplexityOptions { Context = 16 });
        var logits = _model.ComputeLogits(ids[..16]);
        int vocab = _model.Config.VocabSize;
        double sum = 0;
        for (int t = 0; t < 15; t++) sum += eMoE.Kernels.LossKernels.NllReference(logits.AsSpan(t * vocab, vocab), ids[t + 1]);
        Assert.That(one.MeanNll, Is.EqualTo(sum / 15).Within(1e-4));
    }
}
