namespace eMoE.Scheduling;

/// <summary>Which scheduler the engine uses to admit waiting requests.</summary>
public enum SchedulerKind
{
    /// <summary>First come, first served: arrival order, every request admitted when there is room.</summary>
    Fcfs,

    /// <summary>eMoE's task-aware SLO scheduler: first-token deadline order, admission only when running requests keep their SLOs.</summary>
    Emoe,
}

/// <summary>What a scheduler may read of one request, waiting or running. The engine implements it.</summary>
internal interface IScheduledRequest
{
    /// <summary>Arrival order: lower is earlier; breaks every tie.</summary>
    long Id { get; }

    /// <summary>The request's task (for its profiled output length and its experts), or null.</summary>
    string? Task { get; }

    /// <summary>Tokens still to prefill when admitted: the prompt plus any generated tokens to recompute.</summary>
    int PromptTokens { get; }

    /// <summary>Most output tokens.</summary>
    int MaxTokens { get; }

    /// <summary>Output tokens generated so far.</summary>
    int GeneratedTokens { get; }

    /// <summary>The request's SLO, or null for none.</summary>
    Slo? Slo { get; }

    /// <summary>When the request arrived, on the engine's clock.</summary>
    TimeSpan ArrivedAt { get; }

    /// <summary>When its first output token was sampled (engine clock), or null before that; kept across preemption.</summary>
    TimeSpan? FirstTokenAt { get; }
}

/// <summary>The engine's state at one admission decision.</summary>
internal sealed class SchedulerContext
{
    /// <summary>The engine's clock now (the same clock as <see cref="IScheduledRequest.ArrivedAt"/>).</summary>
    public required TimeSpan Now { get; init; }

    /// <summary>
    /// Seconds to copy the task's predicted experts that are not resident now (eMoE's ΔE); 0 when unknown.
    /// </summary>
    public required Func<string?, double> ExpertLoadSeconds { get; init; }

    /// <summary>
    /// ΔE for <paramref name="task"/>, read defensively: a negative or NaN answer would make a
    /// request look earlier than now, so it counts as 0 (unknown).
    /// </summary>
    internal double LoadSeconds(string? task)
    {
        double seconds = ExpertLoadSeconds(task);
        return seconds > 0 ? seconds : 0;
    }
}

/// <summary>
/// Decides in which order waiting requests are considered and whether one may join the running
/// batch. The engine checks batch size and KV memory itself; a scheduler only adds its own rule.
/// </summary>
internal abstract class RequestScheduler
{
    /// <summary>A scheduler reading the given learned models.</summary>
    protected RequestScheduler(OutputLengthProfile lengths, StepCostModel costs)
    {
        Lengths = lengths ?? throw new ArgumentNullException(nameof(lengths));
        Costs = costs ?? throw new ArgumentNullException(nameof(costs));
    }

    /// <summary>The scheduler of <paramref name="kind"/>, reading (and teaching) the given models.</summary>
    public static RequestScheduler Create(SchedulerKind kind, OutputLengthProfile lengths, StepCostModel costs) => kind switch
    {
        SchedulerKind.Fcfs => new FcfsScheduler(lengths, costs),
        SchedulerKind.Emoe => new SloScheduler(lengths, costs),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown scheduler kind"),
    };

    /// <summary>Expected output tokens per task, learned from finished requests.</summary>
    public OutputLengthProfile Lengths { get; }

    /// <summary>Forward-step cost, learned from the engine's steps.</summary>
    public StepCostModel Costs { get; }

    /// <summary>The waiting requests in the order they should be considered for admission.</summary>
    public abstract IReadOnlyList<T> Order<T>(IReadOnlyList<T> waiting, SchedulerContext context) where T : IScheduledRequest;

    /// <summary>
    /// Whether <paramref name="candidate"/> may join <paramref name="running"/> now. Always true when
    /// nothing is running, so the engine is never idle while requests wait.
    /// </summary>
    public abstract bool MayAdmit<T>(T candidate, IReadOnlyList<T> running, SchedulerContext context) where T : IScheduledRequest;

    /// <summary>A request of <paramref name="task"/> finished with <paramref name="outputTokens"/> generated: the length profile learns it.</summary>
    public void OnFinished(string? task, int outputTokens) => Lengths.Observe(task, outputTokens);

    /// <summary>Arrival order: <see cref="IScheduledRequest.ArrivedAt"/>, then <see cref="IScheduledRequest.Id"/>.</summary>
    protected static IEnumerable<T> InArrivalOrder<T>(IEnumerable<T> requests) where T : IScheduledRequest =>
        requests.OrderBy(r => r.ArrivedAt).ThenBy(r => r.Id);
}
