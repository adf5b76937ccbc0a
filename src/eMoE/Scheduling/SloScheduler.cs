namespace eMoE.Scheduling;

/// <summary>
/// eMoE's task-aware SLO scheduler (arXiv 2503.06823), greedy: waiting requests go by first-token
/// deadline, and one joins the batch only if every running request with an SLO still meets it, or,
/// when waiting would cost the candidate its own first-token deadline, if joining costs at most one.
/// </summary>
/// <remarks>
/// <para>
/// The paper predicts the completion of running request i, when a request with W input tokens
/// joins, as t_i = ΔE + (W + n_i · G_i) · c + r_i: ΔE the new request's expert-loading latency, W · c
/// its prefill, n_i · G_i the remaining profiled output tokens of i at c per token, and r_i the time
/// i has run so far. With continuous batching we keep the terms but split c:
/// </para>
/// <list type="bullet">
/// <item><description>r_i becomes the absolute clock: t_i is a time on the engine's clock, compared with i's absolute deadline, so "time so far" is carried by now and ArrivedAt_i.</description></item>
/// <item><description>W · c becomes W_x · <see cref="StepCostModel.PrefillSecondsPerToken"/>: the candidate's prefill stalls every running request once.</description></item>
/// <item><description>The prompt tokens that admitted requests have still to prefill (B: admitted earlier in the same round, or in the middle of a chunked prefill) stall them too, with or without the candidate, so B · b_p is added to both sides of every comparison.</description></item>
/// <item><description>n_i · G_i · c becomes rem_i · <see cref="StepCostModel.DecodeStepSeconds"/>(|R| + 1), rem_i = max(0, G_i − generated_i): each decode step yields one token of every running request, and with the candidate the batch has |R| + 1 sequences, so each step is slower.</description></item>
/// <item><description>G_i = min(MaxTokens_i, expected output of i's task), at least 1 (the profiled output length).</description></item>
/// </list>
/// <para>
/// So t_i = now + B · b_p + ΔE(τ_x) + W_x · b_p + rem_i · step(|R| + 1), against the deadline
/// D_i = ArrivedAt_i + TTFT_i + TPOT_i · max(0, G_i − 1) (an absent part counts 0). A request
/// already past D_i without the candidate (ΔE = W = 0, |R| sequences, B still counted) is late either way and is not
/// checked against D_i, so it cannot block everyone behind it; a request without any SLO is never checked.
/// </para>
/// <para>
/// One rule is not in the paper: the pace. Admission is refused when step(|R| + 1) exceeds the TPOT
/// limit of any member of the batch it makes, the candidate and late requests included. Without it,
/// once every running request was late nothing was checked, the batch grew to its limit and each
/// newcomer then missed its TPOT in it (bench serve at 3.558 req/s, 100 % experts, batch 16: 40 and 45 % of
/// SLOs met, batch 13-14, against FCFS's 95 and 100 %, batch 6).
/// </para>
/// <para>
/// The SLOs here have two parts that are judged apart (TTFT, and TPOT = (e2e − TTFT) / (tokens − 1)),
/// where the paper has one latency target. So a running request with a TPOT part is also checked on
/// its own: the candidate may not push its projected TPOT, (decode time so far + ΔE + W_x · b_p +
/// rem_i · step(|R| + 1)) / (G_i − 1), past the limit when it would have stayed within it without the candidate.
/// </para>
/// </remarks>
internal sealed class SloScheduler(OutputLengthProfile lengths, StepCostModel costs) : RequestScheduler(lengths, costs)
{
    /// <summary>
    /// Requests that can still get their first token in time if admitted now, by first-token deadline
    /// (ties: Id); then those that cannot or have no first-token SLO, by highest response ratio
    /// (wait + service) / service, service = ΔE + prefill + G steps alone (ties: Id).
    /// </summary>
    /// <remarks>
    /// <para>
    /// Nothing is dropped: a request that has already missed its SLO goes after the ones that can still
    /// meet theirs, since serving it first would cost them their SLOs and gain it nothing.
    /// </para>
    /// <para>
    /// Among the rest only latency is left to win. Shortest first gives the lowest mean (a long job
    /// ahead delays every one behind it) but can starve a long job; the response ratio (Brinch
    /// Hansen's HRRN) favours short jobs and still ages every job, so a long one overtakes newcomers
    /// once it has waited a multiple of its own service time. On the simulated engine
    /// (SimulatedServingTests.Evaluate: CPU-accelerator step costs, 10 x 80 requests per cell) it put
    /// the mean e2e 0.5-7.5 % below FCFS's at 2, 4 and 8 times capacity, batch 4 and 16, where arrival
    /// order had left it within 0.5 % of FCFS's, and moved SLO attainment by at most one point.
    /// </para>
    /// </remarks>
    public override IReadOnlyList<T> Order<T>(IReadOnlyList<T> waiting, SchedulerContext context)
    {
        var feasible = new List<(T Request, double Deadline)>();
        var rest = new List<(T Request, double Ratio)>();
        double now = context.Now.TotalSeconds;
        double firstStep = Costs.DecodeStepSeconds(1);
        double prefillPerToken = Costs.PrefillSecondsPerToken;
        foreach (var request in waiting)
        {
            double? deadline = FirstTokenDeadline(request);
            double load = context.LoadSeconds(request.Task), prefill = request.PromptTokens * prefillPerToken;
            if (deadline is { } d && now + load + prefill + firstStep <= d) feasible.Add((request, d));
            else rest.Add((request, ResponseRatio(request, now, load + prefill + ExpectedOutput(request) * firstStep)));
        }
        return feasible.OrderBy(f => f.Deadline).ThenBy(f => f.Request.Id).Select(f => f.Request)
            .Concat(rest.OrderByDescending(r => r.Ratio).ThenBy(r => r.Request.Id).Select(r => r.Request))
            .ToArray();
    }

    /// <summary>
    /// (wait so far + service) / service, service the request's expected time alone in the engine
    /// (ΔE, its prefill and G decode steps of a batch of one; more than 0): 1 on arrival, growing
    /// faster the shorter the request.
    /// </summary>
    private static double ResponseRatio(IScheduledRequest request, double now, double service) =>
        (Math.Max(0, now - request.ArrivedAt.TotalSeconds) + service) / service;

    /// <summary>
    /// True when nothing runs. Otherwise true when the batch with <paramref name="candidate"/> keeps
    /// every member's per-token pace (<see cref="KeepsPace"/>) and no running request with an SLO that
    /// is still met would lose it once the candidate joins; or, when refusing would cost the
    /// candidate its own first-token deadline (<see cref="IsLastChance"/>), true when the candidate
    /// keeps its pace and joining costs at most one running request its SLO. Whether the candidate
    /// can still get its first token in time is <see cref="Order"/>'s concern.
    /// </summary>
    /// <remarks>
    /// The last-chance rule makes a refusal never lose more SLOs than it saves. Without it a refusal
    /// that protected one running request's TPOT cost the candidate its TTFT for sure, and the
    /// requests behind it theirs as the queue grew (bench serve at 3.558 req/s, 100 % experts: 40 % of
    /// SLOs met with 9 TTFT misses against FCFS's 95 %, in one run of two on the same grid). Late
    /// members' pace is not counted then: their SLOs are lost already, and the candidate's own pace
    /// still keeps the batch from growing past what a newcomer can meet.
    /// </remarks>
    public override bool MayAdmit<T>(T candidate, IReadOnlyList<T> running, SchedulerContext context)
    {
        if (running.Count == 0) return true;
        double now = context.Now.TotalSeconds;
        // B · b_p: a running request with more than one token to feed is prefilling (the engine steps one pending token as decode).
        // Left out, every candidate admitted in one round was checked as if it alone would prefill, and the
        // running requests paid for all of them (SimulatedServingTests.Evaluate, batch 16 at 2c: 7.9 TPOT misses per 80
        // requests with it left out, 4.3 with it, all of those from the last-chance rule).
        double backlog = running.Sum(r => r.PromptTokens > 1 ? r.PromptTokens : 0) * Costs.PrefillSecondsPerToken;
        double admissionDelay = backlog + context.LoadSeconds(candidate.Task) + candidate.PromptTokens * Costs.PrefillSecondsPerToken;
        double stepWithout = Costs.DecodeStepSeconds(running.Count);
        double stepWith = Costs.DecodeStepSeconds(running.Count + 1);
        if (!KeepsPace(candidate, stepWith)) return false;
        int sloBroken = 0;
        bool lateSlowed = false;
        foreach (var request in running)
        {
            switch (Effect(request, now, backlog, admissionDelay, stepWithout, stepWith))
            {
                case Admission.BreaksSlo: sloBroken++; break;
                case Admission.SlowsLateRequest: lateSlowed = true; break;
            }
        }
        if (sloBroken == 0 && !lateSlowed) return true;
        return sloBroken <= 1 && IsLastChance(candidate, running, now, admissionDelay, stepWithout, stepWith);
    }

    /// <summary>What admitting a candidate does to one running request.</summary>
    private enum Admission
    {
        /// <summary>Its SLO (or the absence of one) is unaffected and its pace is kept.</summary>
        Harmless,

        /// <summary>It meets its SLO without the candidate and would miss it with the candidate.</summary>
        BreaksSlo,

        /// <summary>Its SLO is lost either way, and the bigger batch would step slower than its TPOT limit.</summary>
        SlowsLateRequest,
    }

    /// <summary>
    /// Judges one running request against the candidate's admission: its pace, its completion
    /// deadline (only when it is on time without the candidate) and its projected TPOT (only when that
    /// is within the limit without the candidate). <paramref name="delayWithout"/> and
    /// <paramref name="delayWith"/>: seconds until the batch decodes again without the candidate (the
    /// backlog's prefill) and with it (plus its ΔE and prefill).
    /// </summary>
    private Admission Effect(IScheduledRequest request, double now, double delayWithout, double delayWith, double stepWithout, double stepWith)
    {
        // Without an SLO there is no pace to keep either (KeepsPace is true then).
        if (request.Slo is not { IsEmpty: false } slo) return Admission.Harmless;
        bool keepsPace = KeepsPace(request, stepWith);
        double expected = ExpectedOutput(request);
        double deadline = CompletionDeadline(request, slo, expected);
        double remaining = RemainingOutput(request);
        bool onTime = now + delayWithout + remaining * stepWithout <= deadline; // late either way: not checked
        bool breaks = onTime && now + delayWith + remaining * stepWith > deadline;
        // The SLO's per-token part holds on its own, not only through the completion deadline: a
        // request whose first token came early must not spend that slack on slower steps.
        bool tpotHeld = true;
        if (slo.TimePerOutputToken is { } tpot && expected > 1)
        {
            double limit = tpot.TotalSeconds;
            tpotHeld = ProjectedTpot(request, now, delayWithout, remaining, stepWithout, expected) <= limit;
            breaks |= tpotHeld && ProjectedTpot(request, now, delayWith, remaining, stepWith, expected) > limit;
        }
        bool met = onTime && tpotHeld;
        if (breaks || (met && !keepsPace)) return Admission.BreaksSlo;
        return keepsPace ? Admission.Harmless : Admission.SlowsLateRequest;
    }

    /// <summary>
    /// Whether the candidate can get its first token in time if admitted now but not if it waits for
    /// the batch's next expected departure (the running request with the fewest expected tokens
    /// left, at least one step away), when the batch is one smaller.
    /// </summary>
    private bool IsLastChance<T>(T candidate, IReadOnlyList<T> running, double now, double admissionDelay, double stepWithout,
        double stepWith) where T : IScheduledRequest
    {
        if (FirstTokenDeadline(candidate) is not { } deadline) return false;
        if (now + admissionDelay + stepWith > deadline) return false;
        double fewestLeft = running.Min(r => RemainingOutput(r));
        double nextDeparture = now + Math.Max(1, fewestLeft) * stepWithout;
        return nextDeparture + admissionDelay + stepWithout > deadline;
    }

    /// <summary>
    /// Whether a batch stepping every <paramref name="step"/> seconds is fast enough for the request's
    /// per-token SLO: true without a TPOT part or when it expects a single token. This holds for every
    /// member, late or not: a request already past its deadline still runs at its pace, so that past
    /// saturation the batch does not grow until every member is slow (and then every newcomer with it).
    /// </summary>
    private bool KeepsPace(IScheduledRequest request, double step) =>
        request.Slo?.TimePerOutputToken is not { } tpot || ExpectedOutput(request) <= 1 || step <= tpot.TotalSeconds;

    /// <summary>
    /// The request's time per output token at its expected end, as the SLO measures it: decode time so
    /// far (from its first token; none before it) plus <paramref name="delay"/> plus its remaining
    /// tokens at <paramref name="step"/> seconds each, over its G − 1 decode tokens.
    /// </summary>
    private static double ProjectedTpot(IScheduledRequest request, double now, double delay, double remaining, double step, double expected)
    {
        double decodedSoFar = request.FirstTokenAt is { } first ? now - first.TotalSeconds : 0;
        return (decodedSoFar + delay + remaining * step) / (expected - 1);
    }

    /// <summary>Output tokens the request is expected still to generate: max(0, G − generated).</summary>
    private double RemainingOutput(IScheduledRequest request) => Math.Max(0, ExpectedOutput(request) - request.GeneratedTokens);

    /// <summary>G: the profiled output length of the request's task, capped by its MaxTokens, at least 1.</summary>
    private double ExpectedOutput(IScheduledRequest request) =>
        Math.Max(1, Math.Min(request.MaxTokens, Lengths.Expected(request.Task)));

    /// <summary>ArrivedAt + TTFT in seconds; null (infinitely late) without a first-token SLO.</summary>
    private static double? FirstTokenDeadline(IScheduledRequest request) =>
        request.Slo?.TimeToFirstToken is { } ttft ? request.ArrivedAt.TotalSeconds + ttft.TotalSeconds : null;

    /// <summary>D = ArrivedAt + TTFT + TPOT · max(0, G − 1) in seconds; an absent part counts 0.</summary>
    private static double CompletionDeadline(IScheduledRequest request, Slo slo, double expectedOutput) =>
        request.ArrivedAt.TotalSeconds
        + (slo.TimeToFirstToken?.TotalSeconds ?? 0)
        + (slo.TimePerOutputToken?.TotalSeconds ?? 0) * Math.Max(0, expectedOutput - 1);
}
