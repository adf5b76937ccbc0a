using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Scheduling;
using eMoE.Tests.Cli;
using NUnit.Framework;

namespace eMoE.Tests.Inference;

/// <summary>
/// Expert parallelism over several ILGPU devices in one process: whatever the device count, the
/// placement and each device's budget, every token is what one device produces. The devices run the
/// same kernels on the same rows (each assignment's output depends only on its own activations and
/// expert), and the primary combines in rank order, so even the logits are bitwise equal.
/// </summary>
[TestFixture("mixtral-f32")]
[TestFixture("qwen3moe-bf16")]
[TestFixture("olmoe-f16")]
public sealed class ExpertParallelTests(string fixture)
{
    private static readonly int[][] Prompts =
    [
        [1, 17, 230, 45, 99, 310, 7],
        [1, 7, 3],
        [1, 230, 99, 17, 45, 88, 301, 12, 5, 400, 61, 2, 77, 19, 250, 33, 101, 9, 480, 6, 71],
        [1, 64, 28, 411, 3, 7, 99, 310, 45, 230, 17, 1, 9, 300],
    ];

    private static readonly GenerationOptions Greedy = new() { MaxTokens = 12, StopAtEndOfSequence = false };

    private string Directory => RepoPaths.Combine("tests", "fixtures", "models", fixture);

    private MoeModel Load(int devices, string budget = "all", ExpertPlacement? placement = null) => MoeModel.Load(Directory, new ModelOptions
    {
        Device = DeviceKind.IlgpuCpu,
        Devices = devices == 1 ? null : [.. Enumerable.Repeat<DeviceSpec>(DeviceKind.IlgpuCpu, devices)],
        Placement = placement,
        ContextLength = 64,
        Engine = new EngineOptions { MaxBatch = 8, MaxTokensPerStep = 8 },
        Experts = new ExpertCacheOptions { Budget = ExpertBudget.Parse(budget), Policy = EvictionPolicyKind.Lru },
    });

    private static async Task<List<int>> Generate(MoeModel model, int[] prompt)
    {
        var ids = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(prompt, Greedy, new GenerationStats())) ids.Add(id);
        return ids;
    }

    /// <summary>Each prompt alone on one device with every expert resident: the reference.</summary>
    private async Task<List<int>[]> OneDevice()
    {
        using var model = Load(1);
        var result = new List<int>[Prompts.Length];
        for (int i = 0; i < Prompts.Length; i++) result[i] = await Generate(model, Prompts[i]);
        return result;
    }

    [TestCase(2, "all")]
    [TestCase(3, "all")]
    [TestCase(2, "25%")]
    [TestCase(3, "25%")]
    public async Task GreedyOutputOnSeveralDevicesEqualsOneDevice(int devices, string budget)
    {
        var reference = await OneDevice();
        using var model = Load(devices, budget);
        for (int i = 0; i < Prompts.Length; i++) Assert.That(await Generate(model, Prompts[i]), Is.EqualTo(reference[i]), $"prompt {i}");

        var stats = model.ExpertStats;
        Assert.That(stats.Devices, Has.Count.EqualTo(devices));
        Assert.That(stats.Devices!.Select(d => d.Overall.Requests), Has.All.Positive, "every device served some of the experts");
        Assert.That(stats.Overall.Requests, Is.EqualTo(stats.Devices!.Sum(d => d.Overall.Requests)), "the counters are summed over devices");
        if (budget == "all") Assert.That(stats.Overall.Misses, Is.Zero);
        else Assert.That(stats.Overall.Misses, Is.Positive, "a 25% budget per device cannot hold every expert of a device's share");
    }

    [Test]
    public void LogitsOnTwoDevicesAreBitwiseThoseOfOne()
    {
        float[][] one;
        using (var single = Load(1)) one = [.. Prompts.Select(single.ComputeLogits)];
        using var model = Load(2, "25%");
        for (int i = 0; i < Prompts.Length; i++) Assert.That(model.ComputeLogits(Prompts[i]), Is.EqualTo(one[i]), $"prompt {i}");
    }

    [TestCase(2, "25%")]
    [TestCase(3, "all")]
    public async Task ConcurrentRequestsOnSeveralDevicesGetTheTokensOfOneDevice(int devices, string budget)
    {
        var reference = await OneDevice();
        using var model = Load(devices, budget);
        var together = await Task.WhenAll(Prompts.Select(p => Generate(model, p)));
        for (int i = 0; i < Prompts.Length; i++) Assert.That(together[i], Is.EqualTo(reference[i]), $"prompt {i}");
        Assert.That(model.EngineStats.LargestBatch, Is.GreaterThanOrEqualTo(2), "the requests shared steps");
    }

    [Test]
    public void AGivenPlacementIsUsedAndOneForAnotherDeviceCountIsRefused()
    {
        var config = eMoE.Model.ModelConfig.Load(Directory);
        // Every expert but one per layer on device 1: the primary serves almost nothing.
        var lopsided = new ExpertPlacement("test", config.NumLayers, config.NumExperts,
            [[.. Enumerable.Range(0, config.NumLayers).Select(_ => new[] { 0 })], [.. Enumerable.Range(0, config.NumLayers).Select(_ => Enumerable.Range(1, config.NumExperts - 1).ToArray())]],
            equalExpertsPerDevice: false);
        using (var model = Load(2, placement: lopsided)) Assert.That(model.ExpertStats.Devices![1].Slots, Is.EqualTo(config.NumLayers * (config.NumExperts - 1)));

        var forThree = ExpertPlacement.RoundRobin(config.NumLayers, config.NumExperts, 3);
        var error = Assert.Throws<ArgumentException>(() => Load(2, placement: forThree))!;
        Assert.That(error.Message, Does.Contain("3 devices").And.Contain("2 devices"));
    }

    [Test]
    public void TheHostCannotBeOneOfSeveralDevices()
    {
        var error = Assert.Throws<ArgumentException>(() => MoeModel.Load(Directory, new ModelOptions { Devices = [DeviceKind.IlgpuCpu, DeviceKind.Cpu] }))!;
        Assert.That(error.Message, Does.Contain("'cpu'").And.Contain("ilgpu-cpu"));
    }
}

/// <summary><c>emoe generate --devices</c> and <c>--placement</c>.</summary>
[NonParallelizable]
public sealed class ExpertParallelCliTests
{
    private static readonly string Model = RepoPaths.ShippedModel;

    private static Task<(int Code, string Out, string Err)> Generate(params string[] extra) =>
        CliTests.Emoe(["generate", "--model", Model, "--prompt", "And God said", "--max-tokens", "8", .. extra]);

    [Test]
    public async Task GenerateOnTwoDevicesPrintsWhatOneDevicePrints()
    {
        var (oneCode, one, oneErr) = await Generate("--device", "ilgpu-cpu");
        Assert.That(oneCode, Is.EqualTo(0), oneErr);
        var (code, two, err) = await Generate("--devices", "ilgpu-cpu,ilgpu-cpu", "--expert-memory", "25%,50%");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(two, Is.EqualTo(one));
        Assert.That(err, Does.Contain("per device: slots"));
    }

    [Test]
    public async Task APlacementForAnotherDeviceCountIsAClearError()
    {
        var config = eMoE.Model.ModelConfig.Load(Model);
        string file = Path.Combine(Path.GetTempPath(), $"emoe-placement-{Guid.NewGuid():N}.json");
        try
        {
            ExpertPlacement.RoundRobin(config.NumLayers, config.NumExperts, 3).Save(file);
            var (code, _, err) = await Generate("--devices", "ilgpu-cpu,ilgpu-cpu", "--placement", file);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(err, Does.Contain("3 devices"));
            var (cpuCode, _, cpuErr) = await Generate("--devices", "ilgpu-cpu,cpu");
            Assert.That(cpuCode, Is.EqualTo(1));
            Assert.That(cpuErr, Does.Contain("'cpu'"));
        }
        finally
        {
            File.Delete(file);
        }
    }
}
