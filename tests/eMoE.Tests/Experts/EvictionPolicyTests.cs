using eMoE.Experts;
using eMoE.Prediction;
using NUnit.Framework;

namespace eMoE.Tests.Experts;

public sealed class EvictionPolicyTests
{
    private sealed class State(params ExpertKey[] active) : IEvictionState
    {
        public IReadOnlySet<ExpertKey> ActiveInStep { get; } = active.ToHashSet();
    }

    private static readonly ExpertKey A = new(0, 0), B = new(0, 1), C = new(0, 2);

    [Test]
    public void LruEvictsTheLeastRecentlyUsed()
    {
        var p = EvictionPolicy.Create(EvictionPolicyKind.Lru);
        foreach (var k in new[] { A, B, C }) { p.OnInsert(k); p.OnRequest(k); }
        p.OnRequest(A);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(B));
    }

    [Test]
    public void LfuEvictsTheLeastFrequentlyUsed()
    {
        var p = EvictionPolicy.Create(EvictionPolicyKind.Lfu);
        foreach (var k in new[] { A, B, C }) p.OnInsert(k);
        foreach (var k in new[] { A, A, B, C, C, B, C }) p.OnRequest(k);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(A).Or.EqualTo(B));
        p.OnRequest(A);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(B), "ties broken by recency");
    }

    [Test]
    public void LifoInactiveFirstPrefersInactiveThenLastIn()
    {
        var p = EvictionPolicy.Create(EvictionPolicyKind.LifoInactiveFirst);
        foreach (var k in new[] { A, B, C }) p.OnInsert(k);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(C), "all inactive: last in");
        Assert.That(p.ChooseVictim([A, B, C], new State(C)), Is.EqualTo(B), "C is used by the batch");
        Assert.That(p.ChooseVictim([A, B, C], new State(A, B, C)), Is.EqualTo(C), "all active: last in");
    }

    [Test]
    public void PredictedPolicySparesThePredictedSet()
    {
        var p = (PredictedSetPolicy)EvictionPolicy.Create(EvictionPolicyKind.Predicted);
        foreach (var k in new[] { A, B, C }) { p.OnInsert(k); p.OnRequest(k); }
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(A), "plain LRU without a prediction");
        p.Protect([A]);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(B), "A is predicted");
        p.Protect([A, B, C]);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(A), "all predicted: LRU among them");
    }

    [Test]
    public void SimulatedPredictorPrefetchesAndKeepsTheRecurringSet()
    {
        // Two tasks alternate; each always uses its own two experts of one layer, one token per step.
        var traces = new List<PromptTrace>();
        for (int i = 0; i < 10; i++)
        {
            var trace = new PromptTrace { Prompt = i, Task = i % 2 == 0 ? "x" : "y", NumLayers = 1, NumExperts = 8, TopK = 2 };
            int[] experts = i % 2 == 0 ? [0, 1] : [2, 3];
            for (int s = 0; s < 4; s++) trace.Steps.Add(new StepTrace { Tokens = 1, Experts = [experts], Weights = [[0.5f, 0.5f]] });
            traces.Add(trace);
        }
        // The oracle predictor: the prompt's own experts, named before its first step.
        IReadOnlyCollection<ExpertKey>? Oracle(int prompt, int step) =>
            step == 0 ? traces[prompt].Steps[0].Experts[0].Select(e => new ExpertKey(0, e)).ToList() : null;
        var predicted = CacheSimulator.Run(traces, 2, EvictionPolicyKind.Predicted, 1, Oracle);
        var lru = CacheSimulator.Run(traces, 2, EvictionPolicyKind.Lru, 1);
        Assert.That(predicted.Hits, Is.EqualTo(predicted.Requests), "prefetched before use: every request hits");
        Assert.That(lru.Hits, Is.LessThan(predicted.Hits));
        Assert.That(predicted.BytesCopied, Is.EqualTo(lru.BytesCopied), "the same experts move, only earlier");
    }

    [Test]
    public void BeladyEvictsTheOneNeededLast()
    {
        var future = new[] { A, B, C, A, B, A };
        var p = EvictionPolicy.Create(EvictionPolicyKind.Belady, future);
        foreach (var k in future[..3]) p.OnRequest(k);
        Assert.That(p.ChooseVictim([A, B, C], new State()), Is.EqualTo(C), "C is never used again");
        Assert.Throws<InvalidOperationException>(() => p.OnRequest(C), "requests must follow the trace");
    }

    [Test]
    public void SimulatorCountsAClassicSequence()
    {
        // One layer, one token per step choosing one expert... top-1 written as pairs of the same expert is not
        // possible, so use top-2 steps: {0,1}, {0,2}, {0,1}, {3,1} with 3 slots.
        int[][] steps = [[0, 1], [0, 2], [0, 1], [3, 1]];
        var trace = new PromptTrace { NumLayers = 1, NumExperts = 4, TopK = 2 };
        foreach (var s in steps) trace.Steps.Add(new StepTrace { Tokens = 1, Experts = [s], Weights = [[0.5f, 0.5f]] });

        var lru = CacheSimulator.Run([trace], 3, EvictionPolicyKind.Lru, 10);
        Assert.That((lru.Requests, lru.Hits, lru.Misses, lru.Evictions, lru.BytesCopied), Is.EqualTo((8L, 4L, 4L, 1L, 40L)));
        var belady = CacheSimulator.Run([trace], 3, EvictionPolicyKind.Belady, 10);
        Assert.That(belady.Hits, Is.EqualTo(4));

        // With 2 slots LRU evicts 1 for 2 and then 2 for 1: Belady keeps 0 and 1 and reloads less.
        var lru2 = CacheSimulator.Run([trace], 2, EvictionPolicyKind.Lru, 10);
        var belady2 = CacheSimulator.Run([trace], 2, EvictionPolicyKind.Belady, 10);
        Assert.That(belady2.Hits, Is.GreaterThanOrEqualTo(lru2.Hits));
    }

    [Test]
    public void TraceRoundTripsThroughJsonLines()
    {
        var trace = new PromptTrace { Prompt = 3, Task = "bible", NumLayers = 2, NumExperts = 4, TopK = 2 };
        trace.Steps.Add(new StepTrace { Start = 0, Tokens = 1, Experts = [[1, 3], [0, 2]], Weights = [[0.75f, 0.25f], [0.5f, 0.5f]] });
        string path = Path.GetTempFileName();
        using (var w = new StreamWriter(path)) { trace.WriteLine(w); trace.WriteLine(w); }
        var back = PromptTrace.ReadAll(path);
        File.Delete(path);
        Assert.That(back, Has.Count.EqualTo(2));
        Assert.That(back[1].Task, Is.EqualTo("bible"));
        Assert.That(back[1].Steps[0].Experts[1], Is.EqualTo(new[] { 0, 2 }));
        Assert.That(back[1].Steps[0].Weights[0], Is.EqualTo(new[] { 0.75f, 0.25f }));
    }

    [TestCase("512MiB", 512L << 20)]
    [TestCase("2GB", 2_000_000_000L)]
    [TestCase("1.5 KiB", 1536L)]
    [TestCase("4096", 4096L)]
    public void BudgetParsesSizes(string text, long bytes) => Assert.That(ExpertBudget.Parse(text).Bytes, Is.EqualTo(bytes));

    [Test]
    public void BudgetParsesPercentagesAndRejectsNonsense()
    {
        Assert.That(ExpertBudget.Parse("25%").Fraction, Is.EqualTo(0.25));
        Assert.That(ExpertBudget.Parse("all"), Is.EqualTo(ExpertBudget.All));
        Assert.Throws<ArgumentException>(() => ExpertBudget.Parse("150%"));
        Assert.Throws<ArgumentException>(() => ExpertBudget.Parse("-5MB"));
        Assert.Throws<ArgumentException>(() => ExpertBudget.Parse("lots"));
        Assert.That(ExpertBudget.Parse("100%").SlotCount(10, 64, 2), Is.EqualTo(64));
        Assert.That(ExpertBudget.FromBytes(1L << 40).SlotCount(10, 64, 2), Is.EqualTo(64), "a budget above the total keeps everything resident");
    }

    [Test]
    public void ASlotStillLoadingCannotBeTakenUntilItLands()
    {
        var book = new ResidencyBook(2, 1, EvictionPolicy.Create(EvictionPolicyKind.Lru));
        book.Request(A, out _, out _);                    // pinned by the running pass
        book.Loaded(A);
        Assert.That(book.TryPrefetch(B, out _, out _), Is.True); // copying
        Assert.That(book.CanPlace(A), Is.True, "resident");
        Assert.That(book.CanPlace(C), Is.False, "one slot pinned, the other still loading");
        Assert.That(() => book.Request(C, out _, out _), Throws.InvalidOperationException);
        book.Loaded(B);
        Assert.That(book.CanPlace(C), Is.True, "the prefetch landed and may be evicted");
    }

    [Test]
    public void PrefetchHintsNeverEvictAPredictedExpertButDemandMayWhenNothingElseIsLeft()
    {
        var policy = (PredictedSetPolicy)EvictionPolicy.Create(EvictionPolicyKind.Predicted);
        var book = new ResidencyBook(2, 1, policy);
        foreach (var k in new[] { A, B })
        {
            book.Request(k, out _, out _);
            book.Loaded(k);
        }
        book.UnpinAll();
        policy.Protect([A, B]);
        Assert.That(book.TryPrefetch(C, out _, out _), Is.False, "a guess does not displace the predicted set");
        policy.Protect([A]);
        Assert.That(book.TryPrefetch(C, out _, out var evicted), Is.True);
        Assert.That(evicted, Is.EqualTo(B), "the unprotected expert makes room");
        book.Loaded(C);
        policy.Protect([A, C]);
        Assert.That(book.Request(B, out _, out evicted), Is.EqualTo(RequestOutcome.Miss));
        Assert.That(evicted, Is.Not.Null, "a demand miss still gets a slot when every resident expert is predicted");
    }
}
