using eMoE.Cli.Bench;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Scheduling;

/// <summary>The engine loop and both schedulers on a simulated clock (<see cref="SimulatedServing"/>).</summary>
public sealed class SimulatedServingTests
{
    // Step costs shaped like the CPU accelerator's on the shipped model (bench/README, Batching):
    // about 11 ms for a decode step of one sequence, 2.3 ms more per sequence, 1.1 ms per prompt token.
    private static readonly ModelledStepCost Cost = new(0.0087, 0.0023, 0.0011);

    // Prompt and output tokens of the first four evaluation prompts of each task (tokenized as emoe batch does).
    private static readonly (string Task, int Output, int[] Prompts)[] Tasks =
    [
        ("austen", 64, [43, 33, 111, 79]),
        ("bible", 48, [84, 62, 67, 81]),
        ("c", 80, [45, 163, 92, 99]),
        ("dictionary", 32, [68, 110, 124, 81]),
    ];

    /// <summary>
    /// Poisson arrivals at <paramref name="rate"/> requests/s of the tasks' prompts, interleaved, each
    /// with bench serve's SLO rule (<see cref="TaskCalibration.Slo"/>) on its task's unloaded times.
    /// </summary>
    private static List<SimulatedRequest> Workload(double rate, int count, int seed)
    {
        var random = new Random(seed);
        var slos = Tasks.ToDictionary(task => task.Task, task =>
        {
            double ttft = task.Prompts.Average(p => Cost.Of(0, p)), tpot = Cost.Of(1, 0);
            return new TaskCalibration(task.Task, task.Prompts.Length, ttft, tpot, ttft + (task.Output - 1) * tpot, task.Output).Slo;
        });
        var requests = new List<SimulatedRequest>();
        double t = 0;
        for (int i = 0; i < count; i++)
        {
            t += -Math.Log(1 - random.NextDouble()) / rate;
            var (task, output, prompts) = Tasks[i % Tasks.Length];
            int prompt = prompts[i / Tasks.Length % prompts.Length];
            requests.Add(new SimulatedRequest(t, prompt, output, task, slos[task]));
        }
        return requests;
    }

    /// <summary>Requests/s one engine serves one at a time: 1 / mean unloaded e2e.</summary>
    private static double Capacity() =>
        1 / Tasks.Average(task => task.Prompts.Average(p => Cost.Of(0, p) + (task.Output - 1) * Cost.Of(1, 0)));

    private static Dictionary<string, double> Profile() => Tasks.ToDictionary(t => t.Task, t => (double)t.Output);

    [Test]
    public void ALoneRequestTakesExactlyItsModelledSteps()
    {
        // One request, nothing else: the first token comes with the prefill step, then one per decode step.
        var slo = new Slo { TimeToFirstToken = TimeSpan.FromSeconds(1) };
        var outcome = SimulatedServing.Run(SchedulerKind.Emoe, 4, Cost, [new SimulatedRequest(0.5, 40, 10, "austen", slo)]).Single();
        Assert.That(outcome.Tokens, Is.EqualTo(10));
        Assert.That(outcome.Ttft, Is.EqualTo(Cost.Of(0, 40)).Within(1e-9));
        Assert.That(outcome.Tpot, Is.EqualTo(Cost.Of(1, 0)).Within(1e-9));
        Assert.That(outcome.MetSlo, Is.True);
    }

    [Test]
    public void TheSameWorkloadGivesTheSameTimings()
    {
        var requests = Workload(2 * Capacity(), 24, seed: 1);
        var first = SimulatedServing.Run(SchedulerKind.Emoe, 16, Cost, requests, Profile());
        var second = SimulatedServing.Run(SchedulerKind.Emoe, 16, Cost, requests, Profile());
        Assert.That(second.Select(o => (o.FirstToken, o.LastToken, o.Tokens)), Is.EqualTo(first.Select(o => (o.FirstToken, o.LastToken, o.Tokens))));
    }

    /// <summary>Seconds from a run's first arrival to its last token.</summary>
    private static double Span(IReadOnlyList<SimulatedOutcome> run) => run.Max(o => o.LastToken) - run.Min(o => o.Request.Arrival);

    [Test]
    public void NoisyStepsRepeatAndScatterAroundTheirCost()
    {
        var noisy = Cost with { Noise = 0.25 };
        var requests = Workload(2 * Capacity(), 24, seed: 1);
        var first = SimulatedServing.Run(SchedulerKind.Emoe, 16, noisy, requests, Profile());
        var second = SimulatedServing.Run(SchedulerKind.Emoe, 16, noisy, requests, Profile());
        Assert.That(second.Select(o => (o.FirstToken, o.LastToken)), Is.EqualTo(first.Select(o => (o.FirstToken, o.LastToken))));
        var quiet = SimulatedServing.Run(SchedulerKind.Emoe, 16, Cost, requests, Profile());
        Assert.That(first.Select(o => o.LastToken), Is.Not.EqualTo(quiet.Select(o => o.LastToken)));

        // e^(0.25 z) has median 1 and mean e^(0.25^2 / 2): 10,000 draws land close to both.
        var random = new Random(7);
        var factors = Enumerable.Range(0, 10_000).Select(_ => noisy.Draw(1, 0, random) / noisy.Of(1, 0)).Order().ToArray();
        Assert.That(factors[factors.Length / 2], Is.EqualTo(1).Within(0.02));
        Assert.That(factors.Average(), Is.EqualTo(Math.Exp(0.25 * 0.25 / 2)).Within(0.02));
    }

    [TestCase(0.0)]
    [TestCase(0.25)]
    [Explicit("prints the schedulers' attainment and latency over rates and seeds; an evaluation, not a check")]
    public void Evaluate(double noise)
    {
        var cost = Cost with { Noise = noise };
        double c = Capacity();
        foreach (int batch in new[] { 4, 16 })
        {
            foreach (double multiple in new[] { 0.5, 1, 2, 4, 8 })
            {
                var line = new List<string>();
                foreach (var kind in new[] { SchedulerKind.Fcfs, SchedulerKind.Emoe })
                {
                    var runs = Enumerable.Range(0, 10).Select(seed => SimulatedServing.Run(kind, batch, cost, Workload(multiple * c, 80, seed), Profile())).ToList();
                    double attainment = runs.Average(r => r.Count(o => o.MetSlo) / (double)r.Count);
                    double e2e = runs.Average(r => r.Average(o => o.E2e));
                    double span = runs.Average(Span);
                    double concurrency = runs.Average(r => r.Sum(o => o.LastToken - o.FirstToken) / Span(r));
                    double ttftMissed = runs.Average(r => r.Count(o => o.MissedTtft));
                    double tpotMissed = runs.Average(r => r.Count(o => o.MissedTpot));
                    line.Add($"{kind} {attainment:P1} (missed TTFT {ttftMissed:F1}, TPOT {tpotMissed:F1}) e2e {e2e * 1000:F0} ms span {span:F2} s decoding {concurrency:F1}");
                }
                TestContext.Out.WriteLine($"batch {batch} {multiple}c: {string.Join(" | ", line)}");
            }
        }
    }
}
