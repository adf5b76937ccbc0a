using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Scheduling;

public sealed class SchedulerTests
{
    // Step costs with fewer than three observed steps are the priors, exactly: a = 0.01 s,
    // b_d = 0.01 s per sequence (so step(n) = 0.01 + 0.01 n), b_p = 0.001 s per prompt token.
    private const double A = 0.01, Bd = 0.01, Bp = 0.001;

    /// <summary>
    /// A request as the engine would describe it; times in seconds on a fake clock. A running request
    /// that decodes has one token to feed (PromptTokens 1); one admitted but not yet prefilled, its prompt.
    /// </summary>
    private sealed record Req(long Id, double Arrived, Slo? Slo = null, int PromptTokens = 100, string? Task = "chat",
        int MaxTokens = 200, int GeneratedTokens = 0, double? FirstToken = null) : IScheduledRequest
    {
        public TimeSpan ArrivedAt => TimeSpan.FromSeconds(Arrived);

        public TimeSpan? FirstTokenAt => FirstToken is { } f ? TimeSpan.FromSeconds(f) : null;
    }

    private static Slo SloOf(double? ttft = null, double? tpot = null) => new()
    {
        TimeToFirstToken = ttft is { } f ? TimeSpan.FromSeconds(f) : null,
        TimePerOutputToken = tpot is { } t ? TimeSpan.FromSeconds(t) : null,
    };

    private static SchedulerContext At(double now, Func<string?, double>? expertLoadSeconds = null) => new()
    {
        Now = TimeSpan.FromSeconds(now),
        ExpertLoadSeconds = expertLoadSeconds ?? (_ => 0),
    };

    /// <summary>A scheduler whose task "chat" expects 100 output tokens.</summary>
    private static RequestScheduler Make(SchedulerKind kind)
    {
        var lengths = new OutputLengthProfile(defaultTokens: 50);
        lengths.Seed("chat", 100);
        return RequestScheduler.Create(kind, lengths, new StepCostModel(A, Bd, Bp));
    }

    private static long[] Ids(IEnumerable<Req> requests) => requests.Select(r => r.Id).ToArray();

    [Test]
    public void CreateGivesEachKindAndSharesTheModels()
    {
        var lengths = new OutputLengthProfile();
        var costs = new StepCostModel(A, Bd, Bp);
        var fcfs = RequestScheduler.Create(SchedulerKind.Fcfs, lengths, costs);
        var emoe = RequestScheduler.Create(SchedulerKind.Emoe, lengths, costs);
        Assert.That(fcfs, Is.TypeOf<FcfsScheduler>());
        Assert.That(emoe, Is.TypeOf<SloScheduler>());
        Assert.That(emoe.Lengths, Is.SameAs(lengths));
        Assert.That(emoe.Costs, Is.SameAs(costs));
        Assert.Throws<ArgumentOutOfRangeException>(() => RequestScheduler.Create((SchedulerKind)42, lengths, costs));

        emoe.OnFinished("chat", 40);
        Assert.That(lengths.Expected("chat"), Is.EqualTo(40));
    }

    [Test]
    public void FcfsOrdersByArrivalThenIdAndAlwaysAdmits()
    {
        var s = Make(SchedulerKind.Fcfs);
        Req[] waiting = [new(5, 2.0), new(3, 0.5), new(2, 1.0), new(1, 1.0), new(4, 0.0, SloOf(ttft: 0.1))];
        Assert.That(Ids(s.Order(waiting, At(10))), Is.EqualTo(new long[] { 4, 3, 1, 2, 5 }));

        // Even a candidate that makes a running request miss its SLO by far.
        var running = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.01), PromptTokens: 1, GeneratedTokens: 10) };
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 100_000), running, At(1)), Is.True);
    }

    [Test]
    public void EmoeOrdersByFirstTokenDeadline()
    {
        var s = Make(SchedulerKind.Emoe);
        // At t = 0 each needs 0.1 s of prefill + 0.02 s of first step: all deadlines can be met.
        Req[] waiting =
        [
            new(1, 0.0, SloOf(ttft: 5)),
            new(2, 0.0, SloOf(ttft: 1)),
            new(3, 0.0),                       // no SLO: after every deadline
            new(4, 0.0, SloOf(ttft: 2, tpot: 0.1)),
            new(6, 1.0, SloOf(ttft: 1)),       // deadline 2, ties with 4 and 5: by Id
            new(5, 0.5, SloOf(ttft: 1.5)),
        ];
        Assert.That(Ids(s.Order(waiting, At(0))), Is.EqualTo(new long[] { 2, 4, 5, 6, 1, 3 }));
    }

    [Test]
    public void HopelessRequestsGoAfterFeasibleOnes()
    {
        var s = Make(SchedulerKind.Emoe);
        Req[] waiting =
        [
            new(3, 9.9, SloOf(ttft: 0.05)),   // deadline 9.95 is ahead, but prefill + first step end at 10.12
            new(4, 9.0, SloOf(ttft: 5)),      // feasible
            new(2, 0.5, SloOf(ttft: 1)),      // missed at 1.5
            new(1, 0.0, SloOf(ttft: 1)),      // missed at 1
            new(5, 9.5),                      // no SLO
            new(6, 9.8, SloOf(ttft: 4)),      // feasible, earlier deadline (13.8) than 4's (14)
        ];
        Assert.That(Ids(s.Order(waiting, At(10))), Is.EqualTo(new long[] { 6, 4, 1, 2, 5, 3 }));
    }

    [Test]
    public void HopelessRequestsGoByHighestResponseRatio()
    {
        var s = Make(SchedulerKind.Emoe);
        // Alone, a chat request takes 0.1 s of prefill + 100 steps of 0.02 s = 2.1 s; one capped at 10
        // tokens 0.1 + 0.2 = 0.3 s. At t = 3 the first three TTFTs are lost; ratio = (wait + service) / service.
        Req[] waiting =
        [
            new(1, 0.0, SloOf(ttft: 0.5)),                // (3 + 2.1) / 2.1 = 2.4
            new(2, 1.0, SloOf(ttft: 0.5), MaxTokens: 10), // (2 + 0.3) / 0.3 = 7.7: short, passes 1
            new(3, 2.9, SloOf(ttft: 0.05), MaxTokens: 10), // (0.1 + 0.3) / 0.3 = 1.3: short too, but 1 has waited longer
            new(4, 2.9, SloOf(ttft: 5)),                  // feasible: first
        ];
        Assert.That(Ids(s.Order(waiting, At(3))), Is.EqualTo(new long[] { 4, 2, 1, 3 }));

        // Expert loading counts in the service time: 1's absent experts (1 s) make it the longer job.
        Req[] loading = [new(1, 0.0, SloOf(ttft: 0.5), Task: "code"), new(2, 0.5, SloOf(ttft: 0.5))];
        Assert.That(Ids(s.Order(loading, At(3))), Is.EqualTo(new long[] { 1, 2 }));                               // 5.1 / 2.1 against 4.6 / 2.1
        Assert.That(Ids(s.Order(loading, At(3, task => task == "code" ? 1 : 0))), Is.EqualTo(new long[] { 2, 1 })); // 6.1 / 3.1 against 4.6 / 2.1
    }

    [Test]
    public void AdmissionRefusesAPrefillThatWouldMakeARunningRequestMissItsDeadline()
    {
        var s = Make(SchedulerKind.Emoe);
        // G = min(200, 100) = 100; deadline 0 + 1 + 0.05 * 99 = 5.95; 90 tokens remain. At t = 1,
        // with the candidate the 90 steps cost 0.03 s each: 1 + 2.7 = 3.7 s, so 2.25 s of slack
        // remain for the candidate's prefill (2250 tokens at 1 ms).
        var running = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.05), PromptTokens: 1, GeneratedTokens: 10) };
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 3000), running, At(1)), Is.False);
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 2000), running, At(1)), Is.True);
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 1000), running, At(1)), Is.True);
    }

    [Test]
    public void AdmissionCountsThePrefillOfRequestsAdmittedButNotYetPrefilled()
    {
        var s = Make(SchedulerKind.Emoe);
        // As above, but a request admitted in the same round still has its 1000 prompt tokens to
        // prefill: 1 s before anyone's next token, with or without the candidate. Without the
        // candidate the running request ends at 1 + 1 + 90 * 0.03 = 4.7 <= 5.95; with it the batch is 3,
        // so 1 + 1 + P * 0.001 + 90 * 0.04 <= 5.95 allows P = 350, where the candidate's own prefill
        // alone would have allowed 1350.
        var decoding = new Req(1, 0, SloOf(ttft: 1, tpot: 0.05), PromptTokens: 1, GeneratedTokens: 10);
        var justAdmitted = new Req(2, 0.9, PromptTokens: 1000);
        Req[] running = [decoding, justAdmitted];
        Assert.That(s.MayAdmit(new Req(3, 0.95, PromptTokens: 300), running, At(1)), Is.True);
        Assert.That(s.MayAdmit(new Req(3, 0.95, PromptTokens: 400), running, At(1)), Is.False);
        // A request with one token pending is decoding, not prefilling: it delays no one.
        Req[] decodingPair = [decoding, justAdmitted with { PromptTokens = 1, GeneratedTokens = 3 }];
        Assert.That(s.MayAdmit(new Req(3, 0.95, PromptTokens: 1300), decodingPair, At(1)), Is.True);
    }

    [Test]
    public void AdmissionAccountsForTheSlowerStepsOfALargerBatch()
    {
        var s = Make(SchedulerKind.Emoe);
        // Deadline 1 + 0.035 * 99 = 4.465: on time alone (1 + 90 * 0.02 = 2.8) and with a short
        // prompt (1 + 0.05 + 90 * 0.03 = 3.75); with 0.025 s per token (deadline 3.475) even an
        // empty prompt breaks it, since every remaining step gets slower.
        var roomy = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.035), PromptTokens: 1, GeneratedTokens: 10) };
        var tight = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.025), PromptTokens: 1, GeneratedTokens: 10) };
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 50), roomy, At(1)), Is.True);
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 0), tight, At(1)), Is.False);
    }

    [Test]
    public void AdmissionKeepsARunningRequestsTimePerOutputTokenWithinItsSlo()
    {
        var s = Make(SchedulerKind.Emoe);
        // First token at 1 s against a 10 s TTFT: the completion deadline (10 + 0.025 * 99 = 12.475 s)
        // has room for a slower batch (1.2 + 0.01 + 90 * 0.03 = 3.91 s), but its TPOT would become
        // (0.2 + 0.01 + 90 * 0.03) / 99 = 0.0294 s > 0.025 s, against 0.0202 s alone. At 0.04 s it fits.
        var tight = new[] { new Req(1, 0, SloOf(ttft: 10, tpot: 0.025), PromptTokens: 1, GeneratedTokens: 10, FirstToken: 1.0) };
        var loose = new[] { new Req(1, 0, SloOf(ttft: 10, tpot: 0.04), PromptTokens: 1, GeneratedTokens: 10, FirstToken: 1.0) };
        Assert.That(s.MayAdmit(new Req(2, 1.1, PromptTokens: 10), tight, At(1.2)), Is.False);
        Assert.That(s.MayAdmit(new Req(2, 1.1, PromptTokens: 10), loose, At(1.2)), Is.True);

        // Already past its TPOT alone ((3 + 90 * 0.02) / 99 = 0.048 > 0.035): the candidate cannot lose it,
        // so only the pace counts, and steps of 0.03 s keep it.
        var slow = new[] { new Req(1, 0, SloOf(ttft: 10, tpot: 0.035), PromptTokens: 1, GeneratedTokens: 10, FirstToken: 1.0) };
        Assert.That(s.MayAdmit(new Req(2, 1.1, PromptTokens: 10), slow, At(4.0)), Is.True);
    }

    [Test]
    public void ARunningRequestThatIsAlreadyLateDoesNotBlockAdmission()
    {
        var s = Make(SchedulerKind.Emoe);
        // Deadline 0.5 + 0.045 * 99 = 4.955, but alone it ends at 4 + 90 * 0.02 = 5.8, and its TPOT is
        // lost alone too ((3.5 + 90 * 0.02) / 99 = 0.054 > 0.045); steps of 0.04 s still keep its pace.
        var late = new Req(1, 0, SloOf(ttft: 0.5, tpot: 0.045), PromptTokens: 1, GeneratedTokens: 10, FirstToken: 0.5);
        var candidate = new Req(3, 3.5, PromptTokens: 3000);
        Assert.That(s.MayAdmit(candidate, new[] { late }, At(4)), Is.True);

        // An on-time request beside it is still checked: deadline 3 + 1 + 0.05 * 99 = 8.95, with the
        // candidate 4 + 3 + 90 * 0.04 = 10.6; with a 100-token prompt 4 + 0.1 + 3.6 = 7.7.
        var onTime = new Req(2, 3, SloOf(ttft: 1, tpot: 0.05), PromptTokens: 1, GeneratedTokens: 10);
        Assert.That(s.MayAdmit(candidate, new[] { late, onTime }, At(4)), Is.False);
        Assert.That(s.MayAdmit(candidate with { PromptTokens = 100 }, new[] { late, onTime }, At(4)), Is.True);
    }

    [Test]
    public void NoMemberOfTheBatchMayStepSlowerThanItsTimePerOutputTokenLate()
    {
        var s = Make(SchedulerKind.Emoe);
        // Running requests whose first tokens came at 2 s against a 0.1 s TTFT: late, their deadlines
        // (0.1 + 0.055 * 99 = 5.545) long past at t = 10, their TPOTs lost ((8 + ...) / 99 > 0.055).
        // Only the pace holds them: step(4) = 0.05 s <= 0.055 s, step(5) = 0.06 s is not.
        Req Late(long id) => new(id, 0, SloOf(ttft: 0.1, tpot: 0.055), PromptTokens: 1, GeneratedTokens: 5, FirstToken: 2.0);
        var candidate = new Req(9, 9.5, PromptTokens: 10);
        Assert.That(s.MayAdmit(candidate, new[] { Late(1), Late(2), Late(3) }, At(10)), Is.True);
        Assert.That(s.MayAdmit(candidate, new[] { Late(1), Late(2), Late(3), Late(4) }, At(10)), Is.False);

        // The candidate's own pace: beside one request without an SLO, step(2) = 0.03 s.
        var free = new[] { new Req(1, 0) };
        Assert.That(s.MayAdmit(candidate with { Slo = SloOf(tpot: 0.025) }, free, At(10)), Is.False);
        Assert.That(s.MayAdmit(candidate with { Slo = SloOf(tpot: 0.04) }, free, At(10)), Is.True);
        // One expected token has no time per output token to keep; an empty batch admits anyone.
        Assert.That(s.MayAdmit(candidate with { Slo = SloOf(tpot: 0.025), MaxTokens = 1 }, free, At(10)), Is.True);
        Assert.That(s.MayAdmit(candidate with { Slo = SloOf(tpot: 0.001) }, Array.Empty<Req>(), At(10)), Is.True);
    }

    [Test]
    public void ACandidateAtItsLastChanceIsAdmittedWhenThatCostsAtMostOneSlo()
    {
        var s = Make(SchedulerKind.Emoe);
        // The running request's TPOT would go from 0.0202 s to 0.0294 s > 0.025 s (as above), so a
        // candidate that can wait is refused. This one's first-token deadline is 1.1 + 0.5 = 1.6 s:
        // admitted now its first token comes at 1.2 + 0.01 + 0.03 = 1.24 s; after the running request's
        // 90 expected tokens (1.2 + 90 * 0.02 = 3.0 s) it would come at 3.03 s, too late. Refusing
        // loses its SLO for sure, admitting loses one: it is admitted.
        var tight = new Req(1, 0, SloOf(ttft: 10, tpot: 0.025), PromptTokens: 1, GeneratedTokens: 10, FirstToken: 1.0);
        var lastChance = new Req(2, 1.1, SloOf(ttft: 0.5, tpot: 0.05), PromptTokens: 10);
        Assert.That(s.MayAdmit(lastChance, new[] { tight }, At(1.2)), Is.True);
        // With a 5 s TTFT it can wait until 6.1 s: refused.
        Assert.That(s.MayAdmit(lastChance with { Slo = SloOf(ttft: 5, tpot: 0.05) }, new[] { tight }, At(1.2)), Is.False);
        // A candidate that would miss its own pace in the batch (step(2) = 0.03 s > 0.025 s) gains nothing by joining.
        Assert.That(s.MayAdmit(lastChance with { Slo = SloOf(ttft: 0.5, tpot: 0.025) }, new[] { tight }, At(1.2)), Is.False);
        // Two running requests that would each lose their TPOT (0.0293 s alone, 0.0385 s with it, against
        // 0.03 s; steps of 0.04 s against 0.03 s): one SLO saved is not worth two.
        Req Pair(long id) => new(id, 0, SloOf(ttft: 10, tpot: 0.03), PromptTokens: 1, GeneratedTokens: 10, FirstToken: 1.0);
        Assert.That(s.MayAdmit(lastChance, new[] { Pair(1), Pair(3) }, At(1.2)), Is.False);

        // Late members' pace does not stand in a last chance's way: their SLOs are lost already.
        // step(5) = 0.06 s is slower than their 0.055 s (a candidate that can wait is refused, above),
        // but this one's deadline (10.4 s) comes before the first of them is expected to finish.
        Req Late(long id) => new(id, 0, SloOf(ttft: 0.1, tpot: 0.055), PromptTokens: 1, GeneratedTokens: 5, FirstToken: 2.0);
        var urgent = new Req(9, 9.9, SloOf(ttft: 0.5, tpot: 0.1), PromptTokens: 10);
        Req[] lateBatch = [Late(1), Late(2), Late(3), Late(4)];
        Assert.That(s.MayAdmit(urgent, lateBatch, At(10)), Is.True);
        Assert.That(s.MayAdmit(urgent with { Slo = SloOf(ttft: 10, tpot: 0.1) }, lateBatch, At(10)), Is.False);
    }

    [Test]
    public void RunningRequestsWithoutAnSloAreNotChecked()
    {
        var s = Make(SchedulerKind.Emoe);
        var running = new[] { new Req(1, 0), new Req(2, 0, new Slo()) };
        Assert.That(s.MayAdmit(new Req(3, 0.5, PromptTokens: 100_000), running, At(1)), Is.True);
    }

    [Test]
    public void AnEmptyBatchAlwaysAdmits()
    {
        foreach (var kind in new[] { SchedulerKind.Fcfs, SchedulerKind.Emoe })
        {
            var s = Make(kind);
            var hopeless = new Req(1, 0, SloOf(ttft: 0.001, tpot: 0.001), PromptTokens: 100_000);
            Assert.That(s.MayAdmit(hopeless, Array.Empty<Req>(), At(100, _ => 1e6)), Is.True, kind.ToString());
        }
    }

    [Test]
    public void ExpertLoadingDelaysAdmissionAndFirstTokens()
    {
        var s = Make(SchedulerKind.Emoe);
        var running = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.05), PromptTokens: 1, GeneratedTokens: 10) };
        var candidate = new Req(2, 0.5, PromptTokens: 1000, Task: "code");
        // 1 + 1 + 2.7 = 4.7 <= 5.95 without loading; 2 s of "code" experts push it to 6.7.
        static double CodeExperts(string? task) => task == "code" ? 2.0 : 0;
        Assert.That(s.MayAdmit(candidate, running, At(1)), Is.True);
        Assert.That(s.MayAdmit(candidate, running, At(1, CodeExperts)), Is.False);
        // Only the candidate's task counts: the running request's experts are already resident.
        Assert.That(s.MayAdmit(candidate with { Task = "chat" }, running, At(1, CodeExperts)), Is.True);
        // A negative or NaN answer is treated as unknown (0), never as time gained.
        Assert.That(s.MayAdmit(candidate with { PromptTokens = 2300 }, running, At(1, _ => -5)), Is.False);
        Assert.That(s.MayAdmit(candidate, running, At(1, _ => double.NaN)), Is.True);

        // Ordering: "code" (deadline 1.0) needs 0.12 s without loading, 2.12 s with: it becomes hopeless.
        Req[] waiting = [new(3, 0, SloOf(ttft: 3), Task: "chat"), new(4, 0, SloOf(ttft: 1), Task: "code")];
        Assert.That(Ids(s.Order(waiting, At(0))), Is.EqualTo(new long[] { 4, 3 }));
        Assert.That(Ids(s.Order(waiting, At(0, CodeExperts))), Is.EqualTo(new long[] { 3, 4 }));
    }

    [Test]
    public void ExpectedOutputIsCappedByMaxTokensAndLearnedPerTask()
    {
        var s = Make(SchedulerKind.Emoe);
        // With MaxTokens 20, G = 20: deadline 1 + 0.05 * 19 = 1.95, 10 tokens left at 0.03 s:
        // 1 + 0.3 + prefill <= 1.95 allows 650 tokens.
        var running = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.05), MaxTokens: 20, PromptTokens: 1, GeneratedTokens: 10) };
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 600), running, At(1)), Is.True);
        Assert.That(s.MayAdmit(new Req(2, 0.5, PromptTokens: 700), running, At(1)), Is.False);

        // "chat" learns far longer outputs: (100 + 3 * 1100) / 4 = 850 tokens, capped at 200 by MaxTokens.
        // Deadline 1 + 0.05 * 199 = 10.95; 190 tokens at 0.03 s: 1 + 5.7 + prefill allows 4250 tokens.
        var uncapped = new[] { new Req(1, 0, SloOf(ttft: 1, tpot: 0.05), PromptTokens: 1, GeneratedTokens: 10) };
        var candidate = new Req(2, 0.5, PromptTokens: 3000);
        Assert.That(s.MayAdmit(candidate, uncapped, At(1)), Is.False, "100 expected tokens: deadline 5.95");
        for (int i = 0; i < 3; i++) s.OnFinished("chat", 1100);
        Assert.That(s.Lengths.Expected("chat"), Is.EqualTo(850));
        Assert.That(s.MayAdmit(candidate, uncapped, At(1)), Is.True);
    }

    [Test]
    public void OutputLengthProfileSeedsLearnsAndFallsBack()
    {
        var p = new OutputLengthProfile(defaultTokens: 128);
        Assert.That(p.Expected("chat"), Is.EqualTo(128));
        Assert.That(p.Expected(null), Is.EqualTo(128));

        p.Seed("chat", 100, weight: 3);
        Assert.That(p.Expected("chat"), Is.EqualTo(100));
        p.Observe("chat", 200);
        Assert.That(p.Expected("chat"), Is.EqualTo(125), "(3 * 100 + 200) / 4");

        p.Seed("code", 20);
        Assert.That(p.Expected("code"), Is.EqualTo(20));
        Assert.That(p.Expected("unknown"), Is.EqualTo(104), "(300 + 200 + 20) / 5: every seed and observation");
        p.Observe(null, 0);
        Assert.That(p.Expected(null), Is.EqualTo(520.0 / 6));
        Assert.That(p.Expected("chat"), Is.EqualTo(125), "an untasked request does not move a task");

        Assert.Throws<ArgumentOutOfRangeException>(() => p.Seed("chat", 10, weight: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => p.Seed("chat", -1));
        Assert.Throws<ArgumentException>(() => p.Seed("", 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => p.Observe("chat", -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new OutputLengthProfile(0));
    }

    [Test]
    public void OutputLengthProfileTakesConcurrentObservations()
    {
        var p = new OutputLengthProfile();
        Parallel.For(0, 8, worker =>
        {
            for (int i = 0; i < 1000; i++) p.Observe(worker % 2 == 0 ? "a" : "b", i % 2 == 0 ? 10 : 30);
        });
        Assert.That(p.Expected("a"), Is.EqualTo(20));
        Assert.That(p.Expected("b"), Is.EqualTo(20));
        Assert.That(p.Expected("c"), Is.EqualTo(20));
    }

    [Test]
    public void StepCostModelUsesItsPriorsBeforeThreeSteps()
    {
        var m = new StepCostModel(0.02, 0.003, 0.0004);
        for (int step = 0; step < 3; step++)
        {
            Assert.That(m.Steps, Is.EqualTo(step));
            Assert.That(m.FixedSeconds, Is.EqualTo(0.02));
            Assert.That(m.DecodeSecondsPerToken, Is.EqualTo(0.003));
            Assert.That(m.PrefillSecondsPerToken, Is.EqualTo(0.0004));
            Assert.That(m.DecodeStepSeconds(4), Is.EqualTo(0.02 + 4 * 0.003));
            m.Observe(1, 0, 1, TimeSpan.FromSeconds(1)); // far from the priors
        }
        // Each 1 s step counted as at most 4 x the prediction (0.023 s): 0.092 s.
        Assert.That(m.DecodeStepSeconds(1), Is.EqualTo(StepCostModel.StallFactor * 0.023).Within(1e-6));
    }

    [Test]
    public void StepCostModelClipsAStallAndStillFollowsALastingSlowdown()
    {
        // Decode steps of 1-8 sequences at a = 4 ms, b_d = 0.5 ms, then one 2 s stall at one sequence.
        var m = new StepCostModel(0.004, 0.0005, 0.0001);
        for (int i = 0; i < 200; i++) m.Observe(1 + i % 8, 0, 1 + i % 8, TimeSpan.FromTicks(40_000 + 5_000 * (1 + i % 8)));
        m.Observe(1, 0, 1, TimeSpan.FromSeconds(2));
        // Counted in full, with about 50 steps weighing, it would add tens of milliseconds to a; clipped
        // to 4 x 4.5 ms it adds about 1 ms.
        Assert.That(m.DecodeStepSeconds(1), Is.EqualTo(0.0045).Within(0.0015));

        // Every step now takes ten times as long: within a hundred steps the model predicts at least 80 % of it.
        for (int i = 0; i < 100; i++) m.Observe(4, 0, 4, TimeSpan.FromTicks(10 * (40_000 + 5_000 * 4)));
        Assert.That(m.DecodeStepSeconds(4), Is.GreaterThan(0.8 * 0.060));
    }

    [Test]
    public void StepCostModelKeepsWhatRareStepsTaughtIt()
    {
        // a = 4 ms, b_d = 0.5 ms, b_p = 0.1 ms. Light load: one sequence decoding (4.5 ms, exact) and,
        // every 40th step, a lone prefill of 40, 160, 80 or 120 tokens, all four 30 % slower, then all
        // four 30 % faster, and so on. The prefills are all that tells a from b_d; within the last 50 steps
        // there are one or two, so forgetting every direction at each step left the split to the scatter
        // of the last couple (a batch of two predicted up to 2x off; kept, at most 12 % off).
        var m = new StepCostModel(0.01, 0.001, 0.001);
        int[] prompts = [40, 160, 80, 120];
        double worst = 0;
        for (int i = 0; i < 4000; i++)
        {
            if (i % 40 == 39)
            {
                int k = i / 40, p = prompts[k % prompts.Length];
                double scatter = k / prompts.Length % 2 == 0 ? 1.3 : 0.7;
                m.Observe(1, p, 0, TimeSpan.FromSeconds((0.004 + 0.0001 * p) * scatter));
            }
            else m.Observe(1, 0, 1, TimeSpan.FromSeconds(0.0045));
            if (i >= 400) worst = Math.Max(worst, Math.Abs(m.DecodeStepSeconds(2) / 0.005 - 1));
        }
        // A batch of two (5 ms) is never predicted more than 25 % off once the first ten prefills came.
        Assert.That(worst, Is.LessThan(0.25));
    }

    [Test]
    public void StepCostModelRecoversExactCoefficients()
    {
        // a = 4 ms, b_d = 0.5 ms, b_p = 0.1 ms, in whole ticks so every observation is exact.
        const long a = 40_000, bd = 5_000, bp = 1_000;
        (int Decode, int Prefill)[] steps = [(1, 0), (4, 0), (8, 0), (2, 128), (1, 512), (6, 37), (3, 1000), (0, 256), (16, 0)];
        var m = new StepCostModel(0.05, 0.01, 0.002);
        foreach (var (decode, prefill) in steps)
            m.Observe(Math.Max(1, decode), prefill, decode, TimeSpan.FromTicks(a + bd * decode + bp * prefill));

        Assert.That(m.FixedSeconds, Is.EqualTo(0.004).Within(1e-6));
        Assert.That(m.DecodeSecondsPerToken, Is.EqualTo(0.0005).Within(1e-6));
        Assert.That(m.PrefillSecondsPerToken, Is.EqualTo(0.0001).Within(1e-6));
        Assert.That(m.DecodeStepSeconds(10), Is.EqualTo(0.004 + 10 * 0.0005).Within(1e-6));
    }

    [Test]
    public void StepCostModelKeepsThePriorOfWhatItHasNotSeen()
    {
        // Decode-only steps say nothing about prefill: b_p stays at its prior while a and b_d fit.
        var m = new StepCostModel(0.05, 0.01, 0.002);
        foreach (int decode in new[] { 1, 2, 3, 5, 8 })
            m.Observe(decode, 0, decode, TimeSpan.FromTicks(40_000 + 5_000 * decode));
        Assert.That(m.PrefillSecondsPerToken, Is.EqualTo(0.002).Within(1e-12));
        Assert.That(m.FixedSeconds, Is.EqualTo(0.004).Within(1e-6));
        Assert.That(m.DecodeSecondsPerToken, Is.EqualTo(0.0005).Within(1e-6));
    }

    [Test]
    public void StepCostModelIsDeterministicAndNeverPredictsZero()
    {
        var first = new StepCostModel(0.01, 0.001, 0);
        var second = new StepCostModel(0.01, 0.001, 0);
        foreach (var m in new[] { first, second })
            for (int i = 1; i <= 6; i++) m.Observe(i, 0, i, TimeSpan.Zero);
        Assert.That(second.FixedSeconds, Is.EqualTo(first.FixedSeconds));
        Assert.That(second.DecodeSecondsPerToken, Is.EqualTo(first.DecodeSecondsPerToken));
        Assert.That(first.DecodeStepSeconds(3), Is.EqualTo(StepCostModel.MinimumSeconds));
        Assert.That(first.PrefillSecondsPerToken, Is.EqualTo(StepCostModel.MinimumSeconds));

        Assert.Throws<ArgumentOutOfRangeException>(() => first.Observe(1, 0, 1, TimeSpan.FromTicks(-1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => first.Observe(1, -1, 1, TimeSpan.Zero));
        Assert.Throws<ArgumentOutOfRangeException>(() => first.DecodeStepSeconds(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new StepCostModel(-1, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new StepCostModel(0, double.NaN, 0));
    }

    [Test]
    public void SloValidateNamesTheField()
    {
        Assert.DoesNotThrow(() => new Slo().Validate());
        Assert.DoesNotThrow(() => SloOf(ttft: 0.5, tpot: 0.05).Validate());

        var ttft = Assert.Throws<ArgumentException>(() => SloOf(ttft: 0, tpot: 0.05).Validate())!;
        Assert.That(ttft.ParamName, Is.EqualTo(nameof(Slo.TimeToFirstToken)));
        Assert.That(ttft.Message, Does.Contain(nameof(Slo.TimeToFirstToken)));

        var tpot = Assert.Throws<ArgumentException>(() => SloOf(ttft: 1, tpot: -0.01).Validate())!;
        Assert.That(tpot.ParamName, Is.EqualTo(nameof(Slo.TimePerOutputToken)));
        Assert.That(tpot.Message, Does.Contain(nameof(Slo.TimePerOutputToken)));
    }

    [Test]
    public void SloMetChecksEveryPresentPart()
    {
        var both = SloOf(ttft: 1, tpot: 0.05);
        static TimeSpan ms(double milliseconds) => TimeSpan.FromMilliseconds(milliseconds);
        Assert.That(both.Met(ms(1000), ms(50)), Is.True, "limits are inclusive");
        Assert.That(both.Met(ms(1001), ms(10)), Is.False, "first token late");
        Assert.That(both.Met(ms(100), ms(51)), Is.False, "tokens too slow");
        Assert.That(both.Met(ms(100), null), Is.True, "one token: no per-token time");

        Assert.That(SloOf(ttft: 1).Met(ms(900), ms(10_000)), Is.True);
        Assert.That(SloOf(tpot: 0.05).Met(ms(60_000), ms(40)), Is.True);
        Assert.That(new Slo().Met(TimeSpan.MaxValue, TimeSpan.MaxValue), Is.True);
    }
}
