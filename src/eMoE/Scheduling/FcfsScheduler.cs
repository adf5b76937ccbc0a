namespace eMoE.Scheduling;

/// <summary>
/// First come, first served: waiting requests in arrival order, each admitted as soon as the engine
/// has room for it. The baseline eMoE's scheduler is compared with.
/// </summary>
internal sealed class FcfsScheduler(OutputLengthProfile lengths, StepCostModel costs) : RequestScheduler(lengths, costs)
{
    /// <inheritdoc/>
    public override IReadOnlyList<T> Order<T>(IReadOnlyList<T> waiting, SchedulerContext context) =>
        InArrivalOrder(waiting).ToArray();

    /// <inheritdoc/>
    public override bool MayAdmit<T>(T candidate, IReadOnlyList<T> running, SchedulerContext context) => true;
}
