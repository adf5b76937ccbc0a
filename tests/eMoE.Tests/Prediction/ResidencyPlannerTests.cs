using eMoE.Experts;
using eMoE.Prediction;
using NUnit.Framework;

namespace eMoE.Tests.Prediction;

/// <summary>The predictor loop's planning: periodic invocation, prefill refinement, sensitivity-weighted slots, frozen layers.</summary>
public sealed class ResidencyPlannerTests
{
    /// <summary>One prefill step of <paramref name="tokens"/> tokens per layer, each token routed to the given k experts.</summary>
    private static PromptTrace Prompt(string task, int tokens, params int[][] perLayer)
    {
        var trace = new PromptTrace { Task = task, NumLayers = perLayer.Length, NumExperts = 8, TopK = perLayer[0].Length };
        trace.Steps.Add(new StepTrace
        {
            Start = 0,
            Tokens = tokens,
            Experts = perLayer.Select(ids => Enumerable.Repeat(ids, tokens).SelectMany(x => x).ToArray()).ToArray(),
            Weights = perLayer.Select(ids => Enumerable.Repeat(0.5f, tokens * ids.Length).ToArray()).ToArray(),
        });
        return trace;
    }

    private static ResidencyPlanner Planner(int slots, PredictionOptions? options = null) =>
        new(2, 8, slots, 2, options ?? new PredictionOptions { Predictor = new FrequencyPredictor(2, 8, usePrefill: false) });

    private static int[] Layer(IReadOnlyList<ExpertKey> plan, int layer) => plan.Where(k => k.Layer == layer).Select(k => k.Expert).Order().ToArray();

    [Test]
    public void NothingIsPlannedBeforeAnyHistory()
    {
        var planner = Planner(8);
        Assert.That(planner.BeginPrompt("a"), Is.Null, "with no routing seen the cache works on demand");
    }

    [Test]
    public void PlansFillTheSlotsWithTheTasksExperts()
    {
        var planner = Planner(6);
        planner.EndPrompt(Prompt("a", 10, [1, 2], [3, 4]));
        var plan = planner.BeginPrompt("a")!;
        Assert.That(plan, Has.Count.EqualTo(6), "every slot is planned");
        Assert.That(Layer(plan, 0), Does.Contain(1).And.Contain(2));
        Assert.That(Layer(plan, 1), Does.Contain(3).And.Contain(4));
        Assert.That(plan.Distinct().Count(), Is.EqualTo(plan.Count));
    }

    [Test]
    public void ThePredictorRunsEveryNPromptsAndTheSetIsReusedInBetween()
    {
        var planner = Planner(4, new PredictionOptions { PredictEvery = 3, RefineAfterPrefill = false, Predictor = new FrequencyPredictor(2, 8, usePrefill: false) });
        planner.EndPrompt(Prompt("a", 4, [0, 1], [0, 1]));
        var plans = new List<int[]>();
        for (int i = 0; i < 7; i++)
        {
            plans.Add(Layer(planner.BeginPrompt("a")!, 0));
            // The task drifts to experts 6 and 7 with strong prompts.
            planner.EndPrompt(Prompt("a", 50, [6, 7], [6, 7]));
        }
        // Runs at prompts 0, 3 and 6 of the loop (observed 1, 4, 7).
        Assert.That(planner.Invocations, Is.EqualTo(3));
        Assert.That(plans[0], Is.EqualTo(new[] { 0, 1 }));
        Assert.That(plans[1], Is.EqualTo(plans[0]), "reused until the next run");
        Assert.That(plans[2], Is.EqualTo(plans[0]));
        Assert.That(plans[3], Is.EqualTo(new[] { 6, 7 }), "the next run follows the drift");
    }

    [Test]
    public void PrefillRefinesOnlyPromptsWhereThePredictorRan()
    {
        var planner = Planner(4, new PredictionOptions { PredictEvery = 2, Predictor = new FrequencyPredictor(2, 8) });
        planner.EndPrompt(Prompt("a", 4, [0, 1], [0, 1]));
        Assert.That(planner.BeginPrompt("a"), Is.Not.Null);
        var refined = planner.AfterPrefill("a", Prompt("a", 30, [4, 5], [4, 5]));
        Assert.That(refined, Is.Not.Null);
        Assert.That(Layer(refined!, 0), Is.EqualTo(new[] { 4, 5 }), "the prompt's own prefill dominates its prediction");
        planner.EndPrompt(Prompt("a", 4, [0, 1], [0, 1]));
        planner.BeginPrompt("a");
        Assert.That(planner.AfterPrefill("a", Prompt("a", 30, [2, 3], [2, 3])), Is.Null, "no run this prompt: the set is kept");
    }

    [Test]
    public void TasksKeepTheirOwnSets()
    {
        var planner = Planner(4);
        planner.EndPrompt(Prompt("a", 4, [0, 1], [0, 1]));
        planner.EndPrompt(Prompt("b", 4, [6, 7], [6, 7]));
        Assert.That(Layer(planner.BeginPrompt("a")!, 1), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(Layer(planner.BeginPrompt("b")!, 1), Is.EqualTo(new[] { 6, 7 }));
    }

    private static LayerSensitivityProfile Profile(double layer0, double layer1, double threshold = 0.05) => new()
    {
        NumLayers = 2,
        Threshold = threshold,
        Tasks = new()
        {
            ["a"] = new TaskSensitivity
            {
                Layers =
                [
                    new LayerSensitivity { Layer = 0, Increase = layer0, Sensitive = layer0 >= threshold },
                    new LayerSensitivity { Layer = 1, Increase = layer1, Sensitive = layer1 >= threshold },
                ],
            },
        },
    };

    [Test]
    public void SensitiveLayersGetTheSpareSlots()
    {
        // Both layers spread their tokens over experts 0..5; 8 slots = 2 per layer + 4 spare.
        var trace = new PromptTrace { Task = "a", NumLayers = 2, NumExperts = 8, TopK = 2 };
        trace.Steps.Add(new StepTrace { Tokens = 3, Experts = [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]], Weights = [new float[6], new float[6]] });
        var even = Planner(8);
        even.EndPrompt(trace);
        var evenPlan = even.BeginPrompt("a")!;
        Assert.That(Layer(evenPlan, 0), Has.Length.EqualTo(4));
        var options = new PredictionOptions { LayerProfile = Profile(5.0, 0.1), Predictor = new FrequencyPredictor(2, 8, usePrefill: false) };
        var weighted = new ResidencyPlanner(2, 8, 8, 2, options, MissMode.Reroute);
        weighted.EndPrompt(trace);
        var plan = weighted.BeginPrompt("a")!;
        Assert.That(Layer(plan, 0), Is.EqualTo(new[] { 0, 1, 2, 3, 4, 5 }), "the layer where a reroute hurts most gets every expert it uses");
        Assert.That(Layer(plan, 1), Has.Length.EqualTo(2), "the other keeps its minimum (top-k)");
        var loading = new ResidencyPlanner(2, 8, 8, 2, options with { Predictor = new FrequencyPredictor(2, 8, usePrefill: false) }, MissMode.Load);
        loading.EndPrompt(trace);
        Assert.That(Layer(loading.BeginPrompt("a")!, 0), Has.Length.EqualTo(4), "in load mode a miss costs the same anywhere: no weighting");
    }

    [Test]
    public void InsensitiveLayersKeepTheirFirstSet()
    {
        var planner = Planner(4, new PredictionOptions { LayerProfile = Profile(1.0, 0.01), RefineAfterPrefill = false, Predictor = new FrequencyPredictor(2, 8, decay: 0.5, usePrefill: false) });
        planner.EndPrompt(Prompt("a", 4, [0, 1], [0, 1]));
        planner.BeginPrompt("a");
        planner.EndPrompt(Prompt("a", 50, [6, 7], [6, 7]));
        var plan = planner.BeginPrompt("a")!;
        Assert.That(Layer(plan, 0), Is.EqualTo(new[] { 6, 7 }), "the sensitive layer follows the task");
        Assert.That(Layer(plan, 1), Is.EqualTo(new[] { 0, 1 }), "the insensitive layer skipped prediction");
        Assert.That(planner.SkippedLayers, Is.EqualTo(1));
    }

    [Test]
    public void ProfilesRoundTripAndBadFilesNameTheProblem()
    {
        string path = Path.Combine(Path.GetTempPath(), $"emoe-profile-{Guid.NewGuid():N}.json");
        try
        {
            Profile(2.0, 0.01).Save(path);
            var loaded = LayerSensitivityProfile.Load(path);
            Assert.That(loaded.IsSensitive("a", 0), Is.True);
            Assert.That(loaded.IsSensitive("a", 1), Is.False);
            Assert.That(loaded.IsSensitive("unprofiled", 1), Is.True, "no evidence, no skipping");
            Assert.That(loaded.Weight("a", 0), Is.EqualTo(2.0));
            File.WriteAllText(path, "{\"num_layers\": 2, \"tasks\": {\"a\": {\"layers\": [{\"layer\": 5}]}}}");
            Assert.That(Assert.Throws<InvalidDataException>(() => LayerSensitivityProfile.Load(path))!.Message, Does.Contain(path).And.Contain("layer 5"));
            File.WriteAllText(path, "not json");
            Assert.That(Assert.Throws<InvalidDataException>(() => LayerSensitivityProfile.Load(path))!.Message, Does.Contain("not a layer sensitivity profile"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
