using eMoE.Compute;

namespace eMoE.Benchmarks;

/// <summary>
/// Settings shared by the host process and the benchmark processes BenchmarkDotNet starts. They
/// travel as environment variables, which the child processes inherit.
/// </summary>
public static class BenchSettings
{
    /// <summary>Comma-separated devices to benchmark: cpu (the host backend), ilgpu-cpu, cuda[:N] (default: cpu,ilgpu-cpu).</summary>
    public const string DeviceVariable = "EMOE_BENCH_DEVICE";

    /// <summary>Model directory of the decode benchmark (default: &lt;repo&gt;/weights/tiny-mixtral).</summary>
    public const string ModelVariable = "EMOE_BENCH_MODEL";

    /// <summary>
    /// Takes <c>--device LIST</c> (e.g. <c>cpu,ilgpu-cpu,cuda</c>) out of the command line (BenchmarkDotNet would reject
    /// it) and records it for the benchmark processes; returns the remaining arguments.
    /// </summary>
    public static string[] TakeDeviceOption(string[] args)
    {
        var rest = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] is "--device" && i + 1 < args.Length)
            {
                Environment.SetEnvironmentVariable(DeviceVariable, args[++i]);
                _ = Devices; // fail now, not in every benchmark process, on a bad value
            }
            else rest.Add(args[i]);
        }
        return [.. rest];
    }

    /// <summary>The devices the end-to-end benchmarks are parameterised over.</summary>
    public static IEnumerable<DeviceSpec> Devices =>
        (Environment.GetEnvironmentVariable(DeviceVariable) ?? "cpu,ilgpu-cpu")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(name => name.ToLowerInvariant() == "auto" ? throw new ArgumentException("--device: name the devices (cpu, ilgpu-cpu, cuda[:N])") : DeviceSpec.Parse(name))
            .Distinct()
            .ToArray();

    /// <summary>The ILGPU devices among <see cref="Devices"/>: the kernel benchmarks run GPU kernels, which the host backend does not have.</summary>
    public static IEnumerable<DeviceSpec> IlgpuDevices => Devices.Where(d => d.Kind != DeviceKind.Cpu);

    /// <summary>
    /// Opens each requested device once, so that a missing one (say, no CUDA driver) is reported
    /// once before any benchmark starts; returns the problem, or null when every device is present.
    /// </summary>
    public static string? CheckDevices()
    {
        foreach (var spec in Devices)
        {
            try
            {
                using var device = ComputeBackend.Create(spec);
                Console.WriteLine($"// eMoE device: {spec} = {device.Name}");
            }
            catch (Exception e) when (e is DeviceNotFoundException or ArgumentException)
            {
                return $"--device {spec}: {e.Message}";
            }
        }
        return null;
    }

    /// <summary>The model directory of the decode benchmark.</summary>
    public static string ModelDirectory()
    {
        string? overridden = Environment.GetEnvironmentVariable(ModelVariable);
        string directory = string.IsNullOrEmpty(overridden) ? Path.Combine(RepositoryRoot(), "weights", "tiny-mixtral") : overridden;
        if (!File.Exists(Path.Combine(directory, "config.json")))
            throw new DirectoryNotFoundException($"no model at {directory} (config.json missing); set {ModelVariable} to a model directory");
        return directory;
    }

    /// <summary>The directory holding eMoE.sln, found by walking up from the running assembly.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "eMoE.sln"))) return dir.FullName;
        }
        throw new DirectoryNotFoundException($"eMoE.sln not found above {AppContext.BaseDirectory}; set {ModelVariable}");
    }
}
