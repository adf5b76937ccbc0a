using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Mathematics;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using eMoE.GpuCheck.Workloads;

namespace eMoE.Benchmarks;

/// <summary>
/// A summary column computed from a benchmark case and its measured statistics; "-" where it does
/// not apply, and hidden in summaries where it applies to no case.
/// </summary>
internal sealed class ValueColumn(string name, string legend, Func<BenchmarkCase, Statistics?, double?> value, string format) : IColumn
{
    /// <summary>Minimum bytes read per call, in MB (10^6 bytes).</summary>
    public static readonly ValueColumn MegabytesPerCall = new("MB/call", "Bytes a call must read (weights; KV cache for attention), in 10^6 bytes",
        (c, _) => Bytes(c) / 1e6, "0.###");

    /// <summary>Achieved bandwidth: bytes per call over the mean time (bytes per ns = GB/s).</summary>
    public static readonly ValueColumn GigabytesPerSecond = new("GB/s", "MB/call divided by Mean: achieved memory bandwidth in 10^9 bytes/s",
        (c, s) => s is null ? null : Bytes(c) / s.Mean, "0.00");

    /// <summary>Generated tokens per second (the decode benchmark's operations are tokens).</summary>
    public static readonly ValueColumn TokensPerSecond = new("tokens/s", "Generated tokens per second: 1 s / Mean (Mean is per token)",
        (c, s) => c.Descriptor.Type == typeof(DecodeBenchmark) && s is not null ? 1e9 / s.Mean : null, "0.0");

    private static double? Bytes(BenchmarkCase c) =>
        c.Descriptor.Type == typeof(KernelBenchmarks) && c.Parameters["Shape"] is ShapeName shape
            ? KernelBenchmarks.BytesPerCall(c.Descriptor.WorkloadMethod.Name, shape)
            : null;

    public string Id => $"{nameof(ValueColumn)}.{ColumnName}";
    public string ColumnName { get; } = name;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend { get; } = legend;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
        value(benchmarkCase, summary[benchmarkCase]?.ResultStatistics) is double v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) =>
        summary.BenchmarksCases.Any(c => value(c, summary[c]?.ResultStatistics) is not null);
}
