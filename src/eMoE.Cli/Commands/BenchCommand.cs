using System.CommandLine;
using eMoE.Cli.Bench;
using eMoE.Experts;
using eMoE.Scheduling;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe bench</c>: system-level benchmarks on the shipped model's evaluation prompts.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var perTask = new Option<int>("--prompts-per-task") { Description = "Evaluation prompts per task", DefaultValueFactory = _ => 10 };
        var speedPrompts = new Option<int>("--speed-prompts") { Description = "Prompts run for real at each budget to time decode", DefaultValueFactory = _ => 10 };
        var output = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md, results.json, hit_rate.svg and trace.jsonl",
            DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "residency")),
        };
        var residency = new Command("residency",
            "Expert cache hit rate and bytes copied per token for each policy at 12.5/25/50/75% of expert bytes, beside the Belady bound; decode speed per budget")
        {
            model, device, perTask, speedPrompts, output,
        };
        residency.SetAction(async (parse, cancel) =>
        {
            if (parse.GetValue(perTask) <= 0 || parse.GetValue(speedPrompts) <= 0)
                throw new CliException("--prompts-per-task and --speed-prompts must be positive");
            var bench = new ResidencyBenchmark(CommonOptions.ResolveModel(parse.GetValue(model)), parse.GetValue(device),
                parse.GetValue(perTask), parse.GetValue(speedPrompts), Console.Error);
            Console.Out.Write(await bench.RunAsync(parse.GetValue(output)!.FullName, cancel));
            return 0;
        });
        var trace = new Option<FileInfo>("--trace") { Description = "Routing trace (JSON Lines, e.g. the trace.jsonl of `emoe bench residency --out DIR`)", Required = true };
        var invocations = new Option<int>("--timing-invocations") { Description = "Predict calls timed per design", DefaultValueFactory = _ => 10_000 };
        var predictionOutput = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md and results.json",
            DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "prediction")),
        };
        var prediction = new Command("prediction",
            "Expert predictors on a recorded trace: top-k F1 per task, coverage at 25/50/75% vs oracle and static set, periodic invocation, cost")
        {
            trace, invocations, predictionOutput,
        };
        prediction.SetAction(parse =>
        {
            if (parse.GetValue(invocations) <= 0) throw new CliException("--timing-invocations must be positive");
            var bench = new PredictionBenchmark(parse.GetValue(trace)!.FullName, parse.GetValue(invocations), Console.Error);
            Console.Out.Write(bench.Run(parse.GetValue(predictionOutput)!.FullName));
            return 0;
        });
        var enginePerTask = new Option<int>("--prompts-per-task") { Description = "Evaluation prompts per task in the stream", DefaultValueFactory = _ => 8 };
        var textTokens = new Option<int>("--text-tokens") { Description = "Tokens of each task's held-out test text scored per configuration", DefaultValueFactory = _ => 1024 };
        var profile = CommonOptions.LayerProfile();
        var width = CommonOptions.PregateWidth();
        var pregateWeights = CommonOptions.PregateWeights();
        var engineOutput = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md, results.json and perplexity.svg",
            DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "engine")),
        };
        var modes = new Option<MissMode[]>("--modes")
        {
            Description = "Missing-expert modes to run", DefaultValueFactory = _ => [MissMode.Load, MissMode.Reroute], AllowMultipleArgumentsPerToken = true,
        };
        var rerouteLimit = CommonOptions.RerouteMaxWeight();
        rerouteLimit.Description = "Also run the predictor in reroute mode loading absent experts weighted above this (see generate --reroute-max-weight)";
        var budgets = new Option<int[]>("--budgets")
        {
            Description = "Expert budgets to run, in percent of expert bytes (the every-N sweep runs at 50 % in load mode and 60 % in reroute mode when those are among them)",
            DefaultValueFactory = _ => [25, 50, 60, 75], AllowMultipleArgumentsPerToken = true,
        };
        var predictorOnly = new Option<bool>("--predictor-only") { Description = "Run only the predictor configurations (and the all-resident reference)" };
        var engine = new Command("engine",
            "The real engine per {LRU, LIFO, predictor, predictor + pre-gate} x {load, reroute} x budget (default 25/50/60/75%): hit rate, bytes, stall, " +
            "greedy agreement and test-text perplexity vs all-resident; Belady bound; predictor every 1/5/10/20/40 prompts")
        {
            model, device, enginePerTask, textTokens, profile, width, pregateWeights, modes, budgets, predictorOnly, rerouteLimit, engineOutput,
        };
        engine.SetAction(async (parse, cancel) =>
        {
            if (parse.GetValue(enginePerTask) <= 0 || parse.GetValue(textTokens) < 2)
                throw new CliException("--prompts-per-task must be positive and --text-tokens at least 2");
            var percents = parse.GetValue(budgets)!;
            if (percents.Length == 0) throw new CliException("--budgets needs at least one percentage");
            foreach (int b in percents)
                if (b <= 0 || b >= 100) throw new CliException($"--budgets takes percentages between 1 and 99, got '{b}'");
            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var profileFile = parse.GetValue(profile);
            if (profileFile is { Exists: false }) throw new CliException($"{profileFile.FullName}: not found");
            int topK = eMoE.Model.ModelConfig.Load(directory).TopK;
            var options = new EngineBenchOptions(parse.GetValue(enginePerTask), parse.GetValue(textTokens),
                profileFile is null ? null : eMoE.Prediction.LayerSensitivityProfile.Load(profileFile.FullName), parse.GetValue(width) ?? topK,
                CommonOptions.LoadPregate(parse.GetValue(pregateWeights)), parse.GetValue(modes)!.ToHashSet(), parse.GetValue(predictorOnly),
                parse.GetValue(rerouteLimit), [.. percents.Distinct().Order().Select(b => b / 100.0)]);
            CommonOptions.CheckRerouteMaxWeight(options.RerouteMaxWeight, MissMode.Reroute);
            var bench = new QualityBenchmark(directory, parse.GetValue(device), options, Console.Error);
            Console.Out.Write(await bench.RunAsync(parse.GetValue(engineOutput)!.FullName, cancel));
            return 0;
        });
        var serve = Serve(model, device);
        return new Command("bench", "System benchmarks on the shipped model") { residency, prediction, engine, serve };
    }

    /// <summary><c>emoe bench serve</c>: open-loop serving of the evaluation prompts per scheduler x expert memory x batch limit x rate.</summary>
    private static Command Serve(Option<string?> model, Option<eMoE.Compute.DeviceKind> device)
    {
        var perTask = new Option<int>("--prompts-per-task") { Description = "Evaluation prompts per task (tasks interleaved)", DefaultValueFactory = _ => 8 };
        var rates = new Option<double[]>("--rates")
        {
            Description = "Arrival rates in requests/s; default 0.5, 1, 2 and 4 x the capacity measured by the calibration (1 / mean unloaded e2e)",
            AllowMultipleArgumentsPerToken = true,
        };
        var budgets = new Option<int[]>("--budgets")
        {
            Description = "Expert memory in percent of expert bytes", DefaultValueFactory = _ => [25, 50, 100], AllowMultipleArgumentsPerToken = true,
        };
        var batches = new Option<int[]>("--max-batch")
        {
            Description = "Batch limits (most sequences running at once)", DefaultValueFactory = _ => [1, 4, 16], AllowMultipleArgumentsPerToken = true,
        };
        var schedulers = new Option<SchedulerKind[]>("--schedulers")
        {
            Description = "Schedulers to compare: fcfs, emoe", DefaultValueFactory = _ => [SchedulerKind.Fcfs, SchedulerKind.Emoe], AllowMultipleArgumentsPerToken = true,
        };
        var seed = new Option<int>("--seed") { Description = "Seed of the Poisson arrival times", DefaultValueFactory = _ => 0 };
        var output = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md, results.json, slo_attainment.svg and p99_latency.svg",
            DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "serve")),
        };
        var serve = new Command("serve",
            "In-process serving benchmark: open-loop Poisson arrivals of the evaluation prompts with per-task SLOs, per scheduler x expert memory x max batch x rate: " +
            "throughput, goodput, SLO attainment, TTFT / TPOT / e2e percentiles, batch, KV and expert memory, hit rate, bytes copied")
        {
            model, device, perTask, rates, budgets, batches, schedulers, seed, output,
        };
        serve.SetAction(async (parse, cancel) =>
        {
            if (parse.GetValue(perTask) <= 0) throw new CliException("--prompts-per-task must be positive");
            var rateList = parse.GetValue(rates) is { Length: > 0 } given ? given : null;
            foreach (double r in rateList ?? [])
                if (!(r > 0) || double.IsInfinity(r)) throw new CliException($"--rates takes positive request rates, got '{r}'");
            var percents = parse.GetValue(budgets)!;
            if (percents.Length == 0) throw new CliException("--budgets needs at least one percentage");
            foreach (int b in percents)
                if (b <= 0 || b > 100) throw new CliException($"--budgets takes percentages between 1 and 100, got '{b}'");
            var batchList = parse.GetValue(batches)!;
            if (batchList.Length == 0 || batchList.Any(b => b < 1)) throw new CliException("--max-batch takes batch limits of at least 1");
            var schedulerList = parse.GetValue(schedulers)!;
            if (schedulerList.Length == 0) throw new CliException("--schedulers needs at least one of fcfs, emoe");
            var options = new ServeBenchOptions(parse.GetValue(perTask), rateList is null ? null : [.. rateList.Distinct().Order()], [.. percents.Distinct().Order()],
                [.. batchList.Distinct().Order()], [.. schedulerList.Distinct()], parse.GetValue(seed));
            var bench = new ServeBenchmark(CommonOptions.ResolveModel(parse.GetValue(model)), parse.GetValue(device), options, Console.Error);
            Console.Out.Write(await bench.RunAsync(parse.GetValue(output)!.FullName, cancel));
            return 0;
        });
        return serve;
    }
}
