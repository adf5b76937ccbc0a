using System.CommandLine;
using eMoE.Cli.Bench;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Scheduling;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe bench</c>: system-level benchmarks on the shipped model's evaluation prompts.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.CacheDevice();
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
            Description = "Missing-expert modes to run: load, reroute", DefaultValueFactory = _ => [MissMode.Load, MissMode.Reroute], AllowMultipleArgumentsPerToken = true,
            CustomParser = result =>
            {
                try
                {
                    return [.. result.Tokens.Select(t => CommonOptions.ParseMissMode(t.Value))];
                }
                catch (ArgumentException e)
                {
                    result.AddError($"--modes: {e.Message}");
                    return [];
                }
            },
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
        var hybridPrompts = new Option<int>("--prompts") { Description = "Evaluation prompts decoded per configuration (tasks interleaved)", DefaultValueFactory = _ => 5 };
        var hybridTokens = new Option<int>("--tokens") { Description = "Tokens generated per prompt", DefaultValueFactory = _ => 32 };
        var hybridBudgets = new Option<int[]>("--budgets")
        {
            Description = "Expert memory, in percent of expert bytes", DefaultValueFactory = _ => [25, 50, 75], AllowMultipleArgumentsPerToken = true,
        };
        var links = new Option<string[]>("--links")
        {
            Description = "Modelled links: pcie4 (PCIe 4.0 x16, 25 GB/s effective), pcie5 (PCIe 5.0 x16, 50 GB/s effective) or a bandwidth such as 12GB",
            DefaultValueFactory = _ => ["pcie4", "pcie5"], AllowMultipleArgumentsPerToken = true,
        };
        var deviceBandwidth = new Option<string>("--device-bandwidth")
        {
            Description = "Modelled memory bandwidth of the GPU running resident experts (default 3.35TB: an H100 SXM)", DefaultValueFactory = _ => "3.35TB",
        };
        var hybridOutput = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md and results.json", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "hybrid")),
        };
        var hybrid = new Command("hybrid",
            "Hybrid expert execution on modelled links: expert cost per decoded token for copy-only, host-only and auto at each budget and link")
        {
            model, device, hybridPrompts, hybridTokens, hybridBudgets, links, deviceBandwidth, hybridOutput,
        };
        hybrid.SetAction(async (parse, cancel) =>
        {
            if (parse.GetValue(hybridPrompts) < 1 || parse.GetValue(hybridTokens) < 1) throw new CliException("--prompts and --tokens must be positive");
            var percents = parse.GetValue(hybridBudgets)!;
            if (percents.Length == 0 || percents.Any(b => b <= 0 || b >= 100)) throw new CliException("--budgets takes percentages between 1 and 99");
            var linkList = parse.GetValue(links)!.Select(name => name.ToLowerInvariant() switch
            {
                "pcie4" => ("PCIe 4.0 x16", 25e9),
                "pcie5" => ("PCIe 5.0 x16", 50e9),
                _ => (name, (double)ByteSize.Parse(name, "--links")),
            }).ToList();
            var options = new HybridBenchOptions(parse.GetValue(hybridPrompts), parse.GetValue(hybridTokens), [.. percents.Distinct().Order().Select(b => b / 100.0)],
                linkList, ByteSize.Parse(parse.GetValue(deviceBandwidth)!, "--device-bandwidth"));
            var bench = new HybridBenchmark(CommonOptions.ResolveModel(parse.GetValue(model)), parse.GetValue(device), options, Console.Error);
            Console.Out.Write(await bench.RunAsync(parse.GetValue(hybridOutput)!.FullName, cancel));
            return 0;
        });
        return new Command("bench", "System benchmarks on the shipped model") { residency, prediction, engine, hybrid, Serve(model, device), Http(model), Speed(model), Placement() };
    }

    private static Command Speed(Option<string?> model)
    {
        var speedDevice = CommonOptions.Device();
        speedDevice.DefaultValueFactory = _ => DeviceKind.Cpu;
        var threads = CommonOptions.Threads();
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length of the prefill test (pseudo-random ids, as llama_speed.py's)", DefaultValueFactory = _ => 128 };
        var genTokens = new Option<int>("--gen-tokens") { Description = "Decode steps of the decode test (greedy, end of sequence ignored)", DefaultValueFactory = _ => 128 };
        var reps = new Option<int>("--reps") { Description = "Timed runs after one warm-up; medians are reported", DefaultValueFactory = _ => 3 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object (the keys of llama_speed.py's: prefill_tok_s, decode_tok_s, ...; plus peak_rss_bytes, model_bytes)" };
        var speed = new Command("speed",
            "llama-bench-style speed, measured as the llama.cpp peer harness does: prefill tok/s of one prompt of fixed pseudo-random ids, " +
            "decode tok/s of greedy single-token steps (end of sequence ignored); medians of --reps runs after a warm-up; peak RSS")
        {
            model, speedDevice, threads, promptTokens, genTokens, reps, json,
        };
        speed.SetAction(async (parse, cancel) =>
        {
            int np = parse.GetValue(promptTokens), ng = parse.GetValue(genTokens), r = parse.GetValue(reps);
            if (np < 1 || ng < 1 || r < 1) throw new CliException("--prompt-tokens, --gen-tokens and --reps must be at least 1");
            if (parse.GetValue(threads) is int t && t < 1) throw new CliException($"--threads must be at least 1, got {t}");
            var bench = new SpeedBenchmark(CommonOptions.ResolveModel(parse.GetValue(model)),
                new SpeedBenchOptions(parse.GetValue(speedDevice), parse.GetValue(threads), np, ng, r), Console.Error);
            var result = await bench.RunAsync(cancel);
            Console.Out.Write(parse.GetValue(json) ? SpeedBenchmark.Json(result) + Environment.NewLine : SpeedBenchmark.Table(result));
            return 0;
        });
        return speed;
    }

    private static Command Placement()
    {
        var traces = new Option<string[]>("--trace")
        {
            Description = "Routing traces (JSON Lines), each FILE or NAME=FILE (NAME labels its tables and plots; default: the file's directory name, " +
                "or its name for files not called trace.jsonl)",
            Required = true, AllowMultipleArgumentsPerToken = true,
        };
        var devices = new Option<int[]>("--devices")
        {
            Description = "Device counts to spread each layer's experts over", DefaultValueFactory = _ => [2, 4, 8], AllowMultipleArgumentsPerToken = true,
        };
        var budget = new Option<int>("--cache-budget")
        {
            Description = "Each device's expert cache, in percent of the experts the placement puts on it", DefaultValueFactory = _ => 50,
        };
        var model = new Option<string?>("--model")
        {
            Description = "Model whose expert size gives the caches' peak memory for traces of its shape; default: the shipped model",
        };
        var expertBytes = new Option<string?>("--expert-bytes")
        {
            Description = "Bytes of one expert (e.g. 336MiB) for traces that do not match --model; without it their peak cache memory is in experts",
        };
        var output = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md, results.json and the plots",
            DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "placement")),
        };
        var command = new Command("placement",
            "Expert placement across devices: round-robin, greedy, greedy_corr and auto (chosen by validation inside the fit half) at each device count, fitted on the first half of each trace; " +
            "max/mean device load over the trace and per step (batch), overall and per layer, on both halves; per-device cache hit rate and peak memory")
        {
            traces, devices, budget, model, expertBytes, output,
        };
        command.SetAction(parse =>
        {
            var counts = parse.GetValue(devices)!;
            if (counts.Length == 0 || counts.Any(d => d < 1)) throw new CliException("--devices takes one or more device counts, each at least 1");
            int percent = parse.GetValue(budget);
            if (percent <= 0 || percent > 100) throw new CliException($"--cache-budget takes a percentage between 1 and 100, got {percent}");
            var list = parse.GetValue(traces)!.Select(ParseTrace).ToList();
            var duplicate = list.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
            if (duplicate is not null) throw new CliException($"--trace: two traces are named '{duplicate.Key}'; name them with NAME=FILE");
            string? modelDir = parse.GetValue(model);
            if (modelDir is null)
            {
                try
                {
                    modelDir = CommonOptions.ResolveModel(null);
                }
                catch (CliException)
                {
                    modelDir = null; // no shipped model here: peak memory in experts unless --expert-bytes
                }
            }
            long? bytes = parse.GetValue(expertBytes) is { } text ? eMoE.Compute.ByteSize.Parse(text, "--expert-bytes") : null;
            var bench = new PlacementBenchmark(list, [.. counts.Distinct().Order()], percent / 100.0, modelDir, bytes, Console.Error);
            Console.Out.Write(bench.Run(parse.GetValue(output)!.FullName));
            return 0;
        });
        return command;
    }

    /// <summary>A --trace value: FILE or NAME=FILE.</summary>
    private static PlacementTrace ParseTrace(string spec)
    {
        int eq = spec.IndexOf('=', StringComparison.Ordinal);
        if (eq > 0 && spec[..eq].All(c => char.IsLetterOrDigit(c) || c is '_' or '-' or '.'))
        {
            if (eq == spec.Length - 1) throw new CliException($"--trace '{spec}': expected NAME=FILE");
            return new PlacementTrace(spec[..eq], spec[(eq + 1)..]);
        }
        string name = Path.GetFileName(spec) == "trace.jsonl"
            ? Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(spec))) ?? "trace"
            : Path.GetFileNameWithoutExtension(spec);
        return new PlacementTrace(name, spec);
    }

    /// <summary><c>emoe bench serve</c>: open-loop serving of the evaluation prompts per scheduler x expert memory x batch limit x rate.</summary>
    private static Command Serve(Option<string?> model, Option<DeviceSpec> device)
    {
        var perTask = new Option<int>("--prompts-per-task") { Description = "Evaluation prompts per task (tasks interleaved)", DefaultValueFactory = _ => 8 };
        var rates = new Option<double[]>("--rates")
        {
            Description = "Arrival rates in requests/s; default 0.5, 1, 2, 4 and 8 x the capacity measured by the calibration (1 / mean unloaded e2e)",
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

    /// <summary><c>emoe bench http</c>: a bounded load test of the HTTP server, hosted in process on loopback.</summary>
    private static Command Http(Option<string?> model)
    {
        // The server's device option (as emoe serve's): the host backend unless a GPU is present; the server needs no expert cache.
        var device = CommonOptions.Device();
        var requests = new Option<int>("--requests") { Description = "Requests of the load phase", DefaultValueFactory = _ => 200 };
        var concurrency = new Option<int>("--concurrency") { Description = "Clients: at most this many requests in flight", DefaultValueFactory = _ => 32 };
        var rate = new Option<double?>("--rate")
        {
            Description = $"Poisson arrival rate of the load phase in requests/s; default {HttpBenchmark.LoadMultiple} x the capacity c = 1 / mean unloaded e2e measured by a short calibration",
        };
        var maxTokens = new Option<int?>("--max-tokens") { Description = "Cap on each request's max_tokens (default: its task's, from the evaluation set)" };
        var maxBatch = new Option<int>("--max-batch") { Description = "The server's batch limit", DefaultValueFactory = _ => 16 };
        var maxWaiting = new Option<int>("--max-waiting")
        {
            Description = "Requests the server lets wait beyond the running ones (the next gets 429, counted as a clean error)", DefaultValueFactory = _ => 64,
        };
        var cancelFraction = new Option<double>("--cancel-fraction")
        {
            Description = "Share of all requests the client cancels mid-stream, drawn among the streamed half (0 to 0.5)", DefaultValueFactory = _ => 0.2,
        };
        var lightRequests = new Option<int>("--light-requests")
        {
            Description = "Requests of the light-load TTFT comparison, run in process and over HTTP", DefaultValueFactory = _ => 20,
        };
        var lightRate = new Option<double?>("--light-rate") { Description = $"Arrival rate of the light-load phase in requests/s; default {HttpBenchmark.LightMultiple} x c" };
        var seed = new Option<int>("--seed") { Description = "Seed of the arrivals, the request mix and the cancellation points", DefaultValueFactory = _ => 0 };
        var timeout = new Option<double>("--timeout") { Description = "Bound on the whole run in seconds; requests not complete by then count as lost", DefaultValueFactory = _ => 900 };
        var output = new Option<DirectoryInfo>("--out")
        {
            Description = "Where to write results.md and results.json", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("bench", "results", "http")),
        };
        var command = new Command("http",
            "Bounded HTTP load test on loopback: the server in process, Poisson arrivals from a pool of clients, chat and text completions, streamed or not, " +
            "some cancelled mid-stream; outcomes (0 lost), /metrics counts, free slots, throughput, TTFT / TPOT / e2e p50/p99, light-load TTFT in process vs HTTP")
        {
            model, device, requests, concurrency, rate, maxTokens, maxBatch, maxWaiting, cancelFraction, lightRequests, lightRate, seed, timeout, output,
        };
        command.SetAction(async (parse, cancel) =>
        {
            if (parse.GetValue(requests) < 1) throw new CliException($"--requests must be at least 1, got {parse.GetValue(requests)}");
            if (parse.GetValue(concurrency) < 1) throw new CliException($"--concurrency must be at least 1, got {parse.GetValue(concurrency)}");
            foreach (var (name, value) in new[] { ("--rate", parse.GetValue(rate)), ("--light-rate", parse.GetValue(lightRate)) })
                if (value is double r && (!(r > 0) || double.IsInfinity(r))) throw new CliException($"{name} takes a positive request rate, got '{r}'");
            if (parse.GetValue(maxTokens) is int m && m < 1) throw new CliException($"--max-tokens must be at least 1, got {m}");
            if (parse.GetValue(maxBatch) < 1) throw new CliException($"--max-batch must be at least 1, got {parse.GetValue(maxBatch)}");
            if (parse.GetValue(maxWaiting) < 0) throw new CliException($"--max-waiting must be at least 0, got {parse.GetValue(maxWaiting)}");
            double fraction = parse.GetValue(cancelFraction);
            if (!(fraction is >= 0 and <= 0.5)) throw new CliException($"--cancel-fraction must be between 0 and 0.5 (cancellations are drawn among the streamed half), got '{fraction}'");
            if (parse.GetValue(lightRequests) < 1) throw new CliException($"--light-requests must be at least 1, got {parse.GetValue(lightRequests)}");
            double seconds = parse.GetValue(timeout);
            if (!(seconds > 0) || double.IsInfinity(seconds)) throw new CliException($"--timeout must be a positive number of seconds, got '{seconds}'");
            var options = new HttpBenchOptions(parse.GetValue(requests), parse.GetValue(concurrency), parse.GetValue(rate), parse.GetValue(maxTokens), parse.GetValue(maxBatch),
                parse.GetValue(maxWaiting), fraction, parse.GetValue(lightRequests), parse.GetValue(lightRate), parse.GetValue(seed), TimeSpan.FromSeconds(seconds));
            var bench = new HttpBenchmark(CommonOptions.ResolveModel(parse.GetValue(model)), parse.GetValue(device), options, Console.Error);
            var (markdown, passed) = await bench.RunAsync(parse.GetValue(output)!.FullName, cancel);
            Console.Out.Write(markdown);
            if (passed) return 0;
            Console.Error.WriteLine("emoe: bench http: requests were lost or /metrics does not add up (see results.md)");
            return 1;
        });
        return command;
    }
}
