using System.CommandLine;
using eMoE.Compute;

namespace eMoE.Cli;

/// <summary>Options shared by several commands.</summary>
internal static class CommonOptions
{
    public static readonly Option<bool> Verbose = new("--verbose")
    {
        Description = "Print stack traces with errors",
        Recursive = true,
    };

    public static Option<string?> Model() => new("--model")
    {
        Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.json); default: the shipped weights/tiny-mixtral",
    };

    public static Option<DeviceKind> Device() => new("--device")
    {
        Description = "auto (CUDA, then an OpenCL GPU, then CPU), cuda, opencl or cpu",
        DefaultValueFactory = _ => DeviceKind.Auto,
    };

    /// <summary>The model directory to use: the given one, or the shipped model found above the working or program directory.</summary>
    public static string ResolveModel(string? given)
    {
        if (given is not null) return given;
        foreach (string start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "weights", "tiny-mixtral");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
        }
        throw new CliException("no --model given and the shipped model weights/tiny-mixtral was not found above the current directory");
    }
}
