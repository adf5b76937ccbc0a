using System.CommandLine;
using System.Globalization;
using System.Text;
using eMoE.Experts;
using eMoE.Model;
using eMoE.Prediction;

namespace eMoE.Cli.Commands;

/// <summary>
/// <c>emoe place</c>: spreads a model's experts over N devices from a routing trace (fitted on its
/// first half; by default the method is chosen by validation inside that half, and the choice and
/// its validation numbers go to stderr), writes the placement, and prints its load balance on both
/// halves beside round-robin; with <c>--placement</c>, checks and evaluates a saved one instead.
/// </summary>
internal static class PlaceCommand
{
    private static readonly Dictionary<string, PlacementMethod> MethodNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["round-robin"] = PlacementMethod.RoundRobin, ["greedy"] = PlacementMethod.Greedy, ["greedy-corr"] = PlacementMethod.GreedyCorrelated,
        ["round_robin"] = PlacementMethod.RoundRobin, ["greedy_corr"] = PlacementMethod.GreedyCorrelated, ["auto"] = PlacementMethod.Auto,
    };

    public static Command Create()
    {
        var model = new Option<string?>("--model")
        {
            Description = "Model directory whose layers and experts the placement must match; default: those of the trace",
        };
        var trace = new Option<FileInfo>("--trace") { Description = "Routing trace (JSON Lines: emoe generate/batch --trace, or bench residency's trace.jsonl)", Required = true };
        var devices = new Option<int>("--devices") { Description = "Devices to spread each layer's experts over (at most the experts per layer)", Required = true };
        var method = new Option<PlacementMethod>("--method")
        {
            Description = "round-robin (expert e on device e mod N), greedy (by historical load, equal experts per device), " +
                "greedy-corr (greedy plus 0.5 x the Pearson correlation of experts' activations: co-firing experts apart) or auto (the default: " +
                "whichever of the three validates best inside the fit half: a fitted one only if no worse than round-robin on both measures in every fold)",
            DefaultValueFactory = _ => PlacementMethod.Auto,
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
                if (MethodNames.TryGetValue(text.Trim(), out var m)) return m;
                result.AddError($"--method: '{text}' is not one of round-robin, greedy, greedy-corr, auto");
                return default;
            },
        };
        var output = new Option<FileInfo?>("--out") { Description = "Where to write the placement (JSON); needed unless --placement is given" };
        var placement = new Option<FileInfo?>("--placement")
        {
            Description = "Load this saved placement instead of fitting one: it is checked against the model (or trace) and --devices, then evaluated",
        };
        var command = new Command("place",
            "Expert placement across devices: fit a placement on the first half of a routing trace (round-robin, greedy by load, greedy " +
            "with co-firing experts apart, or auto: the one that validates best inside the fit half), write it, and print max/mean device load " +
            "on both halves beside round-robin")
        {
            model, trace, devices, method, output, placement,
        };
        command.SetAction(parse =>
        {
            var traceFile = parse.GetValue(trace)!;
            if (!traceFile.Exists) throw new CliException($"{traceFile.FullName}: no such trace file");
            int n = parse.GetValue(devices);
            var saved = parse.GetValue(placement);
            var outFile = parse.GetValue(output);
            if (saved is not null && (outFile is not null || parse.GetResult(method) is { Implicit: false }))
                throw new CliException("--placement evaluates a saved placement: leave out --method and --out");
            if (saved is null && outFile is null) throw new CliException("give --out FILE for the placement (or --placement FILE to evaluate a saved one)");
            if (saved is { Exists: false }) throw new CliException($"{saved.FullName}: not found");

            var traces = PromptTrace.ReadAll(traceFile.FullName);
            if (traces.Count == 0) throw new CliException($"{traceFile.FullName}: no prompts");
            var ((layers, experts, topK), split) = ShapeAndSplit(traces, traceFile.FullName);
            ModelConfig? config = null;
            if (parse.GetValue(model) is { } modelDir)
            {
                config = ModelConfig.Load(modelDir);
                if (config.NumLayers != layers || config.NumExperts != experts)
                {
                    throw new CliException($"{traceFile.FullName}: the trace has {layers} layers x {experts} experts; the model {modelDir} has " +
                        $"{config.NumLayers} layers x {config.NumExperts} experts (a trace of another model)");
                }
            }
            if (n < 1) throw new CliException($"--devices must be at least 1, got {n}");
            if (n > experts) throw new CliException($"--devices {n} is more than the {experts} experts per layer: some device would hold no expert of a layer");

            ExpertPlacement chosen;
            if (saved is not null)
            {
                chosen = ExpertPlacement.Load(saved.FullName);
                try
                {
                    if (config is not null) chosen.CheckFits(config, n);
                    else chosen.CheckFits(layers, experts, n, "the trace");
                }
                catch (ArgumentException e)
                {
                    throw new CliException($"{saved.FullName}: {e.Message}");
                }
            }
            else
            {
                string source = $"{traceFile.Name}: {split.Description}";
                var how = parse.GetValue(method);
                if (how == PlacementMethod.Auto)
                {
                    // Given the fit half only: the test half below is for the report, never for the choice.
                    var choice = AutoPlacement.Choose(split.Fit, n, source);
                    Console.Error.Write(choice.Report());
                    chosen = choice.Placement;
                }
                else
                {
                    chosen = ExpertPlacement.Create(how, ExpertLoads.FromTraces(split.Fit, source), n);
                }
                if (config is not null) chosen.CheckFits(config, n);
                chosen.Save(outFile!.FullName);
            }
            var baseline = ExpertPlacement.RoundRobin(layers, experts, n);
            Console.Out.Write(Report(traceFile.FullName, traces.Count, (layers, experts, topK), split, chosen, baseline,
                saved?.FullName, outFile?.FullName));
            return 0;
        });
        return command;
    }

    private static ((int, int, int), TraceSplit) ShapeAndSplit(List<PromptTrace> traces, string path)
    {
        try
        {
            return (PlacementEvaluation.Shape(traces), PlacementEvaluation.Split(traces));
        }
        catch (InvalidDataException e)
        {
            throw new CliException($"{path}: {e.Message}");
        }
    }

    private static string Report(string trace, int prompts, (int Layers, int Experts, int TopK) shape, TraceSplit split, ExpertPlacement placement,
        ExpertPlacement baseline, string? loadedFrom, string? writtenTo)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"trace: {trace} ({prompts} prompts, {shape.Layers} layers x {shape.Experts} experts, top-{shape.TopK}); {split.Description}");
        string method = placement.ChosenMethod is null ? placement.Method : $"{placement.Method}: {placement.ChosenMethod}";
        sb.AppendLine(loadedFrom is not null
            ? $"placement: {loadedFrom} ({method}, {placement.Devices} devices{(placement.FittedOn is null ? "" : $"; fitted on {placement.FittedOn}")})"
            : $"placement: {method}, {placement.Devices} devices -> {writtenTo}");
        sb.AppendLine();
        sb.AppendLine("| split | steps | max_over_mean | step_max_over_mean | round-robin max_over_mean | round-robin step_max_over_mean |");
        sb.AppendLine("|---|---|---|---|---|---|");
        foreach (var (name, part) in new[] { ("fit", split.Fit), ("test", split.Test) })
        {
            var s = PlacementEvaluation.Evaluate(placement, part);
            var r = PlacementEvaluation.Evaluate(baseline, part);
            sb.AppendLine(inv, $"| {name} | {s.Steps} | {s.MaxOverMean:0.000} | {s.StepMaxOverMean:0.000} | {r.MaxOverMean:0.000} | {r.StepMaxOverMean:0.000} |");
        }
        return sb.ToString();
    }
}
