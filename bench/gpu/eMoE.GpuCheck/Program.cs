using eMoE.Compute;
using eMoE.GpuCheck;

// eMoE.GpuCheck STAGE [--device cuda|cuda:N|ilgpu-cpu] --out DIR [--repo DIR] [--small] [--dry-run]
// bench/gpu/run.sh runs each stage in its own process under a timeout (bench/gpu/README.md).
const string Usage = """
    usage: eMoE.GpuCheck STAGE [--device cuda|cuda:N|ilgpu-cpu] --out DIR [--repo DIR] [--small] [--dry-run] [--stages FILE]
      STAGE: info | kernels | engine | bench | decode | report
      --device  the device under test (default cuda)
      --out     where each stage writes STAGE.json; report writes results.json and results.md there
      --repo    the repository root holding weights/tiny-mixtral and tests/golden (default: found above this program or the current directory)
      --small   dry-run sizes: kernel timings at the shipped shapes only, fewer samples and decode invocations
      --dry-run (report) label the results as a dry run on the CPU accelerator
      --stages  (report) the stage status file run.sh writes (default OUT/stages.tsv)
    exit codes: 0 passed, 1 a check failed, 2 bad usage, 3 no such device, 4 the stage broke
    """;

if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine(Usage);
    return args.Length == 0 ? 2 : 0;
}

string stage = args[0];
DeviceSpec device = DeviceKind.Cuda;
string? outDir = null, repo = null, stagesFile = null;
bool small = false, dryRun = false;
try
{
    for (int i = 1; i < args.Length; i++)
    {
        string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
        switch (args[i])
        {
            case "--device": device = DeviceSpec.Parse(Value()); break;
            case "--out": outDir = Value(); break;
            case "--repo": repo = Value(); break;
            case "--stages": stagesFile = Value(); break;
            case "--small": small = true; break;
            case "--dry-run": dryRun = true; break;
            default: throw new ArgumentException($"unknown option {args[i]}");
        }
    }
    if (device.Kind is not (DeviceKind.Cuda or DeviceKind.IlgpuCpu or DeviceKind.OpenCL))
        throw new ArgumentException($"--device {device}: the check runs the GPU kernels: use cuda[:N] (or ilgpu-cpu for a dry run)");
    if (outDir is null) throw new ArgumentException("--out DIR is required");
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine(Usage);
    return 2;
}

Directory.CreateDirectory(outDir);
try
{
    if (stage == "report") return Report.Write(outDir, dryRun, stagesFile);
    var options = new StageOptions(device, outDir, repo ?? FindRepository(), small);
    return stage switch
    {
        "info" => Stages.Info(options),
        "kernels" => Stages.Kernels(options),
        "engine" => await Stages.Engine(options),
        "bench" => Stages.Bench(options),
        "decode" => await Stages.Decode(options),
        _ => Unknown(stage),
    };
}
catch (DeviceNotFoundException e)
{
    Console.Error.WriteLine($"error: --device {device}: {e.Message}");
    return Stages.NoDevice;
}
catch (Exception e)
{
    Console.Error.WriteLine($"error: stage {stage} broke: {e}");
    return Stages.Broke;
}

static int Unknown(string stage)
{
    Console.Error.WriteLine($"error: unknown stage '{stage}': use info, kernels, engine, bench, decode or report");
    return 2;
}

// The directory holding eMoE.sln: above this program (a build in the tree), else above the current directory.
static string FindRepository()
{
    foreach (string start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "eMoE.sln"))) return dir.FullName;
        }
    }
    throw new DirectoryNotFoundException("eMoE.sln not found above the program or the current directory; pass --repo DIR");
}
