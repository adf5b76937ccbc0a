using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Model;
using eMoE.Scheduling;

namespace eMoE.Cli.Bench;

/// <summary>What `emoe bench serve` runs.</summary>
/// <param name="PromptsPerTask">Evaluation prompts per task (tasks interleaved).</param>
/// <param name="Rates">Arrival rates in requests/s; null: 0.5, 1, 2, 4 and 8 times the calibrated capacity.</param>
/// <param name="Budgets">Expert memory in percent of expert bytes, ascending.</param>
/// <param name="MaxBatches">Batch limits, ascending.</param>
/// <param name="Schedulers">Schedulers to compare.</param>
/// <param name="Seed">Seed of the arrival times.</param>
internal sealed record ServeBenchOptions(int PromptsPerTask, IReadOnlyList<double>? Rates, IReadOnlyList<int> Budgets, IReadOnlyList<int> MaxBatches,
    IReadOnlyList<SchedulerKind> Schedulers, int Seed);

/// <summary>One request of the workload: an evaluation prompt's ids, its task, its own max_tokens and (after calibration) its task's SLO.</summary>
internal sealed record ServeRequest(string Task, IReadOnlyList<int> PromptIds, int MaxTokens, Slo? Slo = null);

/// <summary>What one served request did, in seconds.</summary>
/// <param name="Task">The request's task.</param>
/// <param name="Slo">Its SLO (none in the calibration).</param>
/// <param name="ArrivalS">When it was due, on the run's clock.</param>
/// <param name="SubmittedS">When it was submitted, on the run's clock (later than due when the machine was busy).</param>
/// <param name="TtftS">
/// Engine clock, from the engine taking the request to its first sampled token: queueing inside the
/// engine counts, the consumer's wake-up latency does not.
/// </param>
/// <param name="E2eS">Engine clock, from the engine taking the request to its last sampled token.</param>
/// <param name="Tokens">Tokens sampled, an end-of-sequence token included (it took a step like any other).</param>
/// <param name="Output">The streamed token ids (no end-of-sequence token).</param>
internal sealed record ServedRequest(string Task, Slo? Slo, double ArrivalS, double SubmittedS, double TtftS, double E2eS, int Tokens, IReadOnlyList<int> Output)
{
    /// <summary>Mean time per output token after the first; null for a single token (as vLLM's bench serve).</summary>
    public double? TpotS => Tokens > 1 ? (E2eS - TtftS) / (Tokens - 1) : null;

    /// <summary>When its last token came, on the run's clock.</summary>
    public double CompletedS => SubmittedS + E2eS;

    /// <summary>Whether it met every part of its SLO (no SLO: met).</summary>
    public bool MetSlo => MetTtft && MetTpot;

    /// <summary>Whether it met the first-token part of its SLO (a null TPOT counts as met).</summary>
    public bool MetTtft => Slo?.Met(TimeSpan.FromSeconds(TtftS), null) ?? true;

    /// <summary>Whether it met the per-token part of its SLO (a zero TTFT counts as met).</summary>
    public bool MetTpot => Slo?.Met(TimeSpan.Zero, TpotS is double t ? TimeSpan.FromSeconds(t) : null) ?? true;
}

/// <summary>One task's unloaded service times (batch 1, every expert resident, nothing else running) and the SLO derived from them.</summary>
internal sealed record TaskCalibration(string Task, int Requests, double TtftS, double? TpotS, double E2eS, double Tokens)
{
    /// <summary>The SLO is a multiple of the unloaded times: TTFT within 5x, TPOT within 3x.</summary>
    public const double TtftMultiple = 5, TpotMultiple = 3;

    /// <summary>TTFT &lt;= 5 x unloaded TTFT, TPOT &lt;= 3 x unloaded TPOT (no TPOT part when no request of the task made two tokens).</summary>
    public Slo Slo => new()
    {
        TimeToFirstToken = TimeSpan.FromSeconds(TtftMultiple * TtftS),
        TimePerOutputToken = TpotS is double tpot ? TimeSpan.FromSeconds(TpotMultiple * tpot) : null,
    };
}

/// <summary>The calibration: per task, and the capacity c = 1 / mean unloaded e2e that the default rates are multiples of.</summary>
internal sealed record Calibration(IReadOnlyList<TaskCalibration> Tasks, double MeanE2eS)
{
    public double CapacityPerSecond => 1 / MeanE2eS;

    public static Calibration From(IReadOnlyList<ServedRequest> served)
    {
        var tasks = served.GroupBy(r => r.Task, StringComparer.Ordinal).Select(g =>
        {
            var tpots = g.Where(r => r.TpotS is not null).Select(r => r.TpotS!.Value).ToList();
            return new TaskCalibration(g.Key, g.Count(), g.Average(r => r.TtftS), tpots.Count > 0 ? tpots.Average() : null, g.Average(r => r.E2eS),
                g.Average(r => (double)r.Tokens));
        }).ToList();
        return new Calibration(tasks, served.Average(r => r.E2eS));
    }

    public Slo SloOf(string task) => Tasks.First(t => t.Task == task).Slo;
}

/// <summary>
/// Poisson arrivals as vLLM's bench serve draws them: the first request at 0, then exponential gaps
/// of mean 1/rate. The gaps are drawn once at rate 1 and divided by each rate, so every rate (and
/// every configuration at a rate) sees the same arrival pattern, only faster or slower.
/// </summary>
internal sealed class PoissonArrivals
{
    private readonly double[] _unit;

    public PoissonArrivals(int count, int seed)
    {
        var random = new Random(seed);
        _unit = new double[count];
        for (int i = 1; i < count; i++) _unit[i] = _unit[i - 1] - Math.Log(1 - random.NextDouble());
    }

    /// <summary>Arrival times in seconds at <paramref name="rate"/> requests per second.</summary>
    public double[] At(double rate) => [.. _unit.Select(t => t / rate)];
}

/// <summary>Serves requests on a loaded model through <see cref="MoeModel.GenerateIdsAsync"/>: one alone, or an open-loop stream.</summary>
internal static class ServeClient
{
    /// <summary>
    /// Submits every request at its arrival time whether or not earlier ones have finished (open
    /// loop), and waits for all. A submission the machine was too busy to make on time goes late; the
    /// lateness is in <see cref="ServedRequest.SubmittedS"/>.
    /// </summary>
    public static async Task<List<ServedRequest>> OpenLoopAsync(MoeModel model, IReadOnlyList<ServeRequest> requests, IReadOnlyList<double> arrivals,
        CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        var inFlight = new List<Task<ServedRequest>>(requests.Count);
        for (int i = 0; i < requests.Count; i++)
        {
            var wait = TimeSpan.FromSeconds(arrivals[i]) - clock.Elapsed;
            if (wait > TimeSpan.Zero) await Task.Delay(wait, cancel).ConfigureAwait(false);
            inFlight.Add(ServeAsync(model, requests[i], arrivals[i], clock, cancel));
        }
        return [.. await Task.WhenAll(inFlight).ConfigureAwait(false)];
    }

    /// <summary>
    /// Serves one request greedily, stopping at end of sequence. The engine takes it during this call
    /// (an async iterator runs up to its first wait synchronously), so it is submitted when called.
    /// </summary>
    public static async Task<ServedRequest> ServeAsync(MoeModel model, ServeRequest request, double arrivalS, Stopwatch clock, CancellationToken cancel)
    {
        var options = new GenerationOptions { MaxTokens = request.MaxTokens, Task = request.Task, Slo = request.Slo };
        var stats = new GenerationStats();
        var output = new List<int>();
        double submitted = clock.Elapsed.TotalSeconds;
        await foreach (int id in model.GenerateIdsAsync(request.PromptIds, options, stats, cancel).ConfigureAwait(false)) output.Add(id);
        cancel.ThrowIfCancellationRequested();
        double ttft = stats.TimeToFirstToken.TotalSeconds;
        return new ServedRequest(request.Task, request.Slo, arrivalS, submitted, ttft, ttft + stats.DecodeTime.TotalSeconds, stats.GeneratedTokens, output);
    }
}

/// <summary>
/// One (scheduler, budget, max batch, rate) run: its requests, the engine's and expert cache's
/// counters over them, and the machine's load average when it ended.
/// </summary>
internal sealed record ServeRun(SchedulerKind Scheduler, int BudgetPercent, int MaxBatch, double Rate, IReadOnlyList<ServedRequest> Requests,
    EngineStats Engine, long ExpertRequests, long ExpertHits, long BytesCopied, long SlotBytes, long PeakDeviceBytes, double? LoadAverage)
{
    public string SchedulerName => Scheduler.ToString().ToLowerInvariant();
}

/// <summary>
/// The machine's 1-minute load average (Linux /proc/loadavg; null elsewhere). Latencies are only
/// comparable on an otherwise idle machine, so every run records it: the benchmark itself keeps
/// about one or two processors busy, much more means other work shared the machine.
/// </summary>
internal static class MachineLoad
{
    public static double? OneMinute()
    {
        try
        {
            string text = File.ReadAllText("/proc/loadavg");
            return double.TryParse(text.Split(' ')[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double load) ? load : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>Mean and percentiles of one latency (numpy's linear interpolation between closest ranks, as vLLM reports them).</summary>
internal sealed record LatencySummary(double Mean, double P50, double P90, double P99)
{
    /// <summary>The summary of <paramref name="values"/>, or null when there are none.</summary>
    public static LatencySummary? Of(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return null;
        return new LatencySummary(sorted.Average(), Percentile(sorted, 50), Percentile(sorted, 90), Percentile(sorted, 99));
    }

    private static double Percentile(double[] sorted, double percent)
    {
        double rank = percent / 100 * (sorted.Length - 1);
        int below = (int)Math.Floor(rank), above = (int)Math.Ceiling(rank);
        return sorted[below] + (sorted[above] - sorted[below]) * (rank - below);
    }
}

/// <summary>
/// `emoe bench serve`: an in-process serving benchmark of the batched engine, after vLLM's bench
/// serve. The shipped model's evaluation prompts (tasks interleaved) arrive open-loop as a Poisson
/// process, each with its task's SLO, at several rates, for every scheduler x expert memory x batch
/// limit; each run loads a fresh model. A calibration first measures each task unloaded, which sets
/// the SLOs and the default rates.
/// </summary>
internal sealed class ServeBenchmark(string modelDirectory, DeviceSpec device, ServeBenchOptions options, TextWriter log)
{
    /// <summary>
    /// Default rates as multiples of the calibrated capacity (measured at batch 1): light load to past
    /// saturation. 8x because a batched engine absorbs far more than its batch-1 capacity: with the tiled
    /// kernels, batch 16 at 100 % expert memory still met 95 % of SLOs at 4x on the CPU accelerator.
    /// </summary>
    private static readonly double[] LoadMultiples = [0.5, 1, 2, 4, 8];

    public async Task<string> RunAsync(string outDirectory, CancellationToken cancel)
    {
        var prompts = EvalPrompts.LoadInterleaved(modelDirectory, options.PromptsPerTask);
        var tokenizer = MoeTokenizer.Load(modelDirectory);
        // The special tokens the tokenizer's configuration adds (BOS), as generate does.
        var requests = prompts.Select(p => new ServeRequest(p.Task, tokenizer.Encode(p.Prompt, addSpecialTokens: true), p.MaxTokens)).ToList();
        var expected = EvalPrompts.MeanMaxTokens(modelDirectory);
        log.WriteLine($"{requests.Count} requests ({options.PromptsPerTask} per task), device {device}");
        if (MachineLoad.OneMinute() is double load && load > Environment.ProcessorCount / 2.0)
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"warning: 1-minute load average {load:0.0} on {Environment.ProcessorCount} processors: other work is running, latencies will not be clean"));

        var (calibration, deviceName) = await CalibrateAsync(requests, expected, cancel);
        requests = [.. requests.Select(r => r with { Slo = calibration.SloOf(r.Task) })];
        var rates = options.Rates ?? [.. LoadMultiples.Select(m => m * calibration.CapacityPerSecond)];
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"calibration: mean unloaded e2e {calibration.MeanE2eS * 1000:0.0} ms, capacity {calibration.CapacityPerSecond:0.###} req/s; rates {string.Join(", ", rates.Select(r => r.ToString("0.###", CultureInfo.InvariantCulture)))} req/s"));

        var arrivals = new PoissonArrivals(requests.Count, options.Seed);
        var runs = new List<ServeRun>();
        foreach (int budget in options.Budgets)
        {
            foreach (int batch in options.MaxBatches)
            {
                foreach (double rate in rates)
                {
                    // The schedulers compared at one point run back to back, so drift of the machine hits both alike.
                    foreach (var scheduler in options.Schedulers)
                    {
                        var run = await RunOneAsync(scheduler, budget, batch, rate, requests, arrivals.At(rate), expected, cancel);
                        runs.Add(run);
                        log.WriteLine(Describe(run));
                    }
                }
            }
        }

        var report = new ServeReport(modelDirectory, deviceName, options, requests.Count, calibration, rates, runs);
        Directory.CreateDirectory(outDirectory);
        File.WriteAllText(Path.Combine(outDirectory, "results.json"), report.Json());
        foreach (var (file, svg) in report.Charts()) File.WriteAllText(Path.Combine(outDirectory, file), svg);
        string markdown = report.Markdown();
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), markdown);
        return markdown;
    }

    /// <summary>Every request once, one after another, at batch 1 with every expert resident (FCFS): the unloaded times per task.</summary>
    private async Task<(Calibration Calibration, string DeviceName)> CalibrateAsync(IReadOnlyList<ServeRequest> requests,
        IReadOnlyDictionary<string, double> expected, CancellationToken cancel)
    {
        using var model = Load(SchedulerKind.Fcfs, 100, 1, expected);
        await WarmUpAsync(model, requests[0], cancel);
        var clock = Stopwatch.StartNew();
        var served = new List<ServedRequest>();
        foreach (var request in requests) served.Add(await ServeClient.ServeAsync(model, request, clock.Elapsed.TotalSeconds, clock, cancel));
        return (Calibration.From(served), $"{model.Device.Kind}: {model.Device.Name}");
    }

    private async Task<ServeRun> RunOneAsync(SchedulerKind scheduler, int budget, int batch, double rate, IReadOnlyList<ServeRequest> requests,
        double[] arrivals, IReadOnlyDictionary<string, double> expected, CancellationToken cancel)
    {
        using var model = Load(scheduler, budget, batch, expected);
        await WarmUpAsync(model, requests[0], cancel);
        var before = model.ExpertStats.Overall;
        var engineBefore = model.EngineStats;
        var served = await ServeClient.OpenLoopAsync(model, requests, arrivals, cancel);
        var experts = model.ExpertStats;
        var after = model.EngineStats;
        // The warm-up's single short sequence cannot raise the maxima (largest batch, KV and device peaks) above the run's; counts are subtracted.
        var engine = after with
        {
            Preemptions = after.Preemptions - engineBefore.Preemptions,
            Steps = after.Steps - engineBefore.Steps,
            SampledTokens = after.SampledTokens - engineBefore.SampledTokens,
            PrefillTokens = after.PrefillTokens - engineBefore.PrefillTokens,
        };
        return new ServeRun(scheduler, budget, batch, rate, served, engine, experts.Overall.Requests - before.Requests, experts.Overall.Hits - before.Hits,
            experts.Overall.BytesCopied - before.BytesCopied, experts.SlotBytes, experts.PeakDeviceBytes, MachineLoad.OneMinute());
    }

    /// <summary>A fresh model per run, so runs are independent: load mode, the default eviction policy.</summary>
    private MoeModel Load(SchedulerKind scheduler, int budgetPercent, int maxBatch, IReadOnlyDictionary<string, double> expected) =>
        MoeModel.Load(modelDirectory, new ModelOptions
        {
            Device = device,
            Engine = new EngineOptions { MaxBatch = maxBatch, Scheduler = scheduler, ExpectedOutputTokens = expected },
            Experts = new ExpertCacheOptions { Budget = budgetPercent == 100 ? ExpertBudget.All : ExpertBudget.FromFraction(budgetPercent / 100.0) },
        });

    /// <summary>
    /// One short request before measuring, as vLLM's bench serve sends a test prompt first: a fresh
    /// device's first launches of each kernel include their compilation. It has no task, so the
    /// scheduler's per-task output lengths do not learn its truncated length.
    /// </summary>
    private static async Task WarmUpAsync(MoeModel model, ServeRequest request, CancellationToken cancel)
    {
        var options = new GenerationOptions { MaxTokens = 2 };
        await foreach (int _ in model.GenerateIdsAsync(request.PromptIds, options, new GenerationStats(), cancel).ConfigureAwait(false)) { }
        cancel.ThrowIfCancellationRequested();
    }

    private static string Describe(ServeRun run)
    {
        var r = run.Requests;
        double attainment = r.Count(x => x.MetSlo) / (double)r.Count;
        return string.Create(CultureInfo.InvariantCulture,
            $"{run.SchedulerName} {run.BudgetPercent}% batch {run.MaxBatch} rate {run.Rate:0.###}: SLO {attainment:P0}, mean e2e {r.Average(x => x.E2eS) * 1000:0} ms, " +
            $"largest batch {run.Engine.LargestBatch}, {r.Max(x => x.CompletedS):0.0} s, load average {(run.LoadAverage is double l ? l.ToString("0.0", CultureInfo.InvariantCulture) : "n/a")}");
    }
}

/// <summary>The metrics of every run and the files that show them: results.json, results.md (with the targets) and the SVG charts.</summary>
internal sealed class ServeReport(string modelDirectory, string deviceName, ServeBenchOptions options, int requests, Calibration calibration,
    IReadOnlyList<double> rates, IReadOnlyList<ServeRun> runs)
{
    /// <summary>The issue's target: where FCFS meets fewer than 70% of SLOs, eMoE meets at least 20 points more, with lower mean latency.</summary>
    private const double FcfsAttainmentBelow = 0.7, AttainmentGainPoints = 20;

    private readonly List<Dictionary<string, object?>> _rows = [.. runs.Select(r => Row(r, runs))];

    public string Json()
    {
        var result = new Dictionary<string, object?>
        {
            ["model"] = modelDirectory, ["device"] = deviceName, ["processors"] = Environment.ProcessorCount, ["requests"] = requests,
            ["prompts_per_task"] = options.PromptsPerTask,
            ["seed"] = options.Seed, ["arrivals"] = "poisson",
            ["slo_rule"] = new Dictionary<string, double> { ["ttft_multiple"] = TaskCalibration.TtftMultiple, ["tpot_multiple"] = TaskCalibration.TpotMultiple },
            ["calibration"] = new Dictionary<string, object?>
            {
                ["mean_e2e_ms"] = calibration.MeanE2eS * 1000,
                ["capacity_req_s"] = calibration.CapacityPerSecond,
                ["tasks"] = calibration.Tasks.Select(t => new Dictionary<string, object?>
                {
                    ["task"] = t.Task, ["requests"] = t.Requests, ["ttft_ms"] = t.TtftS * 1000, ["tpot_ms"] = t.TpotS * 1000,
                    ["e2e_ms"] = t.E2eS * 1000, ["output_tokens"] = t.Tokens,
                }).ToList(),
            },
            ["slos"] = calibration.Tasks.ToDictionary(t => t.Task, t => new Dictionary<string, double?>
            {
                ["ttft_ms"] = t.Slo.TimeToFirstToken?.TotalMilliseconds, ["tpot_ms"] = t.Slo.TimePerOutputToken?.TotalMilliseconds,
            }),
            ["rates"] = rates,
            ["rows"] = _rows,
        };
        return JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true });
    }

    private static Dictionary<string, object?> Row(ServeRun run, IReadOnlyList<ServeRun> all)
    {
        var r = run.Requests;
        double start = r.Min(x => x.SubmittedS), duration = r.Max(x => x.CompletedS) - start;
        long tokens = r.Sum(x => (long)x.Tokens);
        int met = r.Count(x => x.MetSlo);
        var row = new Dictionary<string, object?>
        {
            ["scheduler"] = run.SchedulerName, ["budget"] = run.BudgetPercent / 100.0, ["max_batch"] = run.MaxBatch, ["rate"] = run.Rate,
            ["requests"] = r.Count, ["duration_s"] = duration, ["output_tokens"] = tokens,
            ["throughput_tok_s"] = tokens / duration, ["request_throughput_req_s"] = r.Count / duration, ["goodput_req_s"] = met / duration,
            ["slo_attainment"] = met / (double)r.Count, ["ttft_misses"] = r.Count(x => !x.MetTtft), ["tpot_misses"] = r.Count(x => !x.MetTpot),
        };
        AddLatency(row, "ttft", LatencySummary.Of(r.Select(x => x.TtftS)));
        AddLatency(row, "tpot", LatencySummary.Of(r.Where(x => x.TpotS is not null).Select(x => x.TpotS!.Value)));
        AddLatency(row, "e2e", LatencySummary.Of(r.Select(x => x.E2eS)));
        row["largest_batch"] = run.Engine.LargestBatch;
        row["preemptions"] = run.Engine.Preemptions;
        row["kv_peak_bytes"] = run.Engine.KvBytesPeak;
        row["expert_slot_bytes"] = run.SlotBytes;
        row["peak_device_bytes"] = run.PeakDeviceBytes;
        row["expert_hit_rate"] = run.ExpertRequests == 0 ? null : run.ExpertHits / (double)run.ExpertRequests;
        row["bytes_copied_per_token"] = run.BytesCopied / (double)tokens;
        row["outputs_equal_full_memory"] = OutputsEqualFullMemory(run, all);
        row["submit_lateness_max_ms"] = r.Max(x => x.SubmittedS - x.ArrivalS) * 1000;
        row["load_average"] = run.LoadAverage;
        // Every request, as vLLM's --save-detailed keeps them: where the misses are, by task and by time.
        row["per_request"] = r.Select(x => new Dictionary<string, object?>
        {
            ["task"] = x.Task, ["arrival_ms"] = x.ArrivalS * 1000, ["submitted_ms"] = x.SubmittedS * 1000, ["ttft_ms"] = x.TtftS * 1000,
            ["tpot_ms"] = x.TpotS * 1000, ["e2e_ms"] = x.E2eS * 1000, ["tokens"] = x.Tokens, ["ttft_met"] = x.MetTtft, ["tpot_met"] = x.MetTpot,
        }).ToList();
        return row;
    }

    /// <summary>Whether every request's output equals the 100% run's at the same scheduler, batch and rate; null for 100% runs and when that run is absent.</summary>
    private static bool? OutputsEqualFullMemory(ServeRun run, IReadOnlyList<ServeRun> all)
    {
        if (run.BudgetPercent == 100) return null;
        var full = all.FirstOrDefault(f => f.BudgetPercent == 100 && f.Scheduler == run.Scheduler && f.MaxBatch == run.MaxBatch && f.Rate == run.Rate);
        return full?.Requests.Zip(run.Requests).All(p => p.First.Output.SequenceEqual(p.Second.Output));
    }

    private static void AddLatency(Dictionary<string, object?> row, string name, LatencySummary? s)
    {
        row[$"{name}_mean_ms"] = s?.Mean * 1000;
        row[$"{name}_p50_ms"] = s?.P50 * 1000;
        row[$"{name}_p90_ms"] = s?.P90 * 1000;
        row[$"{name}_p99_ms"] = s?.P99 * 1000;
    }

    /// <summary>
    /// SLO attainment and e2e p99 against rate, one line per scheduler x max batch (colour: batch;
    /// dashed: FCFS): slo_attainment.svg and p99_latency.svg at 100% experts, the same with _P for
    /// every other budget P.
    /// </summary>
    public IEnumerable<(string File, string Svg)> Charts()
    {
        foreach (var budget in _rows.GroupBy(r => (double)r["budget"]!))
        {
            string suffix = budget.Key == 1 ? "" : string.Create(CultureInfo.InvariantCulture, $"_{budget.Key * 100:0}");
            string memory = string.Create(CultureInfo.InvariantCulture, $"{budget.Key:P0} experts");
            var series = budget.GroupBy(r => ((string)r["scheduler"]!, (int)r["max_batch"]!)).OrderBy(g => g.Key.Item2).ThenBy(g => g.Key.Item1).ToList();
            var batches = series.Select(g => g.Key.Item2).Distinct().ToList();
            List<LineSeries> Lines(string key, double scale) => [.. series.Select(g => new LineSeries(
                $"{SchedulerLabel(g.Key.Item1)}, batch {g.Key.Item2}",
                [.. g.Select(r => ((double)r["rate"]!, (double)r[key]! * scale)).OrderBy(p => p.Item1)],
                batches.IndexOf(g.Key.Item2), g.Key.Item1 == "fcfs"))];
            yield return ($"slo_attainment{suffix}.svg", SvgChart.Lines($"SLO attainment vs arrival rate ({memory})", "arrival rate (req/s, log scale)",
                "SLO attainment (%)", Lines("slo_attainment", 100), 100));
            var p99 = Lines("e2e_p99_ms", 0.001);
            yield return ($"p99_latency{suffix}.svg", SvgChart.Lines($"End-to-end p99 latency vs arrival rate ({memory})", "arrival rate (req/s, log scale)",
                "e2e p99 (s)", p99, NiceMax(p99.SelectMany(s => s.Points).Max(p => p.Y))));
        }
    }

    /// <summary>The smallest 1, 2 or 5 x 10^n at or above <paramref name="value"/>: a y axis of round ticks.</summary>
    private static double NiceMax(double value)
    {
        if (!(value > 0)) return 1;
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(value)));
        return new[] { 1, 2, 5, 10 }.Select(m => m * magnitude).First(m => m >= value);
    }

    private static string SchedulerLabel(string name) => name == "emoe" ? "eMoE" : name.ToUpperInvariant();

    public string Markdown()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine("# emoe bench serve");
        sb.AppendLine();
        sb.AppendLine(inv, $"Model {modelDirectory} on {deviceName}. {requests} evaluation prompts ({options.PromptsPerTask} per task, tasks interleaved), greedy, each with its own max_tokens, stopping at end of sequence; " +
            $"open-loop Poisson arrivals (seed {options.Seed}; the same arrival pattern at every rate, scaled), submitted in process through MoeModel.GenerateIdsAsync. Every run loads a fresh model (load mode, default eviction policy) and sends one short warm-up request before it is measured.");
        sb.AppendLine("TTFT: from submission to the first token; TPOT: (e2e - TTFT) / (tokens - 1), requests of one token excluded; e2e: submission to the last token (engine clock). " +
            "Output tokens count an end-of-sequence token. Throughput and goodput divide by the time from the first submission to the last completion. Goodput: requests/s that met their SLO. " +
            "results.json also holds every request of every run (per_request).");
        sb.AppendLine();
        sb.AppendLine("## Calibration");
        sb.AppendLine();
        sb.AppendLine(inv, $"Every prompt once, sequentially, at batch 1, every expert resident, FCFS. Mean unloaded e2e {calibration.MeanE2eS * 1000:0.0} ms: capacity c = {calibration.CapacityPerSecond:0.###} req/s. " +
            $"Rates run: {string.Join(", ", rates.Select(r => string.Create(inv, $"{r:0.###} ({r / calibration.CapacityPerSecond:0.##}c)")))} req/s.");
        sb.AppendLine();
        sb.AppendLine("| task | requests | unloaded TTFT ms | unloaded TPOT ms | unloaded e2e ms | output tokens | SLO: TTFT ms | SLO: TPOT ms |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var t in calibration.Tasks)
        {
            sb.AppendLine(inv, $"| {t.Task} | {t.Requests} | {t.TtftS * 1000:0.0} | {Ms(t.TpotS)} | {t.E2eS * 1000:0.0} | {t.Tokens:0.0} | " +
                $"{t.Slo.TimeToFirstToken!.Value.TotalMilliseconds:0.0} | {Ms(t.Slo.TimePerOutputToken?.TotalSeconds)} |");
        }
        sb.AppendLine();
        sb.AppendLine(inv, $"SLO per task: TTFT <= {TaskCalibration.TtftMultiple} x its unloaded TTFT and TPOT <= {TaskCalibration.TpotMultiple} x its unloaded TPOT; the same SLOs and arrival times for every configuration.");
        foreach (var budget in _rows.GroupBy(r => (double)r["budget"]!))
        {
            sb.AppendLine();
            sb.AppendLine(inv, $"## {budget.Key:P0} of expert memory");
            sb.AppendLine();
            sb.AppendLine("| scheduler | max batch | rate req/s | rate / c | SLO attainment | missed TTFT / TPOT | goodput req/s | output tok/s | TTFT p50 / p90 / p99 ms | TPOT p50 / p90 / p99 ms | " +
                "e2e mean / p50 / p90 / p99 ms | largest batch | preemptions | peak KV | expert slots | peak device | expert hit rate | KiB copied/token | outputs = 100% | load avg |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            foreach (var r in budget.OrderBy(r => (int)r["max_batch"]!).ThenBy(r => (double)r["rate"]!).ThenBy(r => (string)r["scheduler"]!, StringComparer.Ordinal))
            {
                string Get(string key, string format) => r[key] is { } v ? string.Format(inv, $"{{0:{format}}}", v) : "-";
                string equal = r["outputs_equal_full_memory"] switch { true => "yes", false => "NO", _ => "-" };
                sb.AppendLine(inv,
                    $"| {SchedulerLabel((string)r["scheduler"]!)} | {r["max_batch"]} | {(double)r["rate"]!:0.###} | {(double)r["rate"]! / calibration.CapacityPerSecond:0.##} | " +
                    $"{(double)r["slo_attainment"]!:P0} | {r["ttft_misses"]} / {r["tpot_misses"]} | {(double)r["goodput_req_s"]!:0.###} | {(double)r["throughput_tok_s"]!:0.0} | " +
                    $"{Get("ttft_p50_ms", "0")} / {Get("ttft_p90_ms", "0")} / {Get("ttft_p99_ms", "0")} | {Get("tpot_p50_ms", "0.0")} / {Get("tpot_p90_ms", "0.0")} / {Get("tpot_p99_ms", "0.0")} | " +
                    $"{Get("e2e_mean_ms", "0")} / {Get("e2e_p50_ms", "0")} / {Get("e2e_p90_ms", "0")} / {Get("e2e_p99_ms", "0")} | {r["largest_batch"]} | {r["preemptions"]} | " +
                    $"{ByteSize.Format((long)r["kv_peak_bytes"]!)} | {ByteSize.Format((long)r["expert_slot_bytes"]!)} | {ByteSize.Format((long)r["peak_device_bytes"]!)} | " +
                    $"{Get("expert_hit_rate", "P1")} | {(double)r["bytes_copied_per_token"]! / 1024:0.0} | {equal} | {Get("load_average", "0.0")} |");
            }
        }
        sb.AppendLine();
        AppendTargets(sb);
        double lateness = _rows.Max(r => (double)r["submit_lateness_max_ms"]!);
        sb.AppendLine();
        sb.AppendLine(inv, $"Submissions were at most {lateness:0.0} ms behind their arrival times (a busy machine delays them; TTFT and e2e count from the actual submission).");
        var loads = runs.Where(r => r.LoadAverage is not null).Select(r => r.LoadAverage!.Value).ToList();
        if (loads.Count > 0)
        {
            sb.AppendLine(inv, $"1-minute load average at the end of the runs: {loads.Min():0.0} to {loads.Max():0.0} on {Environment.ProcessorCount} processors " +
                $"(this benchmark alone keeps about one or two busy; more means other work shared the machine and the latencies are not clean).");
        }
        return sb.ToString();
    }

    /// <summary>The targets, stated from the numbers for each (budget, max batch), met or not.</summary>
    private void AppendTargets(StringBuilder sb)
    {
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine("## Targets");
        sb.AppendLine();
        sb.AppendLine(inv, $"Scheduler: at the lowest rate where FCFS meets fewer than {FcfsAttainmentBelow:P0} of SLOs, eMoE should meet at least {AttainmentGainPoints} points more, with lower mean e2e (the paper reports -17%).");
        sb.AppendLine();
        foreach (var group in _rows.GroupBy(r => ((double)r["budget"]!, (int)r["max_batch"]!)).OrderBy(g => g.Key.Item1).ThenBy(g => g.Key.Item2))
        {
            string where = string.Create(inv, $"{group.Key.Item1:P0} experts, batch {group.Key.Item2}");
            var fcfs = group.Where(r => (string)r["scheduler"]! == "fcfs").OrderBy(r => (double)r["rate"]!).ToList();
            var emoe = group.Where(r => (string)r["scheduler"]! == "emoe").ToList();
            if (fcfs.Count == 0 || emoe.Count == 0)
            {
                sb.AppendLine(inv, $"- {where}: not evaluated (needs both schedulers).");
                continue;
            }
            var low = fcfs.FirstOrDefault(r => (double)r["slo_attainment"]! < FcfsAttainmentBelow);
            if (low is null)
            {
                sb.AppendLine(inv, $"- {where}: FCFS meets at least {FcfsAttainmentBelow:P0} of SLOs at every rate run (up to {(double)fcfs[^1]["rate"]!:0.###} req/s): the target's load was not reached.");
                continue;
            }
            double rate = (double)low["rate"]!;
            var e = emoe.FirstOrDefault(r => (double)r["rate"]! == rate);
            if (e is null)
            {
                sb.AppendLine(inv, $"- {where}: FCFS first below {FcfsAttainmentBelow:P0} at {rate:0.###} req/s, where eMoE was not run.");
                continue;
            }
            double fa = (double)low["slo_attainment"]!, ea = (double)e["slo_attainment"]!;
            double fl = (double)low["e2e_mean_ms"]!, el = (double)e["e2e_mean_ms"]!;
            // Attainments are ratios of counts: 17/20 - 13/20 is 0.19999999999999996 in doubles, and is 20 points.
            double gain = Math.Round((ea - fa) * 100, 6);
            bool met = gain >= AttainmentGainPoints && el < fl;
            string verdict = met ? "**met**." : $"**not met** ({string.Join("; ", Failures(gain, el, fl))}).";
            sb.AppendLine(inv,
                $"- {where}: FCFS first below {FcfsAttainmentBelow:P0} at {rate:0.###} req/s ({rate / calibration.CapacityPerSecond:0.##}c): SLO attainment FCFS {fa:P0} vs eMoE {ea:P0} ({gain:+0;-0;0} points), " +
                $"mean e2e {fl:0} ms vs {el:0} ms ({el / fl - 1:+0%;-0%;0%}): {verdict} Missed TTFT / TPOT: FCFS {low["ttft_misses"]} / {low["tpot_misses"]}, " +
                $"eMoE {e["ttft_misses"]} / {e["tpot_misses"]}; largest batch FCFS {low["largest_batch"]}, eMoE {e["largest_batch"]}.");
        }
        sb.AppendLine();
        sb.AppendLine("Outputs: below 100% expert memory (the issue asks it at 25%) every served output should equal the 100% output at the same scheduler, batch and rate (load mode).");
        sb.AppendLine();
        foreach (var budget in _rows.Where(r => (double)r["budget"]! < 1).GroupBy(r => (double)r["budget"]!))
        {
            var compared = budget.Where(r => r["outputs_equal_full_memory"] is bool).ToList();
            int equal = compared.Count(r => (bool)r["outputs_equal_full_memory"]!);
            string line = compared.Count == 0
                ? string.Create(inv, $"- {budget.Key:P0}: not evaluated (no 100% run to compare with).")
                : string.Create(inv, $"- {budget.Key:P0}: every output equal in {equal} of {compared.Count} runs: **{(equal == compared.Count ? "met" : "not met")}**.");
            sb.AppendLine(line);
        }
        if (!_rows.Any(r => (double)r["budget"]! < 1)) sb.AppendLine("- not evaluated (no budget below 100% was run).");
    }

    private static IEnumerable<string> Failures(double gain, double emoeLatency, double fcfsLatency)
    {
        if (gain < AttainmentGainPoints) yield return string.Create(CultureInfo.InvariantCulture, $"attainment gain below {AttainmentGainPoints} points");
        if (emoeLatency >= fcfsLatency) yield return "mean e2e not lower";
    }

    private static string Ms(double? seconds) => seconds is double s ? (s * 1000).ToString("0.0", CultureInfo.InvariantCulture) : "-";
}
