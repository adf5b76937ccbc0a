using System.Text.Json;
using System.Text.Json.Serialization;

namespace eMoE.GpuCheck;

/// <summary>One pass/fail comparison: a value against its limit, with what was compared.</summary>
internal sealed record CheckRecord(string Name, bool Passed, double? Value = null, double? Limit = null, string? Detail = null);

/// <summary>What the check ran on.</summary>
internal sealed record DeviceInfo
{
    public string Requested { get; init; } = "";
    public string Kind { get; init; } = "";
    public string Name { get; init; } = "";
    public int Multiprocessors { get; init; }
    public int WarpSize { get; init; }
    public long? MemoryBytes { get; init; }
    public long? FreeMemoryBytes { get; init; }
    public string? Architecture { get; init; }
    public string? InstructionSet { get; init; }
    public string? DriverVersion { get; init; }
    public int? ClockMhz { get; init; }
    public int? MemoryClockMhz { get; init; }
    public int? MemoryBusWidthBits { get; init; }
    public long? L2CacheBytes { get; init; }

    /// <summary>2 x memory clock x bus width / 8 (double data rate), when the driver reports both.</summary>
    public double? PeakFromClockBytesPerSecond { get; init; }

    /// <summary>The datasheet figure for the device's name, when the table has it.</summary>
    public double? PeakFromTableBytesPerSecond { get; init; }

    /// <summary>The peak the GB/s figures are compared with: from the clock if known, else from the table.</summary>
    public double? PeakBytesPerSecond { get; init; }

    /// <summary>Where <see cref="PeakBytesPerSecond"/> came from, in words.</summary>
    public string PeakSource { get; init; } = "";

    public int HostProcessors { get; init; }
    public string Runtime { get; init; } = "";
    public string Os { get; init; } = "";

    /// <summary>Why the device could not be opened, when it could not.</summary>
    public string? Error { get; init; }
}

/// <summary>The kernel stage: PTX compilation of every kernel, then every reference check on the device.</summary>
internal sealed record KernelStageResult
{
    public string Device { get; init; } = "";
    public List<CheckRecord> Ptx { get; init; } = [];
    public List<CheckRecord> Checks { get; init; } = [];
    public string? Error { get; set; }
}

/// <summary>A greedy continuation on the device under test beside the reference device's.</summary>
internal sealed record TextSample(string Task, string Prompt, string Text, string ReferenceText, bool Same);

/// <summary>The expert cache's counters after the offloaded run.</summary>
internal sealed record OffloadStats(int Slots, int TotalExperts, long Requests, long Hits, long Misses, long BytesCopied);

/// <summary>The engine stage: the shipped model against the golden values, the reference device and itself with experts offloaded.</summary>
internal sealed record EngineStageResult
{
    public string Device { get; init; } = "";
    public string ReferenceDevice { get; init; } = "";
    public string Model { get; init; } = "";
    public List<CheckRecord> Checks { get; init; } = [];
    public List<TextSample> Samples { get; init; } = [];
    public OffloadStats? Offload { get; set; }
    public string? Error { get; set; }
}

/// <summary>One kernel's timing at one shape.</summary>
internal sealed record KernelTiming(
    string Shape, string Kernel, double MedianMicroseconds, double MinMicroseconds, double MaxMicroseconds, int Samples, int CallsPerSample,
    double SyncedMedianMicroseconds, long? Bytes, double? GigabytesPerSecond, double? PercentOfPeak, bool FitsInL2);

/// <summary>The kernel timing stage.</summary>
internal sealed record BenchStageResult
{
    public string Device { get; init; } = "";
    public double? PeakBytesPerSecond { get; init; }
    public string PeakSource { get; init; } = "";
    public long? L2CacheBytes { get; init; }
    public string Method { get; init; } = "";
    public List<KernelTiming> Kernels { get; init; } = [];
    public string? Error { get; set; }
}

/// <summary>One decode measurement: milliseconds per generated token over several invocations.</summary>
internal sealed record DecodeTiming(
    string Name, string Experts, int TokensPerInvocation, int Invocations, double MedianMillisecondsPerToken, double MinMillisecondsPerToken,
    double MaxMillisecondsPerToken, double TokensPerSecond, string? Note);

/// <summary>The decode stage.</summary>
internal sealed record DecodeStageResult
{
    public string Device { get; init; } = "";
    public string Model { get; init; } = "";
    public List<DecodeTiming> Rows { get; init; } = [];
    public string? Error { get; set; }
}

/// <summary>How one stage of run.sh ended (read from stages.tsv).</summary>
internal sealed record StageStatus(string Name, int ExitCode, double Seconds, string Status);

/// <summary>Everything, as results.json holds it.</summary>
internal sealed record CheckResults
{
    public bool DryRun { get; init; }
    public string Label { get; init; } = "";
    public string CreatedUtc { get; init; } = "";
    public bool Passed { get; init; }
    public List<StageStatus> Stages { get; init; } = [];
    public DeviceInfo? Device { get; init; }
    public KernelStageResult? Kernels { get; init; }
    public EngineStageResult? Engine { get; init; }
    public BenchStageResult? Bench { get; init; }
    public DecodeStageResult? Decode { get; init; }
}

/// <summary>Source-generated JSON (no reflection: the published check is trimmed).</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(DeviceInfo))]
[JsonSerializable(typeof(KernelStageResult))]
[JsonSerializable(typeof(EngineStageResult))]
[JsonSerializable(typeof(BenchStageResult))]
[JsonSerializable(typeof(DecodeStageResult))]
[JsonSerializable(typeof(CheckResults))]
internal sealed partial class ResultsJson : JsonSerializerContext
{
    /// <summary>Writes <paramref name="value"/> to <paramref name="path"/>.</summary>
    public static void Write<T>(string path, T value)
    {
        var info = (System.Text.Json.Serialization.Metadata.JsonTypeInfo<T>)(Default.GetTypeInfo(typeof(T)) ?? throw new NotSupportedException(typeof(T).Name));
        File.WriteAllText(path, JsonSerializer.Serialize(value, info) + "\n");
    }

    /// <summary>Reads <paramref name="path"/>, or null when it does not exist or cannot be read.</summary>
    public static T? Read<T>(string path) where T : class
    {
        if (!File.Exists(path)) return null;
        try
        {
            var info = (System.Text.Json.Serialization.Metadata.JsonTypeInfo<T>)(Default.GetTypeInfo(typeof(T)) ?? throw new NotSupportedException(typeof(T).Name));
            return JsonSerializer.Deserialize(File.ReadAllText(path), info);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
