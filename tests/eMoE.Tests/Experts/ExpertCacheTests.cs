using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Experts;

/// <summary>
/// The device expert cache on the Mixtral fixture (2 layers x 8 experts, top-2): outputs are
/// bit-identical to all-resident at every budget and policy, the budget is never exceeded, and
/// the engine's counters equal the offline simulator's on the same routing.
/// </summary>
public sealed class ExpertCacheTests
{
    private static readonly string Fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");
    private static readonly int[] Prompt = [1, 17, 230, 45, 99, 310, 7, 3, 411, 28, 64, 5];
    private static readonly EvictionPolicyKind[] OnlinePolicies = [EvictionPolicyKind.Lru, EvictionPolicyKind.Lfu, EvictionPolicyKind.LifoInactiveFirst];
    private static readonly string[] Budgets = ["12.5%", "25%", "50%", "75%"];

    private static MoeModel Load(string budget, EvictionPolicyKind policy, int maxTokensPerStep = 256, bool pregate = false,
        MissMode onMiss = MissMode.Load, float? rerouteMaxWeight = null) => MoeModel.Load(Fixture, new ModelOptions
        {
            Device = DeviceKind.IlgpuCpu,
            ContextLength = 64,
            Engine = new EngineOptions { MaxTokensPerStep = maxTokensPerStep },
            Experts = new ExpertCacheOptions
            {
                Budget = ExpertBudget.Parse(budget), Policy = policy, Pregate = pregate, OnMiss = onMiss, RerouteMaxWeight = rerouteMaxWeight,
            },
        });

    private static async Task<(List<int> Ids, GenerationStats Stats)> Greedy(MoeModel model, int tokens = 20)
    {
        var stats = new GenerationStats();
        var ids = new List<int>();
        var options = new GenerationOptions { MaxTokens = tokens, StopAtEndOfSequence = false, RecordRouting = true };
        await foreach (int id in model.GenerateIdsAsync(Prompt, options, stats)) ids.Add(id);
        return (ids, stats);
    }

    [Test]
    public async Task OutputsAreBitIdenticalAtEveryBudgetAndPolicy()
    {
        float[] referenceLogits;
        List<int> referenceIds;
        using (var all = Load("all", EvictionPolicyKind.Lru))
        {
            referenceLogits = all.ComputeLogits(Prompt);
            referenceIds = (await Greedy(all)).Ids;
            Assert.That(all.ExpertStats.Overall.Misses, Is.Zero);
        }
        foreach (string budget in Budgets)
        {
            foreach (var policy in OnlinePolicies)
            {
                foreach (bool pregate in new[] { false, true })
                {
                    // A step of 4 tokens makes prefill need more experts than small caches hold: several passes per layer.
                    using var model = Load(budget, policy, maxTokensPerStep: 4, pregate: pregate);
                    string what = $"{budget} {policy} pregate={pregate}";
                    Assert.That(model.ComputeLogits(Prompt), Is.EqualTo(referenceLogits), $"logits at {what}");
                    Assert.That((await Greedy(model)).Ids, Is.EqualTo(referenceIds), $"greedy at {what}");
                    if (budget != "75%") Assert.That(model.ExpertStats.Overall.Misses, Is.Positive, "the cache really evicted and reloaded");
                    if (pregate) Assert.That(model.ExpertStats.Overall.LookaheadActual, Is.Positive, "the pre-gate predicted");
                }
            }
        }
    }

    [Test]
    public async Task ShippedModelOutputsAreBitIdenticalUnderOffloading()
    {
        // The trained model: real routing, 4 layers x 16 experts.
        var ids = new[] { 1, 1015, 2237, 1209, 351, 88, 2301, 47 };
        MoeModel LoadShipped(string budget, EvictionPolicyKind policy, bool pregate) => MoeModel.Load(RepoPaths.ShippedModel, new ModelOptions
        {
            Device = DeviceKind.IlgpuCpu,
            ContextLength = 64,
            Experts = new ExpertCacheOptions { Budget = ExpertBudget.Parse(budget), Policy = policy, Pregate = pregate },
        });
        async Task<List<int>> Continue(MoeModel model)
        {
            var result = new List<int>();
            await foreach (int id in model.GenerateIdsAsync(ids, new GenerationOptions { MaxTokens = 24, StopAtEndOfSequence = false }, new GenerationStats()))
                result.Add(id);
            return result;
        }

        float[] referenceLogits;
        List<int> referenceText;
        using (var all = LoadShipped("all", EvictionPolicyKind.Lru, pregate: false))
        {
            referenceLogits = all.ComputeLogits(ids);
            referenceText = await Continue(all);
        }
        foreach (var (budget, policy, pregate) in new[]
        {
            ("12.5%", EvictionPolicyKind.LifoInactiveFirst, false), ("25%", EvictionPolicyKind.Lru, true),
            ("50%", EvictionPolicyKind.Lfu, false), ("75%", EvictionPolicyKind.LifoInactiveFirst, true),
        })
        {
            using var model = LoadShipped(budget, policy, pregate);
            Assert.That(model.ComputeLogits(ids), Is.EqualTo(referenceLogits), $"logits at {budget} {policy}");
            Assert.That(await Continue(model), Is.EqualTo(referenceText), $"greedy at {budget} {policy}");
            Assert.That(model.ExpertStats.Overall.Misses, Is.Positive);
        }
    }

    [TestCase("12.5%", 2)]
    [TestCase("25%", 4)]
    [TestCase("50%", 8)]
    [TestCase("100%", 16)]
    [TestCase("all", 16)]
    public void DeviceExpertBytesNeverExceedTheBudget(string budget, int expectedSlots)
    {
        using var model = Load(budget, EvictionPolicyKind.Lru, maxTokensPerStep: 4);
        model.ComputeLogits(Prompt);
        var stats = model.ExpertStats;
        long allExpertBytes = stats.ExpertBytes * stats.TotalExperts;
        var parsed = ExpertBudget.Parse(budget);
        long budgetBytes = parsed.Bytes ?? (long)(parsed.Fraction!.Value * allExpertBytes);
        Assert.That(stats.Slots, Is.EqualTo(expectedSlots));
        Assert.That(stats.SlotBytes, Is.LessThanOrEqualTo(budgetBytes));
        Assert.That(stats.ResidentExpertBytes, Is.LessThanOrEqualTo(stats.SlotBytes));
        Assert.That(model.Device.AllocatedBytes - model.DenseBytes, Is.LessThan(stats.SlotBytes + 1_000_000),
            "device memory beyond dense weights is the expert slots plus activations");
    }

    [Test]
    public void TooSmallABudgetNamesTheMinimum()
    {
        var e = Assert.Throws<ArgumentException>(() => Load("5%", EvictionPolicyKind.Lru))!;
        Assert.That(e.Message, Does.Contain("top-2").And.Contain("at least 2 experts"));
    }

    [Test]
    public async Task EngineCountersEqualTheSimulatorOnTheSameRouting([ValueSource(nameof(OnlinePolicies))] EvictionPolicyKind policy)
    {
        using var model = Load("25%", policy);
        var (_, stats) = await Greedy(model, 24);
        var engine = model.ExpertStats.Overall;
        var simulated = CacheSimulator.Run([stats.Trace!], model.ExpertStats.Slots, policy, model.ExpertStats.ExpertBytes);
        Assert.That((simulated.Requests, simulated.Hits, simulated.Misses, simulated.Evictions, simulated.BytesCopied),
            Is.EqualTo((engine.Requests, engine.Hits, engine.Misses, engine.Evictions, engine.BytesCopied)));
    }

    [Test]
    public async Task BeladyIsAnUpperBoundOnEveryOnlinePolicy()
    {
        using var model = Load("all", EvictionPolicyKind.Lru);
        var (_, stats) = await Greedy(model, 40);
        foreach (int slots in new[] { 2, 4, 8 })
        {
            var belady = CacheSimulator.Run([stats.Trace!], slots, EvictionPolicyKind.Belady, 1);
            foreach (var policy in OnlinePolicies)
            {
                var online = CacheSimulator.Run([stats.Trace!], slots, policy, 1);
                Assert.That(belady.Hits, Is.GreaterThanOrEqualTo(online.Hits), $"{policy} at {slots} slots");
                Assert.That(belady.Requests, Is.EqualTo(online.Requests));
            }
        }
    }

    [Test]
    public async Task PregateLookaheadPrefetchesAndIsScored()
    {
        using var model = Load("50%", EvictionPolicyKind.Lru, pregate: true);
        await Greedy(model, 24);
        var stats = model.ExpertStats;
        Assert.That(stats.Layers[0].LookaheadActual, Is.Zero, "nothing predicts the first layer");
        Assert.That(stats.Layers[1].LookaheadActual, Is.Positive);
        Assert.That(stats.Layers[1].LookaheadCovered, Is.InRange(0, stats.Layers[1].LookaheadActual));
        Assert.That(stats.Overall.Prefetches, Is.Positive);
    }

    [Test]
    public async Task RerouteSendsTokensToResidentExpertsWithoutLoading()
    {
        using var loading = Load("50%", EvictionPolicyKind.Lru);
        await Greedy(loading, 24);
        using var rerouting = Load("50%", EvictionPolicyKind.Lru, onMiss: MissMode.Reroute);
        var (ids, _) = await Greedy(rerouting, 24);
        var load = loading.ExpertStats.Overall;
        var reroute = rerouting.ExpertStats.Overall;
        Assert.That(ids, Has.Count.EqualTo(24));
        Assert.That(reroute.Rerouted, Is.Positive);
        Assert.That(reroute.Misses, Is.LessThan(load.Misses), "rerouting replaces loads once the cache holds enough experts");
    }

    [Test]
    public void RerouteChoosesTheBestResidentExpertAndKeepsTheWeightTotal()
    {
        using var model = Load("25%", EvictionPolicyKind.Lru);
        // A cold cache of 4 slots holding just experts 5 and 6 of layer 0.
        model.PrefetchExperts([new ExpertKey(0, 5), new ExpertKey(0, 6)]);
        model.ExpertCache.WaitForPendingCopies();
        int[] ids = [1, 6];                 // expert 1 absent, expert 6 resident
        float[] weights = [0.6f, 0.2f];
        var probabilities = new float[8];
        probabilities[1] = 0.6f; probabilities[6] = 0.2f; probabilities[5] = 0.1f; probabilities[2] = 0.1f;
        Assert.That(model.ExpertCache.Reroute(0, ids, weights, probabilities, topK: 2), Is.True);
        Assert.That(ids, Is.EqualTo(new[] { 5, 6 }), "expert 5 is the best resident one the token does not use yet");
        Assert.That(weights.Sum(), Is.EqualTo(0.8f).Within(1e-6f), "the token's total weight is kept");
        Assert.That(weights[0] / weights[1], Is.EqualTo(0.1f / 0.2f).Within(1e-5f), "weights follow the router's probabilities");
    }

    [Test]
    public void RerouteLeavesExpertsAboveTheWeightLimitToBeLoaded()
    {
        using var model = Load("25%", EvictionPolicyKind.Lru, onMiss: MissMode.Reroute, rerouteMaxWeight: 0.5f);
        model.PrefetchExperts([new ExpertKey(0, 5), new ExpertKey(0, 6)]);
        model.ExpertCache.WaitForPendingCopies();
        var probabilities = new float[16];
        probabilities[1] = 0.6f; probabilities[6] = 0.2f; probabilities[5] = 0.1f; // token 0
        probabilities[8 + 6] = 0.5f; probabilities[8 + 2] = 0.4f; probabilities[8 + 5] = 0.1f; // token 1
        int[] ids = [1, 6, 6, 2];            // token 0: absent expert 1 carries 0.75; token 1: absent expert 2 carries 0.44
        float[] weights = [0.75f, 0.25f, 0.56f, 0.44f];
        Assert.That(model.ExpertCache.Reroute(0, ids, weights, probabilities, topK: 2), Is.True);
        Assert.That(ids, Is.EqualTo(new[] { 1, 6, 6, 5 }), "the heavy absent expert stays (to be loaded), the light one is rerouted");
        Assert.That(weights[0], Is.EqualTo(0.75f), "an untouched token keeps its weights");
        Assert.That(model.ExpertStats.Overall.Rerouted, Is.EqualTo(1));
    }

    [Test]
    public async Task RerouteWithAZeroWeightLimitLoadsEverythingAndMatchesLoadMode()
    {
        List<int> reference;
        using (var all = Load("all", EvictionPolicyKind.Lru)) reference = (await Greedy(all)).Ids;
        using var model = Load("50%", EvictionPolicyKind.Lru, onMiss: MissMode.Reroute, rerouteMaxWeight: 0f);
        Assert.That((await Greedy(model)).Ids, Is.EqualTo(reference));
        Assert.That(model.ExpertStats.Overall.Rerouted, Is.Zero);
        Assert.That(model.ExpertStats.Overall.Misses, Is.Positive);
        Assert.Throws<ArgumentException>(() => Load("50%", EvictionPolicyKind.Lru, rerouteMaxWeight: 0.5f), "load mode has no reroute limit");
    }

    [Test]
    public async Task PredictedSetIsPrefetchedAndOutputsStayIdentical()
    {
        List<int> reference;
        using (var all = Load("all", EvictionPolicyKind.Lru)) reference = (await Greedy(all)).Ids;
        using var model = Load("25%", EvictionPolicyKind.Predicted);
        model.SetPredictedExperts([new ExpertKey(0, 2), new ExpertKey(1, 5)]);
        Assert.That((await Greedy(model)).Ids, Is.EqualTo(reference));
        Assert.That(model.ExpertStats.Overall.Prefetches, Is.EqualTo(2));
    }

    [Test]
    public async Task PrefetchHintsAreCountedAndChangeNothingInTheOutput()
    {
        List<int> reference;
        using (var all = Load("all", EvictionPolicyKind.Lru)) reference = (await Greedy(all)).Ids;
        using var model = Load("50%", EvictionPolicyKind.Lru);
        model.PrefetchExperts([new ExpertKey(0, 0), new ExpertKey(0, 1), new ExpertKey(1, 7)]);
        Assert.That((await Greedy(model)).Ids, Is.EqualTo(reference));
        Assert.That(model.ExpertStats.Overall.Prefetches, Is.EqualTo(3));
    }
}
