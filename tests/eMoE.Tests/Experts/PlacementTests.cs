using System.Text.Json;
using eMoE.Experts;
using eMoE.Model;
using eMoE.Prediction;
using NUnit.Framework;

namespace eMoE.Tests.Experts;

/// <summary>Expert placement across devices: files, checks, the three methods, the measures, and `emoe place` / `emoe bench placement`.</summary>
[NonParallelizable] // the CLI tests redirect the console
public sealed class PlacementTests
{
    private static readonly string Fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32"); // 2 layers x 8 experts, top-2

    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"emoe-place-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, true);

    /// <summary>One prompt whose tokens each run as a step of their own: token t chose the experts tokens[t] in every layer.</summary>
    private static PromptTrace Prompt(int index, int layers, int experts, params int[][] tokens)
    {
        var trace = new PromptTrace { Prompt = index, NumLayers = layers, NumExperts = experts, TopK = tokens[0].Length };
        for (int t = 0; t < tokens.Length; t++)
        {
            trace.Steps.Add(new StepTrace
            {
                Start = t, Tokens = 1,
                Experts = [.. Enumerable.Range(0, layers).Select(_ => tokens[t])],
                Weights = [.. Enumerable.Range(0, layers).Select(_ => new float[tokens[t].Length])],
            });
        }
        return trace;
    }

    private static int[][] Repeat(int times, params int[] experts) => [.. Enumerable.Repeat(experts, times)];

    /// <summary>
    /// 8 experts, top-2: experts 0, 1, 4 and 5 carry 30 assignments each and the rest 10, so
    /// round-robin over 4 devices puts the heavy 0 and 4 (and 1 and 5) together.
    /// </summary>
    private static List<PromptTrace> Skewed(int layers = 2, int prompts = 4) =>
    [
        .. Enumerable.Range(0, prompts).Select(p => Prompt(p, layers, 8,
            [.. Repeat(30, 0, 1), .. Repeat(30, 4, 5), .. Repeat(10, 2, 3), .. Repeat(10, 6, 7)])),
    ];

    private static void WriteTrace(string path, IEnumerable<PromptTrace> traces)
    {
        using var writer = new StreamWriter(path);
        foreach (var t in traces) t.WriteLine(writer);
    }

    private static Task<(int Code, string Out, string Err)> Emoe(params string[] args) => eMoE.Tests.Cli.CliTests.Emoe(args);

    [Test]
    public void PlacementFilesRoundTrip()
    {
        var loads = ExpertLoads.FromTraces(Skewed(), "synthetic");
        var auto = AutoPlacement.Choose(Skewed(), 4, "synthetic").Placement;
        Assert.That(auto.ChosenMethod, Is.Not.Null);
        foreach (var placement in new[] { ExpertPlacement.RoundRobin(2, 8, 4), ExpertPlacement.Greedy(loads, 4), ExpertPlacement.GreedyCorrelated(loads, 3), auto })
        {
            string path = Path.Combine(_dir, $"{placement.Method}.json");
            placement.Save(path);
            var loaded = ExpertPlacement.Load(path);
            Assert.That((loaded.Method, loaded.ChosenMethod, loaded.Devices, loaded.NumLayers, loaded.NumExperts, loaded.EqualExpertsPerDevice, loaded.FittedOn),
                Is.EqualTo((placement.Method, placement.ChosenMethod, placement.Devices, placement.NumLayers, placement.NumExperts, placement.EqualExpertsPerDevice,
                    placement.FittedOn)));
            for (int l = 0; l < 2; l++)
            {
                for (int e = 0; e < 8; e++) Assert.That(loaded.DeviceOf(l, e), Is.EqualTo(placement.DeviceOf(l, e)), $"{placement.Method} L{l}E{e}");
            }
            Assert.That(loaded.ToJson(), Is.EqualTo(File.ReadAllText(path)), "saving what was loaded writes the same file");
        }
        Assert.That(ExpertPlacement.Greedy(loads, 4).FittedOn, Is.EqualTo("synthetic"));
        Assert.That(File.ReadAllText(Path.Combine(_dir, "greedy.json")), Does.Not.Contain("chosen_method"), "written only for a placement that chose");
    }

    [Test]
    public void FilesWithoutAChosenMethodStillLoad()
    {
        string path = Path.Combine(_dir, "old.json");
        File.WriteAllText(path, Good); // a file as written before chosen_method existed
        var loaded = ExpertPlacement.Load(path);
        Assert.That((loaded.Method, loaded.ChosenMethod), Is.EqualTo(("manual", (string?)null)));
    }

    private const string Good = """
        {"format": "emoe-expert-placement", "version": 1, "method": "manual", "devices": 2, "num_layers": 2, "num_experts": 4,
         "equal_experts_per_device": true,
         "placement": [{"device": 0, "experts": [[0, 2], [0, 2]]}, {"device": 1, "experts": [[1, 3], [1, 3]]}]}
        """;

    private static IEnumerable<TestCaseData> BadFiles()
    {
        yield return new TestCaseData("\"experts\": [[1, 3], [1, 3]]", "\"experts\": [[1, 3], [1]]", "layer 1: expert 3 is on no device").SetName("ExpertOnNoDevice");
        yield return new TestCaseData("\"experts\": [[1, 3], [1, 3]]", "\"experts\": [[1, 3, 2], [1, 3]]", "layer 0: expert 2 is on two devices (0 and 1)").SetName("ExpertOnTwoDevices");
        yield return new TestCaseData("{\"device\": 1,", "{\"device\": 5,", "device id 5 is out of range").SetName("DeviceIdOutOfRange");
        yield return new TestCaseData("{\"device\": 1,", "{\"device\": 0,", "device id 0 is listed twice").SetName("DeviceListedTwice");
        yield return new TestCaseData("\"experts\": [[0, 2], [0, 2]]", "\"experts\": [[0, 2, 1], [0, 2]]", "on two devices").SetName("DuplicateAcrossDevices");
        yield return new TestCaseData("\"experts\": [[0, 2], [0, 2]]", "\"experts\": [[0, 4], [0, 2]]", "expert 4 is out of range").SetName("ExpertIdOutOfRange");
        yield return new TestCaseData("\"experts\": [[0, 2], [0, 2]]", "\"experts\": [[0, 2]]", "device 0 lists experts for 1 layers; the placement has 2 layers").SetName("WrongLayerCount");
        yield return new TestCaseData("\"devices\": 2", "\"devices\": 3", "says 3 devices but lists 2").SetName("DeviceMissing");
    }

    [TestCaseSource(nameof(BadFiles))]
    public void BadPlacementFilesAreRefusedWithAMessage(string from, string to, string message)
    {
        string path = Path.Combine(_dir, "bad.json");
        string text = Good.Replace(from, to, StringComparison.Ordinal);
        Assert.That(text, Is.Not.EqualTo(Good), "the case edits the file");
        File.WriteAllText(path, text);
        var e = Assert.Throws<ArgumentException>(() => ExpertPlacement.Load(path))!;
        Assert.That(e.Message, Does.Contain(message).And.StartWith(path));
    }

    [Test]
    public void UnequalCountsAreRefusedWhereEqualOnesArePromised()
    {
        string path = Path.Combine(_dir, "unequal.json");
        string unequal = Good.Replace("[[0, 2], [0, 2]]", "[[0, 1, 2], [0, 2]]", StringComparison.Ordinal).Replace("[[1, 3], [1, 3]]", "[[3], [1, 3]]", StringComparison.Ordinal);
        File.WriteAllText(path, unequal);
        var e = Assert.Throws<ArgumentException>(() => ExpertPlacement.Load(path))!;
        Assert.That(e.Message, Does.Contain("layer 0: unequal expert counts per device (3, 1)").And.Contain("2 experts per device"));
        File.WriteAllText(path, unequal.Replace("\"equal_experts_per_device\": true", "\"equal_experts_per_device\": false", StringComparison.Ordinal));
        Assert.That(ExpertPlacement.Load(path).ExpertsOn(0, 0), Is.EqualTo(new[] { 0, 1, 2 }), "allowed when not promised");
    }

    [Test]
    public void FilesThatAreNotPlacementsAreRefused()
    {
        string path = Path.Combine(_dir, "x.json");
        File.WriteAllText(path, "not json");
        Assert.That(Assert.Throws<InvalidDataException>(() => ExpertPlacement.Load(path))!.Message, Does.Contain("not an expert placement"));
        File.WriteAllText(path, Good.Replace("\"devices\": 2,", "", StringComparison.Ordinal));
        Assert.That(Assert.Throws<InvalidDataException>(() => ExpertPlacement.Load(path))!.Message, Does.Contain("\"devices\" must be an integer"));
        File.WriteAllText(path, Good.Replace("emoe-expert-placement", "something-else", StringComparison.Ordinal));
        Assert.That(Assert.Throws<InvalidDataException>(() => ExpertPlacement.Load(path))!.Message, Does.Contain("\"format\""));
    }

    [Test]
    public void PlacementsThatDoNotFitTheModelOrTheDeviceCountAreRefused()
    {
        var config = ModelConfig.Load(Fixture);
        var placement = ExpertPlacement.RoundRobin(config.NumLayers, config.NumExperts, 2);
        Assert.DoesNotThrow(() => placement.CheckFits(config, 2));
        Assert.That(Assert.Throws<ArgumentException>(() => placement.CheckFits(config with { NumLayers = 3 }, 2))!.Message,
            Is.EqualTo("the placement has 2 layers; the model has 3 layers"));
        Assert.That(Assert.Throws<ArgumentException>(() => placement.CheckFits(config with { NumExperts = 16 }, 2))!.Message,
            Is.EqualTo("the placement has 8 experts per layer; the model has 16 experts per layer"));
        Assert.That(Assert.Throws<ArgumentException>(() => placement.CheckFits(config, 4))!.Message,
            Is.EqualTo("the placement is for 2 devices, not the 4 devices asked for"));
        Assert.That(Assert.Throws<ArgumentException>(() => ExpertPlacement.RoundRobin(2, 8, 9))!.Message,
            Does.Contain("9 devices are more than the 8 experts per layer"));
        Assert.That(Assert.Throws<ArgumentException>(() => ExpertPlacement.Greedy(ExpertLoads.FromTraces(Skewed()), 9))!.Message,
            Does.Contain("more than the 8 experts"));
    }

    [Test]
    public void GreedyBalancesASkewedTraceBetterThanRoundRobin()
    {
        var split = PlacementEvaluation.Split(Skewed());
        var loads = ExpertLoads.FromTraces(split.Fit);
        var rr = PlacementEvaluation.Evaluate(ExpertPlacement.RoundRobin(2, 8, 4), split.Test);
        Assert.That(rr.MaxOverMean, Is.EqualTo(1.5).Within(1e-9), "round-robin: experts 0 and 4 (60 of 160 per layer) on device 0");
        foreach (var placement in new[] { ExpertPlacement.Greedy(loads, 4), ExpertPlacement.GreedyCorrelated(loads, 4) })
        {
            var s = PlacementEvaluation.Evaluate(placement, split.Test);
            Assert.That(s.MaxOverMean, Is.EqualTo(1.0).Within(1e-9), placement.Method);
            Assert.That(s.LayerMaxOverMean, Is.All.EqualTo(1.0).Within(1e-9), placement.Method);
            Assert.That(s.MaxOverMean, Is.LessThanOrEqualTo(rr.MaxOverMean));
            Assert.That(s.StepMaxOverMean, Is.LessThanOrEqualTo(rr.StepMaxOverMean), placement.Method);
        }
    }

    [Test]
    public void GreedyPutsAnEqualNumberOfExpertsOnEveryDevice()
    {
        var rng = new Random(7);
        foreach (var (experts, devices) in new[] { (16, 2), (16, 4), (16, 8), (10, 4), (8, 8), (7, 3) })
        {
            // Zipf-like loads: token t picks two distinct experts, the lower ids far more often.
            var tokens = Enumerable.Range(0, 400).Select(_ =>
            {
                int a = (int)(experts * Math.Pow(rng.NextDouble(), 3)), b = (a + 1 + rng.Next(experts - 1)) % experts;
                return new[] { a, b };
            }).ToArray();
            var loads = ExpertLoads.FromTraces([Prompt(0, 3, experts, tokens)]);
            foreach (var placement in new[] { ExpertPlacement.Greedy(loads, devices), ExpertPlacement.GreedyCorrelated(loads, devices) })
            {
                Assert.That(placement.EqualExpertsPerDevice, Is.True);
                for (int l = 0; l < 3; l++)
                {
                    var counts = Enumerable.Range(0, devices).Select(d => placement.ExpertsOn(d, l).Count).ToArray();
                    Assert.That(counts, Is.All.InRange(experts / devices, (experts + devices - 1) / devices), $"{placement.Method} {experts}/{devices} L{l}");
                    Assert.That(counts.Sum(), Is.EqualTo(experts));
                    Assert.That(Enumerable.Range(0, devices).SelectMany(d => placement.ExpertsOn(d, l)).Order(), Is.EqualTo(Enumerable.Range(0, experts)));
                }
            }
        }
    }

    [Test]
    public void TheCorrelationTermSeparatesExpertsThatAlwaysFireTogether()
    {
        // 6 experts over 2 devices. Loads 0: 10, 1: 6, 2: 6, 3: 5, 4: 5, 5: 0; experts 1 and 2 fire only together.
        var trace = Prompt(0, 1, 6, [.. Repeat(5, 0, 3), .. Repeat(5, 0, 4), .. Repeat(6, 1, 2)]);
        var loads = ExpertLoads.FromTraces([trace]);
        Assert.That(loads.Correlation(0, 1, 2), Is.EqualTo(1).Within(1e-9));
        Assert.That(loads.Correlation(0, 0, 2), Is.EqualTo(-1).Within(1e-9), "0 fires exactly when 2 does not");
        var greedy = ExpertPlacement.Greedy(loads, 2);
        var correlated = ExpertPlacement.GreedyCorrelated(loads, 2);
        // Greedy by load: 0 -> d0 (10), 1 -> d1 (6), 2 -> d1 (the lighter, 12): the co-firing pair together.
        Assert.That(greedy.DeviceOf(0, 1), Is.EqualTo(greedy.DeviceOf(0, 2)), "greedy alone puts them together here");
        Assert.That(correlated.DeviceOf(0, 1), Is.Not.EqualTo(correlated.DeviceOf(0, 2)), "greedy-corr keeps them apart");
        var g = PlacementEvaluation.Evaluate(greedy, [trace]);
        var c = PlacementEvaluation.Evaluate(correlated, [trace]);
        Assert.That(c.StepMaxOverMean, Is.LessThan(g.StepMaxOverMean), "each {1, 2} token loads both devices instead of one");
    }

    [Test]
    public void CorrelationsAcrossLayersCountToo()
    {
        // Two layers of 2 experts, top-1, 2 devices, equal loads; every token picks the same expert in both layers.
        // Round-robin (and greedy, on ties) puts expert e of both layers on device e: each token loads one device twice.
        var tokens = Enumerable.Range(0, 40).Select(t => new[] { t % 2 }).ToArray();
        var trace = Prompt(0, 2, 2, tokens);
        var loads = ExpertLoads.FromTraces([trace]);
        Assert.That(loads.Correlation(0, 0, 1, 0), Is.EqualTo(1).Within(1e-9));
        Assert.That(loads.Correlation(0, 0, 1, 1), Is.EqualTo(-1).Within(1e-9));
        var placement = ExpertPlacement.GreedyCorrelated(loads, 2);
        for (int e = 0; e < 2; e++) Assert.That(placement.DeviceOf(1, e), Is.Not.EqualTo(placement.DeviceOf(0, e)), $"expert {e}");
        var rr = PlacementEvaluation.Evaluate(ExpertPlacement.RoundRobin(2, 2, 2), [trace]);
        var correlated = PlacementEvaluation.Evaluate(placement, [trace]);
        Assert.That((rr.StepMaxOverMean, correlated.StepMaxOverMean), Is.EqualTo((2.0, 1.0)));
    }

    [Test]
    public void BatchedTraceStepsAreGroupedByEngineStep()
    {
        // One layer, 2 experts, top-1. Prompt A ran in engine steps 0 (prefill of 2), 1, 2; prompt B in 1 (prefill of 2), 2, 3.
        static StepTrace S(long engine, params int[] experts) =>
            new() { Start = 0, Tokens = experts.Length, EngineStep = engine, Experts = [experts], Weights = [new float[experts.Length]] };
        var a = new PromptTrace { Prompt = 0, NumLayers = 1, NumExperts = 2, TopK = 1, Steps = [S(0, 0, 1), S(1, 1), S(2, 0)] };
        var b = new PromptTrace { Prompt = 1, NumLayers = 1, NumExperts = 2, TopK = 1, Steps = [S(1, 0, 0), S(2, 1), S(3, 1)] };
        var steps = PlacementEvaluation.BatchSteps([a, b]);
        Assert.That(steps.Select(s => s.EngineStep), Is.EqualTo(new long?[] { 0, 1, 2, 3 }));
        Assert.That(steps.Select(s => s.Tokens), Is.EqualTo(new[] { 2, 3, 2, 1 }));
        Assert.That(steps[1].Experts[0], Is.EqualTo(new[] { 1, 0, 0 }), "A's slice, then B's");

        var rr = ExpertPlacement.RoundRobin(1, 2, 2); // expert e on device e
        var batched = PlacementEvaluation.Evaluate(rr, [a, b]);
        // Per batch: {0, 1} -> 1; {1, 0, 0} -> 2 / 1.5; {0, 1} -> 1; {1} -> 2.
        Assert.That(batched.Steps, Is.EqualTo(4));
        Assert.That(batched.StepMaxOverMean, Is.EqualTo((1 + 2 / 1.5 + 1 + 2) / 4).Within(1e-9));
        Assert.That(batched.MaxOverMean, Is.EqualTo(1.0).Within(1e-9), "4 assignments on each device");

        // The same routing recorded one request at a time: every step is its own batch.
        static PromptTrace Solo(PromptTrace p) => new()
        {
            Prompt = p.Prompt, NumLayers = 1, NumExperts = 2, TopK = 1,
            Steps = [.. p.Steps.Select(s => new StepTrace { Start = s.Start, Tokens = s.Tokens, Experts = s.Experts, Weights = s.Weights })],
        };
        var solo = PlacementEvaluation.Evaluate(rr, [Solo(a), Solo(b)]);
        Assert.That(solo.Steps, Is.EqualTo(6));
        Assert.That(solo.StepMaxOverMean, Is.EqualTo((1 + 2 + 2 + 2 + 2 + 2) / 6.0).Within(1e-9));
    }

    [Test]
    public void TracesSplitIntoFirstAndSecondHalf()
    {
        var four = Skewed(prompts: 5);
        var split = PlacementEvaluation.Split(four);
        Assert.That(split.Fit.Select(p => p.Prompt), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(split.Test.Select(p => p.Prompt), Is.EqualTo(new[] { 2, 3, 4 }));

        // One prompt: a prefill of 6 tokens and 6 decode steps; the steps starting in its first 6 tokens fit.
        var one = new PromptTrace { Prompt = 0, NumLayers = 1, NumExperts = 4, TopK = 1 };
        one.Steps.Add(new StepTrace { Start = 0, Tokens = 6, Experts = [[0, 1, 2, 3, 0, 1]], Weights = [new float[6]] });
        for (int t = 0; t < 6; t++) one.Steps.Add(new StepTrace { Start = 6 + t, Tokens = 1, Experts = [[t % 4]], Weights = [new float[1]] });
        var inside = PlacementEvaluation.Split([one]);
        Assert.That(inside.Fit.Single().Steps.Sum(s => s.Tokens), Is.EqualTo(6));
        Assert.That(inside.Test.Single().Steps, Has.Count.EqualTo(6));
        Assert.That(inside.Description, Does.Contain("one prompt"));
    }

    [Test]
    public void EachDeviceCacheSeesOnlyItsOwnExperts()
    {
        var stream = PlacementEvaluation.AsOneStream(Skewed(prompts: 2));
        var placement = ExpertPlacement.RoundRobin(2, 8, 4);
        var all = CacheSimulator.Simulate([stream], 4, EvictionPolicyKind.LifoInactiveFirst, 1);
        long requests = 0;
        for (int d = 0; d < 4; d++)
        {
            int device = d;
            var mine = CacheSimulator.Simulate([stream], 2, EvictionPolicyKind.LifoInactiveFirst, 1, sees: k => placement.DeviceOf(k) == device);
            Assert.That(mine.PeakResident, Is.LessThanOrEqualTo(2));
            requests += mine.Overall.Requests;
            var roomy = CacheSimulator.Simulate([stream], 4, EvictionPolicyKind.LifoInactiveFirst, 1, sees: k => placement.DeviceOf(k) == device);
            Assert.That((roomy.Overall.HitRate, roomy.PeakResident), Is.EqualTo((1.0, 4)), "its 4 experts fit: preloaded, every request hits");
        }
        Assert.That(requests, Is.EqualTo(all.Overall.Requests), "the devices' requests partition the single cache's");
        Assert.That(CacheSimulator.Run([stream], 4, EvictionPolicyKind.LifoInactiveFirst, 1).Hits, Is.EqualTo(all.Overall.Hits));
    }

    /// <summary>
    /// <paramref name="prompts"/> prompts of <paramref name="tokens"/> one-token steps, 2 layers x 8
    /// experts, top-2: each token's two distinct experts drawn with probability in proportion to
    /// <paramref name="weights"/> (independently per token and layer), from a seeded generator.
    /// </summary>
    private static List<PromptTrace> Drawn(int seed, int prompts, int tokens, double[] weights)
    {
        var rng = new Random(seed);
        int Draw(int except)
        {
            double total = weights.Where((_, e) => e != except).Sum(), x = rng.NextDouble() * total;
            for (int e = 0; e < weights.Length; e++)
            {
                if (e == except) continue;
                if ((x -= weights[e]) < 0) return e;
            }
            return weights.Length - 1 == except ? weights.Length - 2 : weights.Length - 1;
        }
        return [.. Enumerable.Range(0, prompts).Select(p =>
        {
            var trace = new PromptTrace { Prompt = p, NumLayers = 2, NumExperts = weights.Length, TopK = 2 };
            for (int t = 0; t < tokens; t++)
            {
                var experts = Enumerable.Range(0, 2).Select(_ =>
                {
                    int a = Draw(-1);
                    return new[] { a, Draw(a) };
                }).ToArray();
                trace.Steps.Add(new StepTrace { Start = t, Tokens = 1, Experts = experts, Weights = [new float[2], new float[2]] });
            }
            return trace;
        })];
    }

    [Test]
    public void AutoFoldsFollowTheFitTestSplit()
    {
        var (byPrompt, description) = AutoPlacement.Folds(Skewed(prompts: 10));
        Assert.That(byPrompt.Select(f => f.Validation.Select(p => p.Prompt)), Is.EqualTo(new[] { new[] { 0, 1 }, [2, 3], [4, 5], [6, 7], [8, 9] }),
            "contiguous prompts in file order, as the fit/test split holds out whole requests");
        Assert.That(byPrompt.Select(f => f.Train.Count), Is.All.EqualTo(8));
        Assert.That(description, Does.Contain("5 folds"));
        Assert.That(AutoPlacement.Folds(Skewed(prompts: 3)).Folds, Has.Count.EqualTo(3));

        // One prompt: a prefill of 6 tokens and 6 decode steps, cut by token position as the split cuts it.
        var one = new PromptTrace { Prompt = 0, NumLayers = 1, NumExperts = 4, TopK = 1 };
        one.Steps.Add(new StepTrace { Start = 0, Tokens = 6, Experts = [[0, 1, 2, 3, 0, 1]], Weights = [new float[6]] });
        for (int t = 0; t < 6; t++) one.Steps.Add(new StepTrace { Start = 6 + t, Tokens = 1, Experts = [[t % 4]], Weights = [new float[1]] });
        var (bySteps, _) = AutoPlacement.Folds([one]);
        // Step starting after t of 12 tokens in fold 5t / 12: the prefill in 0, decode tokens 6-7 in 2, 8-9 in 3, 10-11 in 4 (fold 1 is empty).
        Assert.That(bySteps.Select(f => f.Validation.Single().Steps.Sum(s => s.Tokens)), Is.EqualTo(new[] { 6, 2, 2, 2 }));
        Assert.That(bySteps.Select(f => f.Train.Single().Steps.Sum(s => s.Tokens) + f.Validation.Single().Steps.Sum(s => s.Tokens)), Is.All.EqualTo(12));

        var single = new PromptTrace { Prompt = 0, NumLayers = 1, NumExperts = 4, TopK = 1, Steps = [one.Steps[0]] };
        var choice = AutoPlacement.Choose([single], 2);
        Assert.That((choice.Folds.Count, choice.Chosen, choice.Candidates.Count), Is.EqualTo((0, PlacementMethod.RoundRobin, 0)), "nothing to validate on");
        Assert.That(choice.Report(), Does.Contain("too short").And.Contain("chose round_robin"));
    }

    [TestCase(2)]
    [TestCase(4)]
    public void AutoPicksRoundRobinWhenHistoryDoesNotPredict(int devices)
    {
        // Every expert equally likely, every token independent: the fit half's loads are noise.
        for (int seed = 1; seed <= 5; seed++)
        {
            var split = PlacementEvaluation.Split(Drawn(seed, prompts: 20, tokens: 40, weights: [.. Enumerable.Repeat(1.0, 8)]));
            var choice = AutoPlacement.Choose(split.Fit, devices);
            Assert.That(choice.Chosen, Is.EqualTo(PlacementMethod.RoundRobin), $"seed {seed}\n{choice.Report()}");
            Assert.That((choice.Placement.Method, choice.Placement.ChosenMethod), Is.EqualTo(("auto", "round_robin")));
            var rr = ExpertPlacement.RoundRobin(2, 8, devices);
            for (int l = 0; l < 2; l++)
            {
                for (int e = 0; e < 8; e++) Assert.That(choice.Placement.DeviceOf(l, e), Is.EqualTo(rr.DeviceOf(l, e)));
            }
            Assert.That(choice.Candidates.Select(c => c.Method), Is.EqualTo(new[] { PlacementMethod.RoundRobin, PlacementMethod.Greedy, PlacementMethod.GreedyCorrelated }));
            Assert.That(choice.Candidates.Skip(1).Where(c => c.NoWorseInEveryFold).Select(c => c.Score), Is.All.GreaterThanOrEqualTo(2.0),
                "a fitted method passes only when it is no worse everywhere; it is chosen only when also better somewhere");
        }
    }

    [Test]
    public void AutoPicksAFittedMethodWhenAStableSkewExists()
    {
        // Experts 0 and 4 four times as likely as the rest: round-robin over 4 devices puts both on device 0.
        double[] weights = [4, 1, 1, 1, 4, 1, 1, 1];
        for (int seed = 1; seed <= 5; seed++)
        {
            var split = PlacementEvaluation.Split(Drawn(seed, prompts: 20, tokens: 40, weights));
            var choice = AutoPlacement.Choose(split.Fit, 4, "fit half");
            Assert.That(choice.Chosen, Is.AnyOf(PlacementMethod.Greedy, PlacementMethod.GreedyCorrelated), $"seed {seed}\n{choice.Report()}");
            var winner = choice.Candidates.Single(c => c.Method == choice.Chosen);
            Assert.That((winner.NoWorseInEveryFold, winner.WorstMaxGap <= 0, winner.WorstStepGap <= 0), Is.EqualTo((true, true, true)));
            Assert.That(winner.Score, Is.LessThan(2.0));
            Assert.That((choice.Placement.Method, choice.Placement.ChosenMethod, choice.Placement.FittedOn),
                Is.EqualTo(("auto", ExpertPlacement.NameOf(choice.Chosen), "fit half")));

            // Refitted on the whole fit half: the placement the chosen method makes from all of it.
            var refit = ExpertPlacement.Create(choice.Chosen, ExpertLoads.FromTraces(split.Fit), 4);
            for (int l = 0; l < 2; l++)
            {
                for (int e = 0; e < 8; e++) Assert.That(choice.Placement.DeviceOf(l, e), Is.EqualTo(refit.DeviceOf(l, e)), $"seed {seed} L{l}E{e}");
            }
            Assert.That(choice.Placement.DeviceOf(0, 0), Is.Not.EqualTo(choice.Placement.DeviceOf(0, 4)), "the two heavy experts apart");
            var test = PlacementEvaluation.Evaluate(choice.Placement, split.Test);
            var rr = PlacementEvaluation.Evaluate(ExpertPlacement.RoundRobin(2, 8, 4), split.Test);
            Assert.That((test.MaxOverMean < rr.MaxOverMean, test.StepMaxOverMean < rr.StepMaxOverMean), Is.EqualTo((true, true)), "and it carries over");
        }
        Assert.Throws<ArgumentException>(() => ExpertPlacement.Create(PlacementMethod.Auto, ExpertLoads.FromTraces(Skewed()), 4), "auto needs traces, not loads");
    }

    [Test]
    public async Task PlaceWritesAPlacementThatLoads()
    {
        string trace = Path.Combine(_dir, "trace.jsonl"), output = Path.Combine(_dir, "placement.json");
        WriteTrace(trace, Skewed());
        var (code, stdout, stderr) = await Emoe("place", "--trace", trace, "--devices", "4", "--out", output);
        Assert.That(code, Is.EqualTo(0), stderr);
        var placement = ExpertPlacement.Load(output);
        Assert.That((placement.Method, placement.Devices, placement.NumLayers, placement.NumExperts), Is.EqualTo(("auto", 4, 2, 8)), "auto is the default");
        Assert.That(placement.ChosenMethod, Is.AnyOf("greedy", "greedy_corr"), "the skew is the same in every prompt");
        Assert.That(stdout, Does.Contain("| test |").And.Contain($"auto: {placement.ChosenMethod}, 4 devices"));
        Assert.That(stderr, Does.Contain("auto: validation inside the fit half only: 2 folds").And.Contain("round_robin: folds 1.500")
            .And.Contain($"auto: chose {placement.ChosenMethod}: "));
        Assert.DoesNotThrow(() => placement.CheckFits(ModelConfig.Load(Fixture), 4));

        var (rrCode, _, rrErr) = await Emoe("place", "--model", Fixture, "--trace", trace, "--devices", "2", "--method", "round-robin", "--out", output);
        Assert.That(rrCode, Is.EqualTo(0), rrErr);
        Assert.That(ExpertPlacement.Load(output).Method, Is.EqualTo("round_robin"));

        var (evalCode, evalOut, evalErr) = await Emoe("place", "--trace", trace, "--devices", "2", "--placement", output);
        Assert.That(evalCode, Is.EqualTo(0), evalErr);
        Assert.That(evalOut, Does.Contain("| fit |").And.Contain(output));
        var (wrongCode, _, wrongErr) = await Emoe("place", "--trace", trace, "--devices", "4", "--placement", output);
        Assert.That(wrongCode, Is.EqualTo(1));
        Assert.That(wrongErr, Does.StartWith("emoe: error: ").And.Contain("for 2 devices, not the 4 devices"));
    }

    [Test]
    public async Task PlaceAutoNeverReadsTheTestHalf()
    {
        // Two traces with the same fit half (the first 10 prompts) and different test halves: one skewed like the fit half, one uniform.
        var fit = Drawn(3, prompts: 10, tokens: 40, weights: [4, 1, 1, 1, 4, 1, 1, 1]);
        var skewedTest = Drawn(4, prompts: 10, tokens: 40, weights: [4, 1, 1, 1, 4, 1, 1, 1]);
        var uniformTest = Drawn(5, prompts: 10, tokens: 40, weights: [.. Enumerable.Repeat(1.0, 8)]);
        var results = new List<(string Out, string Err, string Placement)>();
        foreach (var (name, test) in new[] { ("a", skewedTest), ("b", uniformTest) })
        {
            string dir = Path.Combine(_dir, name);
            Directory.CreateDirectory(dir);
            string trace = Path.Combine(dir, "trace.jsonl"), output = Path.Combine(dir, "placement.json");
            var prompts = fit.Concat(test).Select((p, i) => new PromptTrace { Prompt = i, NumLayers = 2, NumExperts = 8, TopK = 2, Steps = p.Steps }).ToList();
            WriteTrace(trace, prompts);
            Assert.That(PlacementEvaluation.Split(prompts).Fit.Select(p => p.Steps), Is.EqualTo(fit.Select(p => p.Steps)));
            var (code, stdout, stderr) = await Emoe("place", "--trace", trace, "--devices", "4", "--method", "auto", "--out", output);
            Assert.That(code, Is.EqualTo(0), stderr);
            results.Add((stdout.Replace(dir, "DIR", StringComparison.Ordinal), stderr, File.ReadAllText(output)));
        }
        Assert.That(results[1].Err, Is.EqualTo(results[0].Err), "the same choice and validation numbers");
        Assert.That(results[1].Placement, Is.EqualTo(results[0].Placement), "the same placement file");
        Assert.That(results[1].Out, Is.Not.EqualTo(results[0].Out), "though the test halves differ (their rows in the report)");
        Assert.That(ExpertPlacement.Load(Path.Combine(_dir, "a", "placement.json")).ChosenMethod, Is.AnyOf("greedy", "greedy_corr"));
    }

    [Test]
    public async Task PlaceRefusesAMismatchedModelAndTooManyDevices()
    {
        string trace = Path.Combine(_dir, "trace.jsonl"), output = Path.Combine(_dir, "placement.json");
        WriteTrace(trace, Skewed(layers: 3)); // the fixture model has 2 layers
        var (code, _, stderr) = await Emoe("place", "--model", Fixture, "--trace", trace, "--devices", "2", "--out", output);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.StartWith("emoe: error: ").And.Contain("3 layers x 8 experts").And.Contain("2 layers x 8 experts"));
        Assert.That(File.Exists(output), Is.False);

        var (manyCode, _, manyErr) = await Emoe("place", "--trace", trace, "--devices", "9", "--out", output);
        Assert.That(manyCode, Is.EqualTo(1));
        Assert.That(manyErr, Does.Contain("--devices 9 is more than the 8 experts per layer"));

        WriteTrace(trace, Skewed());
        ExpertPlacement.RoundRobin(3, 8, 2).Save(output);
        var (fitCode, _, fitErr) = await Emoe("place", "--model", Fixture, "--trace", trace, "--devices", "2", "--placement", output);
        Assert.That(fitCode, Is.EqualTo(1));
        Assert.That(fitErr, Does.Contain("the placement has 3 layers; the model has 2 layers"));
    }

    [Test]
    public async Task BenchPlacementWritesARowPerDeviceCountMethodAndSplit()
    {
        string trace = Path.Combine(_dir, "trace.jsonl"), outDir = Path.Combine(_dir, "out");
        WriteTrace(trace, Skewed());
        var (code, stdout, stderr) = await Emoe("bench", "placement", "--trace", $"skewed={trace}", "--devices", "2", "4", "--out", outDir, "--model", Fixture);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("## Targets").And.Contain("## skewed").And.Contain("## How auto chooses"));
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")));
        var rows = json.RootElement.EnumerateArray().ToList();
        Assert.That(rows, Has.Count.EqualTo(2 * 4 * 2));
        Assert.That(rows.Select(r => (r.GetProperty("devices").GetInt32(), r.GetProperty("method").GetString(), r.GetProperty("split").GetString())).Distinct().Count(),
            Is.EqualTo(16));
        Assert.That(rows.Select(r => r.GetProperty("method").GetString()).Distinct(), Is.EquivalentTo(new[] { "round_robin", "greedy", "greedy_corr", "auto" }));
        foreach (var auto in rows.Where(r => r.GetProperty("method").GetString() == "auto"))
        {
            // Over 2 devices round-robin already balances this trace exactly (0, 2, 4, 6 against 1, 3, 5, 7): nothing to gain, so it stays.
            Assert.That(auto.GetProperty("chosen_method").GetString(), auto.GetProperty("devices").GetInt32() == 2 ? Is.EqualTo("round_robin") : Is.AnyOf("greedy", "greedy_corr"));
            Assert.That(auto.GetProperty("auto_validation").GetProperty("candidates").GetArrayLength(), Is.EqualTo(3));
        }
        Assert.That(rows.Where(r => r.GetProperty("method").GetString() != "auto").Any(r => r.TryGetProperty("chosen_method", out _)), Is.False);
        foreach (var r in rows)
        {
            Assert.That(r.GetProperty("max_over_mean").GetDouble(), Is.GreaterThanOrEqualTo(1));
            Assert.That(r.GetProperty("step_max_over_mean").GetDouble(), Is.GreaterThanOrEqualTo(1));
            Assert.That(r.GetProperty("cache").GetProperty("hit_rate_per_device").GetArrayLength(), Is.EqualTo(r.GetProperty("devices").GetInt32()));
        }
        var greedy4 = rows.First(r => r.GetProperty("devices").GetInt32() == 4 && r.GetProperty("method").GetString() == "greedy" && r.GetProperty("split").GetString() == "test");
        Assert.That(greedy4.GetProperty("max_over_mean").GetDouble(), Is.EqualTo(1.0).Within(1e-9));
        Assert.That(File.Exists(Path.Combine(outDir, "skewed.max_over_mean.svg")), Is.True);
        Assert.That(File.ReadAllText(Path.Combine(outDir, "results.md")), Is.EqualTo(stdout));
    }
}
