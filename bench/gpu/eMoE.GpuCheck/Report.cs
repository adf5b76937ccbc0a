using System.Globalization;
using System.Text;

namespace eMoE.GpuCheck;

/// <summary>The last stage: gathers the stages' JSON files into results.json and results.md.</summary>
internal static class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The decode-time GEMV target: at least this share of the GPU's peak memory bandwidth at Mixtral shapes.</summary>
    public const double TargetPercentOfPeak = 70;

    /// <summary>The kernels the bandwidth target is about (decode-time matrix-vector products).</summary>
    private static readonly string[] GemvKernels = ["MatMulQProj", "MatMulLmHead", "ExpertGateUp", "ExpertDown"];

    public static int Write(string outDirectory, bool dryRun, string? stagesFile)
    {
        var stages = ReadStages(stagesFile ?? Path.Combine(outDirectory, "stages.tsv"));
        var device = ResultsJson.Read<DeviceInfo>(Path.Combine(outDirectory, "info.json"));
        var kernels = ResultsJson.Read<KernelStageResult>(Path.Combine(outDirectory, "kernels.json"));
        var engine = ResultsJson.Read<EngineStageResult>(Path.Combine(outDirectory, "engine.json"));
        var bench = ResultsJson.Read<BenchStageResult>(Path.Combine(outDirectory, "bench.json"));
        var decode = ResultsJson.Read<DecodeStageResult>(Path.Combine(outDirectory, "decode.json"));
        bool passed = stages.Count > 0 && stages.All(s => s.ExitCode == 0)
            && kernels is { Error: null } && kernels.Ptx.Concat(kernels.Checks).All(c => c.Passed) && kernels.Checks.Count > 0
            && engine is { Error: null } && engine.Checks.Count > 0 && engine.Checks.All(c => c.Passed)
            && bench is { Error: null } && decode is { Error: null };
        string label = dryRun
            ? "DRY RUN on ILGPU's CPU accelerator (ilgpu-cpu), small shapes: it proves the published program, the checks and the scripts work; its timings are NOT GPU numbers"
            : device is { Error: string error } ? $"GPU check: device {device.Requested} not found: {error}"
            : $"GPU check on {device?.Name ?? "a device that did not open (see the log)"}";
        var results = new CheckResults
        {
            DryRun = dryRun,
            Label = label,
            CreatedUtc = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", Inv),
            Passed = passed,
            Stages = stages,
            Device = device,
            Kernels = kernels,
            Engine = engine,
            Bench = bench,
            Decode = decode,
        };
        ResultsJson.Write(Path.Combine(outDirectory, "results.json"), results);
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), Markdown(results));
        Console.WriteLine($"report: {(passed ? "PASSED" : "FAILED")}: {label}");
        return passed ? Stages.Passed : Stages.Failed;
    }

    private static List<StageStatus> ReadStages(string path)
    {
        if (!File.Exists(path)) return [];
        var result = new List<StageStatus>();
        foreach (string line in File.ReadLines(path))
        {
            var parts = line.Split('\t');
            if (parts.Length < 3 || !int.TryParse(parts[1], NumberStyles.Integer, Inv, out int rc)) continue;
            double.TryParse(parts[2], NumberStyles.Float, Inv, out double seconds);
            string status = rc switch
            {
                0 => "passed",
                -1 => "skipped",
                1 => "a check failed",
                3 => "no such device",
                124 or 137 => "timed out (killed)",
                _ => $"broke (exit {rc})",
            };
            result.Add(new StageStatus(parts[0], rc, seconds, status));
        }
        return result;
    }

    private static string Markdown(CheckResults r)
    {
        var md = new StringBuilder();
        void Line(string text = "") => md.Append(text).Append('\n');
        string F(double? value, string format) => value is double v ? v.ToString(format, Inv) : "-";

        Line(r.DryRun ? "# GPU check: DRY RUN on the CPU accelerator (not GPU numbers)"
            : r.Device is { Error: null } opened ? $"# GPU check: {opened.Name}" : "# GPU check: no device");
        Line();
        if (r.DryRun)
        {
            Line("> **Dry run.** Everything here ran on ILGPU's CPU accelerator (`--device ilgpu-cpu`) at small shapes, from the");
            Line("> same published program the GPU machine runs, to prove the publish, the checks, the timing harness and the");
            Line("> scripts work. The device under test and the reference device are the same accelerator here, so the");
            Line("> cross-device comparisons are trivially equal. **No timing below is a GPU figure.**");
            Line();
        }
        Line($"Result: **{(r.Passed ? "PASSED" : "FAILED")}**, {r.CreatedUtc}. {r.Label}.");
        Line();

        Line("## Stages");
        Line();
        Line("| stage | status | seconds |");
        Line("|---|---|---:|");
        foreach (var s in r.Stages) Line($"| {s.Name} | {s.Status} | {s.Seconds.ToString("0.0", Inv)} |");
        if (r.Stages.Count == 0) Line("| (no stages.tsv) | | |");
        Line();

        if (r.Device is { Error: string notFound })
        {
            Line($"**The device `{r.Device.Requested}` was not found:** {notFound}");
            Line();
        }
        else if (r.Device is { } d)
        {
            Line("## Device");
            Line();
            Line($"- **{d.Name}** ({d.Kind}, `{d.Requested}`): {d.Multiprocessors} multiprocessors, warp {d.WarpSize}");
            if (d.MemoryBytes is long mem) Line(string.Create(Inv, $"- memory {mem / (double)(1L << 30):0.0} GiB ({d.FreeMemoryBytes / (double)(1L << 30):0.0} GiB free), L2 {d.L2CacheBytes / (double)(1 << 20):0.#} MiB"));
            if (d.Architecture is not null) Line($"- {d.Architecture}, PTX {d.InstructionSet}, driver {d.DriverVersion}, SM clock {d.ClockMhz} MHz, memory clock {d.MemoryClockMhz} MHz, bus {d.MemoryBusWidthBits} bits");
            Line(d.PeakBytesPerSecond is double peak
                ? string.Create(Inv, $"- peak memory bandwidth used: **{peak / 1e9:0} GB/s**, {d.PeakSource}") + (d.PeakFromTableBytesPerSecond is double t && d.PeakFromClockBytesPerSecond is not null ? string.Create(Inv, $" (datasheet table: {t / 1e9:0} GB/s)") : "")
                : $"- peak memory bandwidth: {d.PeakSource}");
            Line($"- host: {d.HostProcessors} processors, {d.Runtime}, {d.Os}");
            Line();
        }

        if (r.Kernels is { } k)
        {
            Line($"## Kernel checks on `{k.Device}`");
            Line();
            Line($"Every kernel compiled to PTX by ILGPU: {k.Ptx.Count(c => c.Passed)}/{k.Ptx.Count}. Every kernel against its C# reference (the unit tests' cases and tolerances, `KernelChecks`): **{k.Checks.Count(c => c.Passed)}/{k.Checks.Count}** passed.");
            if (k.Error is not null) Line($"\n**The stage broke:** {k.Error}");
            Line();
            Line("| check | result | worst error | allowed |");
            Line("|---|---|---:|---:|");
            foreach (var c in k.Ptx.Where(c => !c.Passed).Concat(k.Checks))
                Line($"| {Cell(c.Name)} | {(c.Passed ? "ok" : "**FAIL**: " + Cell(c.Detail))} | {F(c.Value, "G3")} | {F(c.Limit, "G3")} |");
            Line();
        }

        if (r.Engine is { } e)
        {
            Line($"## Engine checks: `{e.Model}` on `{e.Device}` (reference device `{e.ReferenceDevice}`)");
            Line();
            Line($"**{e.Checks.Count(c => c.Passed)}/{e.Checks.Count}** passed.");
            if (e.Error is not null) Line($"\n**The stage broke:** {e.Error}");
            Line();
            Line("| check | result | value | limit | detail |");
            Line("|---|---|---:|---:|---|");
            foreach (var c in e.Checks) Line($"| {Cell(c.Name)} | {(c.Passed ? "ok" : "**FAIL**")} | {F(c.Value, "G4")} | {F(c.Limit, "G3")} | {Cell(c.Detail)} |");
            Line();
            if (e.Samples.Count > 0)
            {
                Line("Greedy continuations (32 tokens) of the first prompt of each task:");
                Line();
                Line("| task | device under test | reference device | same |");
                Line("|---|---|---|---|");
                foreach (var s in e.Samples) Line($"| {s.Task} | {Cell(s.Text)} | {Cell(s.Same ? "(same)" : s.ReferenceText)} | {(s.Same ? "yes" : "**no**")} |");
                Line();
            }
        }

        if (r.Bench is { } b)
        {
            Line($"## Kernel timings on {b.Device}");
            Line();
            Line(b.PeakBytesPerSecond is double peak ? string.Create(Inv, $"Peak memory bandwidth {peak / 1e9:0} GB/s ({b.PeakSource}).") : $"No peak bandwidth: {b.PeakSource}.");
            Line(b.Method);
            if (b.Error is not null) Line($"\n**The stage broke:** {b.Error}");
            Line();
            Line("| shape | kernel | µs/call | launch+sync µs | MB/call | GB/s | % of peak | note |");
            Line("|---|---|---:|---:|---:|---:|---:|---|");
            foreach (var t in b.Kernels)
            {
                string note = t.FitsInL2 ? "fits in L2: not an HBM figure" : "";
                if (!r.DryRun && t.Shape == "Mixtral" && GemvKernels.Contains(t.Kernel) && !t.FitsInL2 && t.PercentOfPeak is double p)
                    note = p >= TargetPercentOfPeak ? $"meets the {TargetPercentOfPeak:0}% target" : $"**below the {TargetPercentOfPeak:0}% target**";
                Line($"| {t.Shape} | {t.Kernel} | {t.MedianMicroseconds.ToString("0.00", Inv)} | {t.SyncedMedianMicroseconds.ToString("0.00", Inv)} | {F(t.Bytes / 1e6, "0.###")} | {F(t.GigabytesPerSecond, t.GigabytesPerSecond >= 10 ? "0.0" : "0.000")} | {F(t.PercentOfPeak, "0.0")} | {note} |");
            }
            Line();
        }

        if (r.Decode is { } dec)
        {
            Line($"## Decode on `{dec.Device}`: `{dec.Model}`, greedy, batch of one");
            Line();
            if (dec.Error is not null) Line($"**The stage broke:** {dec.Error}\n");
            Line("| measurement | experts | ms/token (median) | min | max | tokens/s | invocations x tokens | note |");
            Line("|---|---|---:|---:|---:|---:|---|---|");
            foreach (var row in dec.Rows)
                Line($"| {row.Name} | {row.Experts} | {row.MedianMillisecondsPerToken.ToString("0.000", Inv)} | {row.MinMillisecondsPerToken.ToString("0.000", Inv)} | {row.MaxMillisecondsPerToken.ToString("0.000", Inv)} | {row.TokensPerSecond.ToString("0.0", Inv)} | {row.Invocations} x {row.TokensPerInvocation} | {Cell(row.Note)} |");
            Line();
        }

        Line("See bench/gpu/README.md for what each figure means.");
        return md.ToString();
    }

    private static string Cell(string? text) =>
        text is null ? "" : text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("|", "\\|", StringComparison.Ordinal)
            .Replace("\r", "", StringComparison.Ordinal).Replace("\n", "⏎", StringComparison.Ordinal);
}
