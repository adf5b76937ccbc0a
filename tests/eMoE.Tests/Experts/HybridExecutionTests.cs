using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using NUnit.Framework;

namespace eMoE.Tests.Experts;

/// <summary>
/// Hybrid execution with ILGPU's CPU accelerator playing the device: experts that are not resident
/// run on the host instead of being copied, and the tokens are the same; auto decides by the link's
/// cost; host-only layers never touch the device.
/// </summary>
public sealed class HybridExecutionTests
{
    private static readonly int[] Prompt = [1, 17, 230, 45, 99, 310, 7, 3, 411, 28, 64, 5];

    private static MoeModel Load(string model, ExpertCacheOptions experts) => MoeModel.Load(model, new ModelOptions
    {
        Device = DeviceKind.IlgpuCpu,
        ContextLength = 64,
        Experts = experts,
    });

    private static async Task<List<int>> Greedy(MoeModel model, int[] prompt, int tokens = 16)
    {
        var ids = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(prompt, new GenerationOptions { MaxTokens = tokens, StopAtEndOfSequence = false }, new GenerationStats()))
            ids.Add(id);
        return ids;
    }

    private static IEnumerable<TestCaseData> Modes()
    {
        yield return new TestCaseData(ExpertExecution.Host, 0, null).SetName("host");
        yield return new TestCaseData(ExpertExecution.Auto, 0, null).SetName("auto, measured link");
        yield return new TestCaseData(ExpertExecution.Auto, 0, 1e6).SetName("auto, 1 MB/s link");
        yield return new TestCaseData(ExpertExecution.Auto, 0, 1e13).SetName("auto, 10 TB/s link");
        yield return new TestCaseData(ExpertExecution.Device, 1, null).SetName("first layer on the host");
    }

    [TestCaseSource(nameof(Modes))]
    public async Task TokensAreTheSameWhereverTheExpertsRun(ExpertExecution execution, int cpuLayers, double? link)
    {
        foreach (string model in new[] { RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32"), RepoPaths.ShippedModel })
        {
            int[] prompt = model == RepoPaths.ShippedModel ? [1, 1015, 2237, 1209, 351, 88, 2301, 47] : Prompt;
            List<int> reference;
            using (var all = Load(model, new ExpertCacheOptions())) reference = await Greedy(all, prompt);
            using var hybrid = Load(model, new ExpertCacheOptions
            {
                Budget = ExpertBudget.Parse("25%"), Policy = EvictionPolicyKind.Lru, Execution = execution, CpuMoeLayers = cpuLayers, LinkBytesPerSecond = link,
            });
            Assert.That(await Greedy(hybrid, prompt), Is.EqualTo(reference), $"{execution}, {cpuLayers} host layers, link {link} on {model}");
            var o = hybrid.ExpertStats.Overall;
            Assert.That(o.Requests + o.HostExperts, Is.Positive);
            if (execution == ExpertExecution.Host || cpuLayers > 0) Assert.That(o.HostAssignments, Is.Positive);
        }
    }

    [Test]
    public async Task HostModeNeverCopiesAndCountsWhatItDidNotCopy()
    {
        using var model = Load(RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32"),
            new ExpertCacheOptions { Budget = ExpertBudget.Parse("25%"), Execution = ExpertExecution.Host });
        await Greedy(model, Prompt);
        var o = model.ExpertStats.Overall;
        Assert.That(o.BytesCopied, Is.Zero);
        Assert.That(o.HostAssignments, Is.Positive);
        Assert.That(o.BytesNotCopied, Is.EqualTo(o.HostExperts * model.ExpertStats.ExpertBytes));
        Assert.That(o.HostSeconds, Is.Positive);
    }

    [Test]
    public async Task AutoComputesOnTheHostOverASlowLinkAndCopiesOverAFastOne()
    {
        string fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");
        ExpertCacheOptions Auto(double link) => new() { Budget = ExpertBudget.Parse("25%"), Execution = ExpertExecution.Auto, LinkBytesPerSecond = link };
        using (var slow = Load(fixture, Auto(1e3)))
        {
            await Greedy(slow, Prompt);
            Assert.That(slow.ExpertStats.Overall.BytesCopied, Is.Zero, "a 1 kB/s link: copying an expert takes minutes");
            Assert.That(slow.ExpertStats.Overall.HostAssignments, Is.Positive);
        }
        using var fast = Load(fixture, Auto(1e15));
        await Greedy(fast, Prompt);
        Assert.That(fast.ExpertStats.Overall.HostAssignments, Is.Zero, "a 1 PB/s link: copying costs nothing");
        Assert.That(fast.ExpertStats.Overall.Misses, Is.Positive);
    }

    [Test]
    public async Task HostOnlyLayersTakeNoSlotsAndNeverAskTheDevice()
    {
        using var model = Load(RepoPaths.ShippedModel, new ExpertCacheOptions { CpuMoeLayers = 2 });
        await Greedy(model, [1, 1015, 2237, 1209, 351, 88, 2301, 47]);
        var stats = model.ExpertStats;
        Assert.That(stats.Slots, Is.EqualTo(2 * 16), "all experts of the two device layers, none of the host layers");
        Assert.That(stats.Layers[0].Requests + stats.Layers[1].Requests, Is.Zero);
        Assert.That(stats.Layers[0].HostAssignments, Is.Positive);
        Assert.That(stats.Layers[2].HostAssignments + stats.Layers[3].HostAssignments, Is.Zero);
        Assert.That(stats.Layers[3].Hits, Is.Positive);
    }

    [Test]
    public void BadHybridSettingsAreRefusedByName()
    {
        string fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");
        Assert.That(Assert.Throws<ArgumentException>(() => Load(fixture, new ExpertCacheOptions { CpuMoeLayers = 3 }))!.Message, Does.Contain("2 layers"));
        Assert.That(Assert.Throws<ArgumentException>(() => Load(fixture, new ExpertCacheOptions
        {
            Budget = ExpertBudget.Parse("50%"), OnMiss = MissMode.Reroute, Execution = ExpertExecution.Host,
        }))!.Message, Does.Contain("rerouting"));
        Assert.That(Assert.Throws<ArgumentException>(() => MoeModel.Load(fixture, new ModelOptions
        {
            Device = DeviceKind.Cpu, Experts = new ExpertCacheOptions { Execution = ExpertExecution.Host },
        }))!.Message, Does.Contain("hybrid execution"));
    }
}
