using eMoE.Prediction;
using NUnit.Framework;

namespace eMoE.Tests.Prediction;

public sealed class ExpertPredictionTests
{
    /// <summary>A prompt whose every step is one token routed to <paramref name="perLayer"/>[layer] (k experts each).</summary>
    private static PromptTrace Prompt(string task, int experts, int steps, params int[][] perLayer)
    {
        var trace = new PromptTrace { Task = task, NumLayers = perLayer.Length, NumExperts = experts, TopK = perLayer[0].Length };
        for (int s = 0; s < steps; s++)
        {
            trace.Steps.Add(new StepTrace
            {
                Start = s,
                Tokens = 1,
                Experts = perLayer.Select(e => e.ToArray()).ToArray(),
                Weights = perLayer.Select(e => e.Select(_ => 1f / e.Length).ToArray()).ToArray(),
            });
        }
        return trace;
    }

    /// <summary>A prompt with random top-k routing (distinct experts per token), one token per step.</summary>
    private static PromptTrace RandomPrompt(Random rng, string task, int layers, int experts, int k, int steps, double skew)
    {
        var trace = new PromptTrace { Task = task, NumLayers = layers, NumExperts = experts, TopK = k };
        for (int s = 0; s < steps; s++)
        {
            var ids = new int[layers][];
            for (int l = 0; l < layers; l++)
            {
                var chosen = new List<int>();
                while (chosen.Count < k)
                {
                    // Skewed towards low ids for some tasks so predictors have something to learn.
                    int e = (int)(Math.Pow(rng.NextDouble(), skew) * experts) % experts;
                    if (!chosen.Contains(e)) chosen.Add(e);
                }
                ids[l] = chosen.ToArray();
            }
            trace.Steps.Add(new StepTrace { Start = s, Tokens = 1, Experts = ids, Weights = ids.Select(r => r.Select(_ => 0.5f).ToArray()).ToArray() });
        }
        return trace;
    }

    private sealed class UniformPredictor(int layers, int experts) : IExpertPredictor
    {
        public string Name => "uniform";
        public void Observe(PromptTrace finished) { }
        public ExpertScores Predict(string? task, PromptTrace? currentPrefix) => ExpertScores.Uniform(layers, experts);
    }

    [Test]
    public void TopNRanksByScoreThenLowerId()
    {
        var s = new ExpertScores([[0.1, 0.5, 0.5, 0.9]]);
        Assert.That(s.TopN(0, 3), Is.EqualTo(new[] { 3, 1, 2 }));
        Assert.That(s.TopK(0, 1), Is.EqualTo(new[] { 3 }));
        Assert.That(ExpertScores.Uniform(1, 4).TopN(0, 2), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(ExpertScores.ExpertsAtBudget(0.25, 16), Is.EqualTo(4));
        Assert.That(ExpertScores.ExpertsAtBudget(0.5, 5), Is.EqualTo(3), "rounded half away from zero");
        Assert.Throws<ArgumentException>(() => _ = new ExpertScores([[1.0, 2.0], [1.0]]));
    }

    [Test]
    public void ATaskThatAlwaysUsesTheSameExpertsIsPredictedPerfectlyAfterItsFirstPrompt()
    {
        var stream = new List<PromptTrace>();
        for (int i = 0; i < 6; i++)
        {
            stream.Add(Prompt("a", 8, 5, [1, 2], [5, 6]));
            stream.Add(Prompt("b", 8, 5, [3, 7], [0, 4]));
        }
        foreach (var predictor in new IExpertPredictor[]
                 {
                     new FrequencyPredictor(2, 8, 0.9, usePrefill: false), new FrequencyPredictor(2, 8, 0.9, usePrefill: true),
                     new FrequencyPredictor(2, 8, 0.9, usePrefill: true, learnMix: true), new MarkovPredictor(2, 8),
                     new LogisticPredictor(2, 8), new FrequencyPredictor(2, 8, 0.9, usePrefill: true, transfer: true),
                 })
        {
            var eval = PredictionEvaluator.Evaluate(stream, predictor);
            Assert.That(eval.Tasks.Select(t => t.Task), Is.EqualTo(new[] { "a", "b" }));
            Assert.That(eval.Tasks.Select(t => t.Prompts), Is.EqualTo(new[] { 5, 5 }), "the first prompt of each task is not scored");
            Assert.That(eval.Tasks.Select(t => t.F1), Is.All.EqualTo(1.0), predictor.Name);
            Assert.That(eval.Overall.Coverage[0], Is.EqualTo(1.0), "two experts per layer carry everything; 25% of 8 keeps both");
        }
    }

    [Test]
    public void PrefillBlendFollowsThePromptWhenTheTaskHistoryDisagrees()
    {
        var f = new FrequencyPredictor(1, 8, 0.9, usePrefill: true);
        for (int i = 0; i < 3; i++) f.Observe(Prompt("a", 8, 4, [0, 1]));
        // Prefill of 10 tokens on {4, 5}; the task decodes 3 tokens per prompt on {0, 1}: the prefill dominates.
        var prefix = Prompt("a", 8, 1, [4, 5]);
        prefix.Steps[0] = new StepTrace { Tokens = 10, Experts = [Enumerable.Repeat(new[] { 4, 5 }, 10).SelectMany(x => x).ToArray()], Weights = [new float[20]] };
        Assert.That(f.Predict("a", prefix).TopK(0, 2), Is.EquivalentTo(new[] { 4, 5 }));
        Assert.That(f.Predict("a", null).TopK(0, 2), Is.EquivalentTo(new[] { 0, 1 }), "history alone");
        Assert.That(new FrequencyPredictor(1, 8).Predict("a", null).IsUniform, Is.True, "no history, no prefill: uniform");
    }

    [Test]
    public void LearnedMixTrustsThePrefillWhenDecodeFollowsIt()
    {
        // Each prompt sticks to its own pair for all its steps; the task history is no guide.
        var stream = Enumerable.Range(0, 10).Select(i => Prompt("a", 8, 6, [i % 8, (i + 3) % 8])).ToList();
        var mixed = new FrequencyPredictor(1, 8, 0.9, usePrefill: true, learnMix: true);
        var eval = PredictionEvaluator.Evaluate(stream, mixed);
        Assert.That(mixed.Mix("a"), Is.GreaterThan(0.9));
        Assert.That(eval.Overall.F1, Is.EqualTo(8.0 / 9).Within(1e-12), "all right but the second prompt: the mix is first fitted when it finishes");
        Assert.That(PredictionEvaluator.Evaluate(stream, new FrequencyPredictor(1, 8, 0.9, usePrefill: false)).Overall.F1, Is.LessThan(0.5));
    }

    [Test]
    public void RecentWindowFollowsTheEndOfThePrefill()
    {
        // Each prompt: 8 prefill tokens on the task's pair {0, 1}, then 2 on a prompt-specific pair that the 12 decode steps keep.
        PromptTrace Make(int i)
        {
            int[] own = [2 + i % 6, 2 + (i + 1) % 6];
            var p = new PromptTrace { Task = "a", NumLayers = 1, NumExperts = 8, TopK = 2 };
            int[] ids = [.. Enumerable.Repeat(new[] { 0, 1 }, 8).SelectMany(x => x), .. own, .. own];
            p.Steps.Add(new StepTrace { Tokens = 10, Experts = [ids], Weights = [new float[20]] });
            for (int s = 0; s < 12; s++) p.Steps.Add(new StepTrace { Start = 10 + s, Tokens = 1, Experts = [own], Weights = [new float[2]] });
            return p;
        }
        var stream = Enumerable.Range(0, 12).Select(Make).ToList();
        var recent = PredictionEvaluator.Evaluate(stream, new FrequencyPredictor(1, 8, 0.9, usePrefill: true, learnMix: true, recentTokens: 2));
        var whole = PredictionEvaluator.Evaluate(stream, new FrequencyPredictor(1, 8, 0.9, usePrefill: true, learnMix: true));
        Assert.That(recent.Overall.DecodeF1, Is.GreaterThan(whole.Overall.DecodeF1));
        Assert.That(recent.Overall.F1, Is.GreaterThanOrEqualTo(whole.Overall.F1));
    }

    [Test]
    public void MarkovChainCarriesLayerZeroThroughTheTransitions()
    {
        var m = new MarkovPredictor(3, 8, 0.9, usePrefill: true);
        for (int i = 0; i < 3; i++) m.Observe(Prompt("a", 8, 4, [1, 2], [3, 4], [6, 7]));
        var p = m.Predict("a", RoutingCounts.Prefill(Prompt("a", 8, 1, [1, 2], [0, 5], [0, 5])));
        Assert.That(p.TopK(1, 2), Is.EquivalentTo(new[] { 3, 4 }), "layer 1 from the transitions, not the prefill's layer 1");
        Assert.That(p.TopK(2, 2), Is.EquivalentTo(new[] { 6, 7 }));
    }

    [Test]
    public void OracleCoverageBoundsEveryPredictor()
    {
        var rng = new Random(7);
        var stream = new List<PromptTrace>();
        for (int i = 0; i < 12; i++)
        {
            stream.Add(RandomPrompt(rng, "skewed", 3, 16, 2, 20, 3.0));
            stream.Add(RandomPrompt(rng, "flat", 3, 16, 2, 20, 1.0));
        }
        foreach (var predictor in new IExpertPredictor[]
                 {
                     new StaticPredictor(3, 16), new PrefillPredictor(3, 16), new FrequencyPredictor(3, 16, 0.9, false),
                     new FrequencyPredictor(3, 16, 0.9, true, true), new MarkovPredictor(3, 16), new UniformPredictor(3, 16),
                     new LogisticPredictor(3, 16), new FrequencyPredictor(3, 16, 0.9, usePrefill: true, transfer: true),
                     new FrequencyPredictor(3, 16, 0.9, usePrefill: true, learnMix: true, mixPerLayer: true),
                 })
        {
            var eval = PredictionEvaluator.Evaluate(stream, predictor);
            foreach (var t in eval.Tasks.Append(eval.Overall))
            {
                for (int b = 0; b < eval.Budgets.Length; b++)
                {
                    Assert.That(t.OracleCoverage[b], Is.GreaterThanOrEqualTo(t.Coverage[b] - 1e-12), $"{predictor.Name} {t.Task} {eval.Budgets[b]}");
                    Assert.That(t.OracleCoverage[b], Is.GreaterThanOrEqualTo(t.StaticCoverage[b] - 1e-12));
                }
                Assert.That(t.F1, Is.InRange(0.0, 1.0));
            }
        }
    }

    [Test]
    public void UniformScoresCoverTheBudgetFractionUnderUniformRouting()
    {
        // Token t of every prompt uses experts (2t, 2t+1) mod 16: over 16 tokens every expert is used equally.
        var stream = new List<PromptTrace>();
        for (int p = 0; p < 4; p++)
        {
            var trace = new PromptTrace { Task = "t", NumLayers = 2, NumExperts = 16, TopK = 2 };
            for (int t = 0; t < 16; t++)
            {
                int[] ids = [2 * t % 16, (2 * t + 1) % 16];
                trace.Steps.Add(new StepTrace { Start = t, Tokens = 1, Experts = [ids, ids], Weights = [[0.5f, 0.5f], [0.5f, 0.5f]] });
            }
            stream.Add(trace);
        }
        var eval = PredictionEvaluator.Evaluate(stream, new UniformPredictor(2, 16));
        Assert.That(eval.Overall.Coverage, Is.EqualTo(new[] { 0.25, 0.5, 0.75 }).Within(1e-9), "exactly n of 16 experts kept, not everything");
        Assert.That(eval.Overall.OracleCoverage, Is.EqualTo(new[] { 0.25, 0.5, 0.75 }).Within(1e-9), "nothing to gain under uniform routing");
    }

    [Test]
    public void StaticSetCountsEveryTask()
    {
        // Task a is long and uses {0, 1}; task b is short and uses {2, 3}. Globally {0, 1} dominate.
        var stream = new List<PromptTrace>();
        for (int i = 0; i < 4; i++)
        {
            stream.Add(Prompt("a", 4, 10, [0, 1]));
            stream.Add(Prompt("b", 4, 2, [2, 3]));
        }
        var eval = PredictionEvaluator.Evaluate(stream, new FrequencyPredictor(1, 4, 0.9, usePrefill: false));
        var a = eval.Tasks.Single(t => t.Task == "a");
        var b = eval.Tasks.Single(t => t.Task == "b");
        Assert.That((a.StaticF1, b.StaticF1), Is.EqualTo((1.0, 0.0)), "the static set is {0, 1} for everybody");
        Assert.That(b.StaticCoverage[1], Is.EqualTo(0.0), "50% of 4 experts = the static {0, 1}, which b never uses");
        Assert.That((a.F1, b.F1), Is.EqualTo((1.0, 1.0)), "per-task history gets both right");

        var s = new StaticPredictor(1, 4);
        foreach (var t in stream) s.Observe(t);
        Assert.That(s.Predict("b", null).TopK(0, 2), Is.EquivalentTo(new[] { 0, 1 }));
    }

    [Test]
    public void PeriodicPredictorReusesItsPredictionBetweenInvocations()
    {
        var inner = new FrequencyPredictor(1, 8, 0.9, usePrefill: false);
        var periodic = new PeriodicPredictor(inner, 3, 1, 8);
        Assert.That(periodic.Predict("a", null).IsUniform, Is.True, "prompt 0: no history, uniform, inner not run");
        Assert.That(periodic.InvocationsFor("a"), Is.EqualTo(0));

        var predictions = new List<ExpertScores>();
        for (int i = 0; i < 8; i++)
        {
            // The task drifts: each prompt uses a different pair, so a fresh run would always change the answer.
            periodic.Observe(Prompt("a", 8, 3, [i % 8, (i + 1) % 8]));
            predictions.Add(periodic.Predict("a", null));
            Assert.That(periodic.Predict("a", null), Is.SameAs(predictions[^1]), "asking twice for the same prompt runs nothing");
        }
        // Prompts 1..8 of the task: the inner runs at 1, 4, 7.
        Assert.That(periodic.InvocationsFor("a"), Is.EqualTo(3));
        Assert.That(periodic.Invocations, Is.EqualTo(3));
        Assert.That(predictions[1], Is.SameAs(predictions[0]));
        Assert.That(predictions[2], Is.SameAs(predictions[0]));
        Assert.That(predictions[3], Is.Not.SameAs(predictions[0]));
        Assert.That(predictions[5], Is.SameAs(predictions[3]));
        Assert.That(predictions[6], Is.Not.SameAs(predictions[3]));
        Assert.That(periodic.Predict("b", null).IsUniform, Is.True, "another task has its own count");

        var every1 = new PeriodicPredictor(new FrequencyPredictor(1, 8, 0.9, usePrefill: false), 1, 1, 8);
        var stream = Enumerable.Range(0, 5).Select(i => Prompt("a", 8, 3, [1, 2])).ToList();
        PredictionEvaluator.Evaluate(stream, every1);
        Assert.That(every1.Invocations, Is.EqualTo(4), "N = 1 runs for every prompt but the first");
    }
}
