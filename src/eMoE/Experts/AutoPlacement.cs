using System.Globalization;
using System.Text;
using eMoE.Prediction;

namespace eMoE.Experts;

/// <summary>One inner fold of a fit half: candidates are fitted on <paramref name="Train"/> and scored on <paramref name="Validation"/>.</summary>
/// <param name="Train">The rest of the fit half.</param>
/// <param name="Validation">This fold's prompts (or steps of the one prompt).</param>
/// <param name="Description">Which prompts or tokens the fold holds, in words.</param>
public sealed record PlacementFold(IReadOnlyList<PromptTrace> Train, IReadOnlyList<PromptTrace> Validation, string Description);

/// <summary>
/// How one candidate method did in <see cref="AutoPlacement.Choose"/>'s validation: per fold, its
/// measures on the fold's validation part (fitted on the fold's train part) and round-robin's there.
/// </summary>
/// <param name="Method">The candidate.</param>
/// <param name="Folds">Per fold: the candidate's measures on the validation part.</param>
/// <param name="RoundRobinFolds">Per fold: round-robin's measures on the same validation part.</param>
public sealed record CandidateValidation(PlacementMethod Method, IReadOnlyList<PlacementStats> Folds, IReadOnlyList<PlacementStats> RoundRobinFolds)
{
    /// <summary>
    /// How far above round-robin's a measure may be and still count as no worse: rounding only
    /// (two placements that load every device equally in every step compute equal measures, up to
    /// the order of a floating-point sum).
    /// </summary>
    public const double Tolerance = 1e-9;

    /// <summary>Mean over folds of <see cref="PlacementStats.MaxOverMean"/>.</summary>
    public double MeanMaxOverMean => Folds.Average(f => f.MaxOverMean);
    /// <summary>Mean over folds of <see cref="PlacementStats.StepMaxOverMean"/>.</summary>
    public double MeanStepMaxOverMean => Folds.Average(f => f.StepMaxOverMean);
    /// <summary>The largest (candidate - round-robin) max_over_mean over the folds: at most 0 when it is no worse in every fold.</summary>
    public double WorstMaxGap => Folds.Zip(RoundRobinFolds, (c, r) => c.MaxOverMean - r.MaxOverMean).Max();
    /// <summary>The largest (candidate - round-robin) step_max_over_mean over the folds.</summary>
    public double WorstStepGap => Folds.Zip(RoundRobinFolds, (c, r) => c.StepMaxOverMean - r.StepMaxOverMean).Max();

    /// <summary>
    /// Whether the candidate is no worse than round-robin (up to <see cref="Tolerance"/>) on both
    /// measures in every fold.
    /// </summary>
    public bool NoWorseInEveryFold => Folds.Zip(RoundRobinFolds).All(p =>
        p.First.MaxOverMean <= p.Second.MaxOverMean * (1 + Tolerance) && p.First.StepMaxOverMean <= p.Second.StepMaxOverMean * (1 + Tolerance));

    /// <summary>
    /// The ranking among admissible candidates, lower is better: the mean over folds of
    /// max_over_mean / round-robin's + step_max_over_mean / round-robin's (round-robin itself: 2).
    /// </summary>
    public double Score => Folds.Zip(RoundRobinFolds, (c, r) => Ratio(c.MaxOverMean, r.MaxOverMean) + Ratio(c.StepMaxOverMean, r.StepMaxOverMean)).Average();

    // A validation part with no load at all gives 0 for every placement: equal, so 1.
    private static double Ratio(double value, double roundRobin) => roundRobin > 0 ? value / roundRobin : 1;
}

/// <summary>What <see cref="AutoPlacement.Choose"/> decided and why.</summary>
/// <param name="Placement">The chosen method refitted on the whole fit half, labelled <see cref="ExpertPlacement.AutoName"/> (its <see cref="ExpertPlacement.ChosenMethod"/> is <paramref name="Chosen"/>'s name).</param>
/// <param name="Chosen">The method chosen.</param>
/// <param name="FoldsDescription">How the fit half was cut into folds, in words.</param>
/// <param name="Folds">The folds (none when the fit half is too short to cut into two).</param>
/// <param name="Candidates">Every candidate's validation, round-robin first (empty without folds).</param>
/// <param name="Reason">Why <paramref name="Chosen"/>, in words.</param>
public sealed record AutoPlacementChoice(ExpertPlacement Placement, PlacementMethod Chosen, string FoldsDescription, IReadOnlyList<PlacementFold> Folds,
    IReadOnlyList<CandidateValidation> Candidates, string Reason)
{
    /// <summary>The decision and the validation numbers as a few lines of text (what <c>emoe place --method auto</c> prints on stderr).</summary>
    public string Report()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"auto: validation inside the fit half only: {FoldsDescription}");
        if (Candidates.Count > 0)
        {
            sb.AppendLine("auto: each candidate fitted on the other folds, scored on the fold (max_over_mean / step_max_over_mean):");
            foreach (var c in Candidates)
            {
                string folds = string.Join("; ", c.Folds.Select(f => string.Create(inv, $"{f.MaxOverMean:0.000} / {f.StepMaxOverMean:0.000}")));
                string verdict = c.Method == PlacementMethod.RoundRobin ? "the baseline"
                    : string.Create(inv, $"worst fold vs round-robin {c.WorstMaxGap:+0.000;-0.000;0.000} / {c.WorstStepGap:+0.000;-0.000;0.000}: " +
                        $"{(c.NoWorseInEveryFold ? "no worse in every fold" : "worse in some fold")}");
                sb.AppendLine(inv, $"auto:   {ExpertPlacement.NameOf(c.Method)}: folds {folds}; mean {c.MeanMaxOverMean:0.000} / {c.MeanStepMaxOverMean:0.000}; " +
                    $"score {c.Score:0.0000}; {verdict}");
            }
        }
        sb.AppendLine(inv, $"auto: chose {ExpertPlacement.NameOf(Chosen)}: {Reason}");
        return sb.ToString();
    }
}

/// <summary>
/// <see cref="PlacementMethod.Auto"/>: chooses among round-robin, greedy and greedy_corr by
/// validation inside the fit half, so that a fitted placement is used only where the fit half's own
/// history carries over to routing it was not fitted on. It is given the fit half only and never
/// sees the held-out (test) half.
/// <para>
/// The rule (fixed before its first benchmark run, and not tuned on any test half since):
/// </para>
/// <list type="number">
/// <item><description>
/// Folds, cut the way <see cref="PlacementEvaluation.Split"/> cuts a trace into fit and test: a fit
/// half of n ≥ 2 prompts into K = min(<see cref="MaxFolds"/>, n) contiguous folds of prompts in file
/// order (prompt i in fold ⌊K·i / n⌋), so that, as in the outer split, whole requests are held out
/// and neighbouring prompts stay together; a fit half of one prompt into contiguous folds of its
/// steps by token position (K = min(<see cref="MaxFolds"/>, steps); a step starting after t of the
/// prompt's T tokens in fold ⌊K·t / T⌋). Empty folds are dropped. With fewer than two folds there is
/// nothing to validate on: round-robin.
/// </description></item>
/// <item><description>
/// For each fold, each fitted candidate (greedy, greedy_corr) is fitted on the other folds and
/// scored on the fold: max_over_mean and step_max_over_mean (<see cref="PlacementEvaluation.Evaluate"/>),
/// beside round-robin's on the same fold.
/// </description></item>
/// <item><description>
/// A fitted candidate is admissible only if it is no worse than round-robin on both measures in
/// every fold (the worst fold, not the mean: the test half is one more held-out part, and a mean can
/// hide a fold it loses; a placement fitted on routing that history does not predict is about as
/// likely to beat round-robin on a fold as to lose, so it passes every fold on both measures
/// seldom). Round-robin is always admissible.
/// </description></item>
/// <item><description>
/// Among the admissible, the lowest <see cref="CandidateValidation.Score"/> wins (mean over folds of
/// the two measures relative to round-robin's; round-robin scores 2); ties go to the simpler method
/// (round-robin, then greedy, then greedy_corr). So a fitted method is chosen only if it is no worse
/// in every fold and better somewhere.
/// </description></item>
/// <item><description>The chosen method is refitted on the whole fit half.</description></item>
/// </list>
/// </summary>
public static class AutoPlacement
{
    /// <summary>The most folds the fit half is cut into.</summary>
    public const int MaxFolds = 5;

    /// <summary>The candidates, in the order ties are broken (simplest first).</summary>
    public static IReadOnlyList<PlacementMethod> Candidates { get; } = [PlacementMethod.RoundRobin, PlacementMethod.Greedy, PlacementMethod.GreedyCorrelated];

    /// <summary>
    /// The fit half cut into validation folds (step 1 of the rule on <see cref="AutoPlacement"/>):
    /// none when it is too short for two.
    /// </summary>
    public static (IReadOnlyList<PlacementFold> Folds, string Description) Folds(IReadOnlyList<PromptTrace> fit)
    {
        PlacementEvaluation.Shape(fit);
        if (fit.Count >= 2)
        {
            int n = fit.Count, k = Math.Min(MaxFolds, n);
            var foldOf = Enumerable.Range(0, n).Select(i => k * i / n).ToArray();
            var folds = Enumerable.Range(0, k).Select(f => new PlacementFold(
                [.. fit.Where((_, i) => foldOf[i] != f)], [.. fit.Where((_, i) => foldOf[i] == f)],
                Range("prompt", Array.IndexOf(foldOf, f) + 1, Array.LastIndexOf(foldOf, f) + 1))).ToList();
            return (folds, $"{k} folds of the fit half's {n} prompts in file order ({string.Join(", ", folds.Select(f => f.Validation.Count))} prompts)");
        }
        var only = fit[0];
        long total = only.Steps.Sum(s => (long)s.Tokens), before = 0;
        int folds1 = Math.Min(MaxFolds, only.Steps.Count);
        var byFold = Enumerable.Range(0, folds1).Select(_ => new List<(StepTrace Step, long Start)>()).ToArray();
        foreach (var step in only.Steps)
        {
            byFold[total == 0 ? 0 : (int)(folds1 * before / total)].Add((step, before));
            before += step.Tokens;
        }
        var kept = byFold.Where(f => f.Count > 0).ToList();
        if (kept.Count < 2)
            return ([], $"the fit half is one prompt of {only.Steps.Count} step(s): too short to cut into two folds");
        var result = kept.Select(f => new PlacementFold(
            [only.WithSteps(kept.Where(o => o != f).SelectMany(o => o).OrderBy(s => s.Start).Select(s => s.Step))], [only.WithSteps(f.Select(s => s.Step))],
            $"{Range("token", f[0].Start + 1, f[^1].Start + f[^1].Step.Tokens)} ({f.Count} step{(f.Count == 1 ? "" : "s")})")).ToList();
        return (result, $"{result.Count} folds of the fit half's one prompt by token position ({string.Join(", ", result.Select(f => f.Description))})");
    }

    /// <summary>"prompt 3" or "prompts 1-20" (1-based, inclusive).</summary>
    private static string Range(string what, long first, long last) => first == last ? $"{what} {first}" : $"{what}s {first}-{last}";

    /// <summary>
    /// Chooses a placement for <paramref name="devices"/> devices by the rule on
    /// <see cref="AutoPlacement"/>, from <paramref name="fit"/> (the fit half) alone.
    /// </summary>
    /// <param name="fit">The fit half (e.g. <see cref="TraceSplit.Fit"/>); nothing else is read.</param>
    /// <param name="devices">Devices to spread each layer's experts over.</param>
    /// <param name="source">What <paramref name="fit"/> is, recorded as the placement's <see cref="ExpertPlacement.FittedOn"/>.</param>
    public static AutoPlacementChoice Choose(IReadOnlyList<PromptTrace> fit, int devices, string? source = null)
    {
        var (layers, experts, _) = PlacementEvaluation.Shape(fit);
        var roundRobin = ExpertPlacement.RoundRobin(layers, experts, devices); // also checks the device count
        var (folds, description) = Folds(fit);
        var candidates = new List<CandidateValidation>();
        PlacementMethod chosen = PlacementMethod.RoundRobin;
        string reason;
        if (folds.Count < 2)
        {
            reason = "no folds to validate on, so no evidence that a fitted placement carries over";
        }
        else
        {
            var rrFolds = folds.Select(f => PlacementEvaluation.Evaluate(roundRobin, f.Validation)).ToList();
            candidates.Add(new CandidateValidation(PlacementMethod.RoundRobin, rrFolds, rrFolds));
            foreach (var method in Candidates.Where(m => m != PlacementMethod.RoundRobin))
            {
                var scores = folds.Select(f => PlacementEvaluation.Evaluate(ExpertPlacement.Create(method, ExpertLoads.FromTraces(f.Train), devices), f.Validation)).ToList();
                candidates.Add(new CandidateValidation(method, scores, rrFolds));
            }
            // Candidates are in tie-break order, so the first of the lowest score wins.
            var best = candidates[0];
            foreach (var c in candidates.Skip(1))
            {
                if (c.NoWorseInEveryFold && c.Score < best.Score) best = c;
            }
            chosen = best.Method;
            var admissible = candidates.Skip(1).Where(c => c.NoWorseInEveryFold).Select(c => ExpertPlacement.NameOf(c.Method)).ToList();
            reason = chosen != PlacementMethod.RoundRobin
                ? $"no worse than round-robin on both measures in every fold, and the lowest score of {string.Join(", ", admissible.Prepend(ExpertPlacement.RoundRobinName))}; refitted on the whole fit half"
                : admissible.Count == 0
                    ? "no fitted method was no worse than round-robin on both measures in every fold"
                    : $"{string.Join(" and ", admissible)} no worse in every fold but not better anywhere";
        }
        var fitted = ExpertPlacement.Create(chosen, ExpertLoads.FromTraces(fit, source), devices);
        return new AutoPlacementChoice(fitted.ChosenBy(ExpertPlacement.AutoName, source), chosen, description, folds, candidates, reason);
    }
}
