using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Prediction;
using NUnit.Framework;

namespace eMoE.Tests.Prediction;

/// <summary>
/// The predictor loop inside the engine, on the Mixtral fixture (2 layers x 8 experts, top-2):
/// load mode stays exact, reroute mode never stalls on the predicted set, and layer profiling
/// measures what randomised routing costs.
/// </summary>
public sealed class PredictionEngineTests
{
    private static readonly string Fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");
    private static readonly int[][] Prompts = [[1, 17, 230, 45, 99, 310], [1, 7, 3, 411, 28, 64, 5], [1, 230, 99, 17, 45]];

    private static MoeModel Load(string budget, EvictionPolicyKind policy, MissMode onMiss = MissMode.Load, PredictionOptions? prediction = null) =>
        MoeModel.Load(Fixture, new ModelOptions
        {
            Device = DeviceKind.IlgpuCpu,
            ContextLength = 64,
            Experts = new ExpertCacheOptions { Budget = ExpertBudget.Parse(budget), Policy = policy, OnMiss = onMiss },
            Prediction = prediction,
        });

    /// <summary>Each prompt twice, as two tasks, in order; greedy outputs.</summary>
    private static async Task<List<List<int>>> Stream(MoeModel model)
    {
        var outputs = new List<List<int>>();
        for (int round = 0; round < 2; round++)
        {
            foreach (var (prompt, i) in Prompts.Select((p, i) => (p, i)))
            {
                var ids = new List<int>();
                var options = new GenerationOptions { MaxTokens = 8, StopAtEndOfSequence = false, Task = i % 2 == 0 ? "even" : "odd" };
                await foreach (int id in model.GenerateIdsAsync(prompt, options, new GenerationStats())) ids.Add(id);
                outputs.Add(ids);
            }
        }
        return outputs;
    }

    [Test]
    public async Task LoadModeWithThePredictorIsExact()
    {
        List<List<int>> reference;
        using (var all = Load("all", EvictionPolicyKind.Lru)) reference = await Stream(all);
        using var model = Load("50%", EvictionPolicyKind.Predicted, prediction: new PredictionOptions());
        Assert.That(await Stream(model), Is.EqualTo(reference));
        Assert.That(model.Planner, Is.Not.Null);
        Assert.That(model.Planner!.Invocations, Is.Positive, "the predictor ran between requests");
        Assert.That(model.ExpertStats.Overall.Prefetches, Is.Positive, "its sets were prefetched");
    }

    [Test]
    public void PredictionNeedsThePredictedPolicy()
    {
        var e = Assert.Throws<ArgumentException>(() => Load("50%", EvictionPolicyKind.Lru, prediction: new PredictionOptions()));
        Assert.That(e!.Message, Does.Contain("Predicted"));
    }

    [Test]
    public async Task RerouteModeRoutesOnlyToResidentExpertsAndFetchesTheMissingOnes()
    {
        using var model = Load("50%", EvictionPolicyKind.Predicted, MissMode.Reroute, new PredictionOptions());
        await Stream(model);
        var o = model.ExpertStats.Overall;
        Assert.That(o.Rerouted, Is.Positive);
        Assert.That(o.Requests, Is.EqualTo(o.Hits + o.Misses + o.LatePrefetches));
        Assert.That(o.LatePrefetches, Is.Zero, "reroute never waits for an expert that is still copying");

        using var lru = Load("50%", EvictionPolicyKind.Lru, MissMode.Reroute);
        await Stream(lru);
        Assert.That(lru.ExpertStats.Overall.Prefetches, Is.Positive, "rerouted tokens' experts are fetched in the background");
    }

    private static int[] Text(MoeModel model, int count)
    {
        var rng = new Random(3);
        return Enumerable.Range(0, count).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();
    }

    [Test]
    public void RandomRoutingOfALayerIsDeterministicAndChangesTheScore()
    {
        using var model = Load("all", EvictionPolicyKind.Lru);
        var ids = Text(model, 48);
        var intact = model.ScorePerplexity(ids, new PerplexityOptions { Context = 16 });
        var a = model.ScorePerplexity(ids, new PerplexityOptions { Context = 16, RandomRoutingLayer = 1, Seed = 5 });
        var b = model.ScorePerplexity(ids, new PerplexityOptions { Context = 16, RandomRoutingLayer = 1, Seed = 5 });
        Assert.That(a.MeanNll, Is.EqualTo(b.MeanNll), "same seed, same routing");
        Assert.That(a.MeanNll, Is.Not.EqualTo(intact.MeanNll).Within(1e-6));
        Assert.That(model.ScorePerplexity(ids, new PerplexityOptions { Context = 16 }).MeanNll, Is.EqualTo(intact.MeanNll), "the intact model is restored");
        Assert.That(Assert.Throws<ArgumentException>(() => model.ScorePerplexity(ids, new PerplexityOptions { Context = 16, RandomRoutingLayer = 2 }))!.Message,
            Does.Contain("layer 2"));
    }

    [Test]
    public void TheProfilerMarksLayersByThreshold()
    {
        using var model = Load("all", EvictionPolicyKind.Lru);
        var ids = Text(model, 32);
        var profile = LayerProfiler.Measure(model, new Dictionary<string, IReadOnlyList<int>> { ["t"] = ids }, threshold: 0.0, context: 16);
        var t = profile.Tasks["t"];
        Assert.That(t.Layers.Select(l => l.Layer), Is.EqualTo(new[] { 0, 1 }));
        foreach (var l in t.Layers)
        {
            Assert.That(l.Increase, Is.EqualTo(l.RandomizedPerplexity / t.Perplexity - 1).Within(1e-9));
            Assert.That(l.Sensitive, Is.EqualTo(l.Increase >= 0.0));
        }
        var strict = LayerProfiler.Measure(model, new Dictionary<string, IReadOnlyList<int>> { ["t"] = ids }, threshold: 1e9, context: 16);
        Assert.That(strict.Tasks["t"].Layers.All(l => !l.Sensitive), "nothing reaches an impossible threshold");
    }
}
