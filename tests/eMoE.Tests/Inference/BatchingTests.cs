using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Inference;

/// <summary>
/// The batched engine: every sequence of a batch gets exactly what it gets alone, whatever else
/// shares its steps (prefill chunks beside decode tokens, different prompt lengths, sampling
/// settings and architectures, a small expert cache); cancellation frees KV blocks; a full KV pool
/// makes requests wait or preempts them, and the outputs stay the same.
/// </summary>
[TestFixture("mixtral-f32", DeviceKind.IlgpuCpu)]
[TestFixture("qwen3moe-bf16", DeviceKind.IlgpuCpu)]
[TestFixture("olmoe-f16", DeviceKind.IlgpuCpu)]
[TestFixture("mixtral-f32", DeviceKind.Cpu)]
[TestFixture("qwen3moe-bf16", DeviceKind.Cpu)]
[TestFixture("olmoe-f16", DeviceKind.Cpu)]
public sealed class BatchingTests(string fixture, DeviceKind device)
{
    private static readonly int[][] Prompts =
    [
        [1, 17, 230, 45, 99, 310, 7],
        [1, 7, 3],
        [1, 230, 99, 17, 45, 88, 301, 12, 5, 400, 61, 2, 77, 19, 250, 33, 101, 9, 480, 6, 71],
        [1, 5],
        [1, 64, 28, 411, 3, 7, 99, 310, 45, 230, 17, 1, 9, 300],
    ];

    private static readonly GenerationOptions[] Options =
    [
        new() { MaxTokens = 12, StopAtEndOfSequence = false },
        new() { MaxTokens = 20, StopAtEndOfSequence = false },
        new() { MaxTokens = 9, StopAtEndOfSequence = false, Sampling = new SamplingOptions { Temperature = 0.9f, TopK = 40, TopP = 0.95f, Seed = 11 } },
        new() { MaxTokens = 16, StopAtEndOfSequence = false, Sampling = new SamplingOptions { Temperature = 1.3f, Seed = 3 } },
        new() { MaxTokens = 14, StopAtEndOfSequence = false },
    ];

    private string Directory => RepoPaths.Combine("tests", "fixtures", "models", fixture);

    private MoeModel Load(string budget = "all", int maxBatch = 8, int tokensPerStep = 8, long? kvMemory = null) => MoeModel.Load(Directory, new ModelOptions
    {
        Device = device,
        ContextLength = 64,
        Engine = new EngineOptions { MaxBatch = maxBatch, MaxTokensPerStep = tokensPerStep, KvMemoryBytes = kvMemory },
        Experts = new ExpertCacheOptions { Budget = ExpertBudget.Parse(budget), Policy = EvictionPolicyKind.Lru },
    });

    private static async Task<List<int>> Generate(MoeModel model, int[] prompt, GenerationOptions options, Func<int, Task>? afterToken = null)
    {
        var ids = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(prompt, options, new GenerationStats()))
        {
            ids.Add(id);
            if (afterToken is not null) await afterToken(ids.Count);
        }
        return ids;
    }

    /// <summary>Each prompt alone, one after another, on a fresh model: the reference.</summary>
    private async Task<List<int>[]> Alone(string budget)
    {
        using var model = Load(budget, maxBatch: 1);
        var result = new List<int>[Prompts.Length];
        for (int i = 0; i < Prompts.Length; i++) result[i] = await Generate(model, Prompts[i], Options[i]);
        return result;
    }

    [TestCase("all")]
    [TestCase("25%")]
    public async Task EverySequenceOfABatchGetsTheTokensItGetsAlone(string budget)
    {
        if (device == DeviceKind.Cpu && budget != "all")
        {
            // The host holds every expert in place: an offloading budget is refused, by name.
            Assert.That(Assert.Throws<ArgumentException>(() => Load(budget))!.Message, Does.Contain("expert memory budget"));
            return;
        }
        var alone = await Alone(budget);
        using var model = Load(budget);
        // The first request decodes while the others arrive and prefill in chunks of the 8-token step budget.
        var started = new TaskCompletionSource();
        var first = Generate(model, Prompts[0], Options[0], n =>
        {
            if (n == 2) started.TrySetResult();
            return Task.CompletedTask;
        });
        await started.Task;
        var rest = Enumerable.Range(1, Prompts.Length - 1).Select(i => Generate(model, Prompts[i], Options[i])).ToList();
        var together = await Task.WhenAll([first, .. rest]);
        for (int i = 0; i < Prompts.Length; i++) Assert.That(together[i], Is.EqualTo(alone[i]), $"prompt {i} at {budget}");
        var stats = model.EngineStats;
        Assert.That(stats.LargestBatch, Is.GreaterThanOrEqualTo(3), "the requests really shared steps");
        Assert.That(stats.KvBlocksUsed, Is.Zero, "every block returned");
        if (budget != "all") Assert.That(model.ExpertStats.Overall.Misses, Is.Positive, "the batch's experts did not all fit");
    }

    [Test]
    public async Task LogitsScoredInABatchEqualLogitsAlone()
    {
        float[][] alone;
        using (var solo = Load(maxBatch: 1)) alone = Prompts.Select(solo.ComputeLogits).ToArray();
        using var model = Load();
        // Logits of every prompt at once, beside generations that run one after another until they are
        // done: one ragged batch of scoring and sampling rows. A step of the tiny model takes well under a
        // millisecond, so requests started on thread-pool threads may still miss each other: the round is
        // repeated until they shared a step, and every round's logits must equal the logits alone.
        using var stop = new CancellationTokenSource();
        var started = new TaskCompletionSource();
        var generation = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await foreach (int _ in model.GenerateIdsAsync(Prompts[3], new GenerationOptions { MaxTokens = 60, StopAtEndOfSequence = false }, new GenerationStats(), stop.Token))
                    started.TrySetResult();
            }
        });
        await started.Task;
        for (int round = 0; round < 20 && model.EngineStats.LargestBatch < 2; round++)
        {
            var logits = await Task.WhenAll(Prompts.Select(p => Task.Run(() => model.ComputeLogits(p))));
            for (int i = 0; i < Prompts.Length; i++) Assert.That(logits[i], Is.EqualTo(alone[i]).Within(1e-4f), $"round {round}, prompt {i}");
        }
        await stop.CancelAsync();
        await generation;
        Assert.That(model.EngineStats.LargestBatch, Is.GreaterThanOrEqualTo(2));
    }

    [Test]
    public async Task AFullKvPoolMakesRequestsWaitOrPreemptsAndOutputsStayTheSame()
    {
        var alone = await Alone("all");
        // Room for exactly one whole sequence (64 positions = 4 blocks of 16): five requests must queue and preempt.
        long oneSequence = 4 * PagedKvCache.BytesPerBlock(ModelConfigOf(), PagedKvCache.DefaultBlockSize);
        using var model = Load(kvMemory: oneSequence, tokensPerStep: 16);
        var together = await Task.WhenAll(Enumerable.Range(0, Prompts.Length).Select(i => Generate(model, Prompts[i], Options[i])));
        for (int i = 0; i < Prompts.Length; i++) Assert.That(together[i], Is.EqualTo(alone[i]), $"prompt {i}");
        var stats = model.EngineStats;
        Assert.That(stats.Preemptions, Is.Positive, "growing sequences ran out of blocks and were recomputed");
        Assert.That(stats.KvBlocksPeak, Is.LessThanOrEqualTo(4));
        Assert.That(stats.KvBlocksUsed, Is.Zero);
    }

    [Test]
    public async Task CancellationFreesTheSequenceAndItsBlocks()
    {
        using var model = Load();
        using var cancel = new CancellationTokenSource();
        var other = Generate(model, Prompts[1], Options[1]);
        var ids = new List<int>();
        var stats = new GenerationStats();
        await foreach (int id in model.GenerateIdsAsync(Prompts[4], new GenerationOptions { MaxTokens = 40, StopAtEndOfSequence = false }, stats, cancel.Token))
        {
            ids.Add(id);
            if (ids.Count == 3) await cancel.CancelAsync();
        }
        Assert.That(ids, Has.Count.EqualTo(3));
        Assert.That(stats.FinishReason, Is.EqualTo(FinishReason.Cancelled));
        await other;
        await WaitUntil(() => model.EngineStats is { Running: 0, KvBlocksUsed: 0 });

        // Leaving the enumeration early (no token) cancels too.
        await foreach (int _ in model.GenerateIdsAsync(Prompts[4], new GenerationOptions { MaxTokens = 40, StopAtEndOfSequence = false }, new GenerationStats()))
            break;
        await WaitUntil(() => model.EngineStats is { Running: 0, Waiting: 0, KvBlocksUsed: 0 });
    }

    [Test]
    public void KvMemoryBelowOneSequenceIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => Load(kvMemory: 1000))!;
        Assert.That(e.Message, Does.Contain("KV memory").And.Contain("cannot hold one sequence").And.Contain("context length 64"));
    }

    private eMoE.Model.ModelConfig ModelConfigOf() => eMoE.Model.ModelConfig.Load(Directory);

    private static async Task WaitUntil(Func<bool> condition)
    {
        for (int i = 0; i < 200 && !condition(); i++) await Task.Delay(10);
        Assert.That(condition(), "the engine settled");
    }
}
