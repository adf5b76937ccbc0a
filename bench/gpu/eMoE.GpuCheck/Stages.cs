using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Compute.Ilgpu;
using eMoE.Experts;
using eMoE.GpuCheck.Checks;
using eMoE.GpuCheck.Workloads;
using eMoE.Inference;

namespace eMoE.GpuCheck;

/// <summary>The command line of one stage.</summary>
/// <param name="Device">The device under test (cuda on the GPU machine, ilgpu-cpu in a dry run).</param>
/// <param name="Out">Where the stage writes STAGE.json.</param>
/// <param name="Repository">The repository root (the shipped model, the golden values).</param>
/// <param name="Small">Dry-run sizes: the shipped shapes only, fewer samples.</param>
internal sealed record StageOptions(DeviceSpec Device, string Out, string Repository, bool Small)
{
    public string ModelDirectory => Path.Combine(Repository, "weights", "tiny-mixtral");
    public string GoldenFile => Path.Combine(Repository, "tests", "golden", "tiny-mixtral.json");
}

/// <summary>The stages run.sh runs, each in its own process (so that a hung stage can be killed and the others still run).</summary>
internal static class Stages
{
    /// <summary>Exit codes: 0 all passed, 1 a check failed, 3 no such device, 4 the stage broke.</summary>
    public const int Passed = 0, Failed = 1, NoDevice = 3, Broke = 4;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static void Say(string line) => Console.WriteLine(line);

    // ---------------------------------------------------------------- info

    public static int Info(StageOptions o)
    {
        DeviceInfo info;
        try
        {
            info = DeviceFacts.Read(o.Device);
        }
        catch (DeviceNotFoundException e)
        {
            ResultsJson.Write(Path.Combine(o.Out, "info.json"), new DeviceInfo { Requested = o.Device.ToString(), Error = e.Message });
            throw;
        }
        ResultsJson.Write(Path.Combine(o.Out, "info.json"), info);
        Say($"device {info.Requested}: {info.Name} ({info.Kind}), {info.Multiprocessors} multiprocessors, warp {info.WarpSize}");
        if (info.MemoryBytes is long bytes) Say(string.Create(Inv, $"  memory {bytes / (double)(1L << 30):0.0} GiB, free {info.FreeMemoryBytes / (double)(1L << 30):0.0} GiB, L2 {info.L2CacheBytes / (double)(1 << 20):0.#} MiB"));
        if (info.Architecture is not null) Say($"  architecture {info.Architecture}, PTX {info.InstructionSet}, driver {info.DriverVersion}, SM clock {info.ClockMhz} MHz");
        Say(info.PeakBytesPerSecond is double peak ? string.Create(Inv, $"  peak memory bandwidth {peak / 1e9:0} GB/s, {info.PeakSource}") : $"  peak memory bandwidth: {info.PeakSource}");
        return Passed;
    }

    // ---------------------------------------------------------------- kernels

    public static int Kernels(StageOptions o)
    {
        var result = new KernelStageResult { Device = o.Device.ToString() };
        string path = Path.Combine(o.Out, "kernels.json");
        try
        {
            string? firstHeader = null;
            foreach (var kernel in KernelSet.EntryPoints)
            {
                string name = $"PTX {PtxChecks.Architecture}: {kernel.DeclaringType!.Name}.{kernel.Name}";
                long start = Stopwatch.GetTimestamp();
                try
                {
                    string ptx = PtxChecks.Compile(kernel);
                    string header = string.Join(", ", ptx.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith(".version", StringComparison.Ordinal) || l.StartsWith(".target", StringComparison.Ordinal)));
                    firstHeader ??= header;
                    result.Ptx.Add(new CheckRecord(name, true, ptx.Length, null, string.Create(Inv, $"{ptx.Length} characters of PTX ({header}) in {Stopwatch.GetElapsedTime(start).TotalMilliseconds:0} ms")));
                }
                catch (Exception e)
                {
                    result.Ptx.Add(new CheckRecord(name, false, null, null, $"{e.GetType().Name}: {e.Message}"));
                }
            }
            Say($"PTX: {result.Ptx.Count(c => c.Passed)}/{result.Ptx.Count} kernels compile for {PtxChecks.Architecture} ({firstHeader ?? "none"})");

            using var rig = KernelRig.OnDevice(o.Device);
            Say($"kernel reference checks on {rig.Name}");
            foreach (var check in KernelChecks.Cases)
            {
                CheckRecord record;
                try
                {
                    double worst = check.Run(rig);
                    record = new CheckRecord(check.Name, worst <= check.Tolerance, worst, check.Tolerance);
                }
                catch (CheckFailedException e)
                {
                    record = new CheckRecord(check.Name, false, null, check.Tolerance, e.Message);
                }
                catch (Exception e) when (e is not DeviceNotFoundException)
                {
                    record = new CheckRecord(check.Name, false, null, check.Tolerance, $"{e.GetType().Name}: {e.Message}");
                }
                result.Checks.Add(record);
                Say($"  {(record.Passed ? "ok  " : "FAIL")} {check.Name}{(record.Value is double v ? string.Create(Inv, $" (worst {v:G3})") : "")}{(record.Detail is null ? "" : ": " + record.Detail)}");
            }
            Say($"kernels: {result.Checks.Count(c => c.Passed)}/{result.Checks.Count} checks passed");
        }
        catch (Exception e) when (e is not DeviceNotFoundException)
        {
            result.Error = $"{e.GetType().Name}: {e.Message}";
            throw;
        }
        finally
        {
            ResultsJson.Write(path, result);
        }
        return result.Ptx.Concat(result.Checks).All(c => c.Passed) ? Passed : Failed;
    }

    // ---------------------------------------------------------------- engine

    /// <summary>Greedy tokens per prompt in the cross-device and offloading comparisons.</summary>
    private const int TextTokens = 32;

    public static async Task<int> Engine(StageOptions o)
    {
        var reference = new DeviceSpec(DeviceKind.IlgpuCpu);
        var result = new EngineStageResult { Device = o.Device.ToString(), ReferenceDevice = reference.ToString(), Model = "weights/tiny-mixtral" };
        string path = Path.Combine(o.Out, "engine.json");
        void Check(string name, bool passed, double? value = null, double? limit = null, string? detail = null)
        {
            result.Checks.Add(new CheckRecord(name, passed, value, limit, detail));
            Say($"  {(passed ? "ok  " : "FAIL")} {name}{(value is double v ? string.Create(Inv, $": {v:G4}") : "")}{(limit is double l ? string.Create(Inv, $" (limit {l:G3})") : "")}{(detail is null ? "" : $" — {detail}")}");
        }
        try
        {
            var golden = Golden.Load(o.GoldenFile);
            var prompts = FirstEvalPrompts(o.ModelDirectory);
            float tolerance = EngineChecks.LogitTolerance;
            string dut = o.Device.ToString();

            // 1. The device under test, every expert resident: against the torch reference's golden values.
            var logits = new List<float[]>();
            var greedy = new List<List<int>>();
            var texts = new List<(List<int> Ids, string Text)>();
            Say($"engine: {result.Model} on {dut}, all experts resident, against the golden values (tests/golden/tiny-mixtral.json)");
            using (var model = MoeModel.Load(o.ModelDirectory, new ModelOptions { Device = o.Device }))
            {
                var differences = EngineChecks.GoldenLogitDifferences(model, golden);
                var (where, worst) = differences.MaxBy(d => d.Worst);
                Check($"golden logits ({differences.Count} rows of {golden.Prompts.Count} prompts), max abs difference", worst <= tolerance, worst, tolerance, $"worst at {where}");
                foreach (var prompt in golden.Prompts)
                {
                    var ids = await EngineChecks.GreedyAsync(model, prompt.Ids, prompt.Greedy.Count);
                    greedy.Add(ids);
                    Check($"golden greedy continuation, {prompt.Ids.Count}-token prompt ({prompt.Greedy.Count} tokens)", ids.SequenceEqual(prompt.Greedy), detail: FirstDifference(ids, prompt.Greedy));
                    logits.Add(model.ComputeLogits(prompt.Ids));
                }
                var (ppl, percentOff) = EngineChecks.GoldenPerplexity(model, golden);
                Check($"golden perplexity ({ppl.Tokens} tokens), % off", percentOff <= EngineChecks.PerplexityTolerancePercent && ppl.Tokens == golden.Perplexity.Tokens,
                    percentOff, EngineChecks.PerplexityTolerancePercent, string.Create(Inv, $"{ppl.Perplexity:0.0000} against {golden.Perplexity.Perplexity:0.0000}"));
                var textIds = EngineChecks.GoldenTextIds(model, golden, o.Repository);
                if (textIds is not null)
                    Check("tokenizer: the golden perplexity text encodes to the golden ids", textIds.SequenceEqual(golden.Perplexity.Ids), detail: FirstDifference(textIds, golden.Perplexity.Ids));
                foreach (var (_, prompt) in prompts) texts.Add(await EngineChecks.GreedyTextAsync(model, prompt, TextTokens));
            }

            // 2. The reference device (ILGPU's CPU accelerator): the same logits and the same greedy text.
            Say($"engine: the same on {reference}");
            using (var model = MoeModel.Load(o.ModelDirectory, new ModelOptions { Device = reference }))
            {
                float worst = 0;
                for (int i = 0; i < golden.Prompts.Count; i++)
                    worst = Math.Max(worst, EngineChecks.MaxAbsDifference(model.ComputeLogits(golden.Prompts[i].Ids), logits[i]));
                Check($"{dut} vs {reference}: logits at every position of the {golden.Prompts.Count} golden prompts, max abs difference", worst <= tolerance, worst, tolerance);
                for (int i = 0; i < prompts.Count; i++)
                {
                    var (ids, text) = await EngineChecks.GreedyTextAsync(model, prompts[i].Prompt, TextTokens);
                    bool same = ids.SequenceEqual(texts[i].Ids);
                    result.Samples.Add(new TextSample(prompts[i].Task, prompts[i].Prompt, texts[i].Text, text, same));
                    Check($"{dut} vs {reference}: greedy text of the first {prompts[i].Task} prompt ({TextTokens} tokens)", same, detail: same ? null : FirstDifference(texts[i].Ids, ids));
                }
            }

            // 3. The device under test with 25 % of expert memory: the expert cache loads on a miss, so tokens must not change.
            Say($"engine: {dut} with 25% of expert memory (load on miss)");
            using (var model = MoeModel.Load(o.ModelDirectory, new ModelOptions { Device = o.Device, Experts = new ExpertCacheOptions { Budget = ExpertBudget.Parse("25%") } }))
            {
                float worst = 0;
                for (int i = 0; i < golden.Prompts.Count; i++)
                    worst = Math.Max(worst, EngineChecks.MaxAbsDifference(model.ComputeLogits(golden.Prompts[i].Ids), logits[i]));
                Check("25% experts vs all resident: logits of the golden prompts, max abs difference", worst <= tolerance, worst, tolerance);
                bool same = true;
                string? detail = null;
                for (int i = 0; i < golden.Prompts.Count; i++)
                {
                    var ids = await EngineChecks.GreedyAsync(model, golden.Prompts[i].Ids, golden.Prompts[i].Greedy.Count);
                    if (!ids.SequenceEqual(greedy[i])) (same, detail) = (false, $"golden prompt {i}: {FirstDifference(ids, greedy[i])}");
                }
                for (int i = 0; i < prompts.Count; i++)
                {
                    var (ids, _) = await EngineChecks.GreedyTextAsync(model, prompts[i].Prompt, TextTokens);
                    if (!ids.SequenceEqual(texts[i].Ids)) (same, detail) = (false, $"{prompts[i].Task} prompt: {FirstDifference(ids, texts[i].Ids)}");
                }
                Check($"25% experts vs all resident: identical greedy tokens ({golden.Prompts.Count} golden and {prompts.Count} text prompts)", same, detail: detail);
                var stats = model.ExpertStats;
                result.Offload = new OffloadStats(stats.Slots, stats.TotalExperts, stats.Overall.Requests, stats.Overall.Hits, stats.Overall.Misses, stats.Overall.BytesCopied);
                Check("25% experts: experts were offloaded (fewer slots than experts, misses copied in)", stats.Slots < stats.TotalExperts && stats.Overall.Misses > 0,
                    detail: string.Create(Inv, $"{stats.Slots} slots for {stats.TotalExperts} experts, {stats.Overall.Misses} misses, {stats.Overall.BytesCopied / 1e6:0.0} MB copied, hit rate {stats.Overall.HitRate:P1}"));
            }
            Say($"engine: {result.Checks.Count(c => c.Passed)}/{result.Checks.Count} checks passed");
        }
        catch (Exception e) when (e is not DeviceNotFoundException)
        {
            result.Error = $"{e.GetType().Name}: {e.Message}";
            throw;
        }
        finally
        {
            ResultsJson.Write(path, result);
        }
        return result.Checks.All(c => c.Passed) ? Passed : Failed;
    }

    /// <summary>The first prompt of each task of the shipped evaluation set (eval/*.jsonl), in task order.</summary>
    private static List<(string Task, string Prompt)> FirstEvalPrompts(string modelDirectory)
    {
        var result = new List<(string, string)>();
        foreach (string file in Directory.GetFiles(Path.Combine(modelDirectory, "eval"), "*.jsonl").Order(StringComparer.Ordinal))
        {
            string? line = File.ReadLines(file).FirstOrDefault(l => l.Trim().Length > 0);
            if (line is null) continue;
            using var doc = JsonDocument.Parse(line);
            result.Add((doc.RootElement.GetProperty("task").GetString() ?? Path.GetFileNameWithoutExtension(file),
                doc.RootElement.GetProperty("prompt").GetString() ?? ""));
        }
        if (result.Count == 0) throw new FileNotFoundException($"no evaluation prompts in {modelDirectory}/eval");
        return result;
    }

    private static string? FirstDifference(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        for (int i = 0; i < Math.Min(a.Count, b.Count); i++)
        {
            if (a[i] != b[i]) return $"first difference at token {i}: {a[i]} against {b[i]}";
        }
        return a.Count == b.Count ? null : $"{a.Count} tokens against {b.Count}";
    }

    // ---------------------------------------------------------------- bench

    public static int Bench(StageOptions o)
    {
        var info = DeviceFacts.Read(o.Device);
        var options = o.Small ? TimingOptions.Small : TimingOptions.Gpu;
        var result = new BenchStageResult
        {
            Device = $"{info.Name} ({o.Device})",
            PeakBytesPerSecond = info.PeakBytesPerSecond,
            PeakSource = info.PeakSource,
            L2CacheBytes = info.L2CacheBytes,
            Method = string.Create(Inv, $"Stopwatch: {options.Warmup} warm-up launches, then {options.Samples} samples of back-to-back launches (each at least {options.MinSampleSeconds * 1e3:0} ms, one synchronize at its end); per-call time = median sample / launches. Launch+sync = median of single launches each waited for (what BenchmarkDotNet measures). GB/s = bytes a call must read / per-call time."),
        };
        string path = Path.Combine(o.Out, "bench.json");
        try
        {
            ShapeName[] shapes = o.Small ? [ShapeName.Shipped] : [ShapeName.Shipped, ShapeName.Mixtral];
            foreach (var shape in shapes)
            {
                long start = Stopwatch.GetTimestamp();
                using var work = new KernelWorkload(shape, o.Device);
                Say(string.Create(Inv, $"bench: {shape} shapes on {work.Rig.Device.Name}, buffers ready in {Stopwatch.GetElapsedTime(start).TotalSeconds:0.0} s"));
                foreach (var kernel in Enum.GetValues<DecodeKernel>())
                {
                    var t = TimingHarness.Measure(() => work.Launch(kernel), work.Synchronize, options);
                    long? bytes = KernelWorkload.BytesPerCall(kernel, shape);
                    double? gbps = bytes / t.Median / 1e9;
                    double? percent = bytes is long b && info.PeakBytesPerSecond is double peak ? b / t.Median / peak * 100 : null;
                    bool fitsInL2 = bytes is long n && info.L2CacheBytes is long l2 && n <= l2;
                    result.Kernels.Add(new KernelTiming(shape.ToString(), kernel.ToString(), t.Median * 1e6, t.Min * 1e6, t.Max * 1e6, t.Samples, t.CallsPerSample,
                        t.SyncedMedian * 1e6, bytes, gbps, percent, fitsInL2));
                    Say(string.Create(Inv, $"  {shape,-8} {kernel,-20} {t.Median * 1e6,12:0.00} µs/call  (launch+sync {t.SyncedMedian * 1e6:0.00} µs, {t.CallsPerSample} calls/sample)") +
                        (gbps is double g ? string.Create(Inv, $"  {g:0.0} GB/s") + (percent is double p ? string.Create(Inv, $" = {p:0.0}% of peak") : "") + (fitsInL2 ? " (fits in L2)" : "") : ""));
                }
            }
        }
        catch (Exception e) when (e is not DeviceNotFoundException)
        {
            result.Error = $"{e.GetType().Name}: {e.Message}";
            throw;
        }
        finally
        {
            ResultsJson.Write(path, result);
        }
        return Passed;
    }

    // ---------------------------------------------------------------- decode

    public static async Task<int> Decode(StageOptions o)
    {
        int invocations = o.Small ? 3 : 7;
        const int Tokens = DecodeWorkload.Tokens;
        var result = new DecodeStageResult { Device = o.Device.ToString(), Model = "weights/tiny-mixtral" };
        string path = Path.Combine(o.Out, "decode.json");
        try
        {
            using (var work = new DecodeWorkload(o.ModelDirectory, o.Device))
            {
                work.Prefill();
                work.Decode(Tokens); // warm-up
                var perToken = new List<double>();
                for (int i = 0; i < invocations; i++)
                {
                    work.Prefill();
                    long start = Stopwatch.GetTimestamp();
                    work.Decode(Tokens);
                    perToken.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds / Tokens);
                }
                Add("Decode (forward-pass steps, prefill outside the timing)", "all resident", perToken, null);
            }

            foreach (var (label, budget) in new[] { ("all resident", ExpertBudget.All), ("25% of expert memory", ExpertBudget.Parse("25%")) })
            {
                using var model = MoeModel.Load(o.ModelDirectory, new ModelOptions { Device = o.Device, Experts = new ExpertCacheOptions { Budget = budget } });
                var prompt = DecodeWorkload.Prompt(model.Config.VocabSize);
                var options = new GenerationOptions { MaxTokens = Tokens, StopAtEndOfSequence = false };
                await Generate(); // warm-up
                var before = model.ExpertStats.Overall;
                var perToken = new List<double>();
                for (int i = 0; i < invocations; i++)
                {
                    long start = Stopwatch.GetTimestamp();
                    await Generate();
                    perToken.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds / Tokens);
                }
                var after = model.ExpertStats.Overall;
                long requests = after.Requests - before.Requests, hits = after.Hits - before.Hits;
                string? note = budget == ExpertBudget.All ? null : string.Create(Inv,
                    $"hit rate {(requests == 0 ? 0 : (double)hits / requests):P1}, {(after.BytesCopied - before.BytesCopied) / 1e3 / (invocations * Tokens):0.0} kB copied per generated token");
                Add($"GenerateIdsAsync (public API, {DecodeWorkload.PromptTokens}-token prefill included)", label, perToken, note);

                async Task Generate()
                {
                    await foreach (int _ in model.GenerateIdsAsync(prompt, options, new GenerationStats())) { }
                }
            }
        }
        catch (Exception e) when (e is not DeviceNotFoundException)
        {
            result.Error = $"{e.GetType().Name}: {e.Message}";
            throw;
        }
        finally
        {
            ResultsJson.Write(path, result);
        }
        return Passed;

        void Add(string name, string experts, List<double> perToken, string? note)
        {
            double median = TimingHarness.Median(perToken);
            var row = new DecodeTiming(name, experts, Tokens, perToken.Count, median, perToken.Min(), perToken.Max(), 1e3 / median, note);
            result.Rows.Add(row);
            Say(string.Create(Inv, $"decode: {name}, {experts}: {median:0.000} ms/token = {row.TokensPerSecond:0.0} tokens/s{(note is null ? "" : $" ({note})")}"));
        }
    }
}
