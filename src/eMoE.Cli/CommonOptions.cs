using System.CommandLine;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;

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

    public static Option<string> ExpertMemory() => new("--expert-memory")
    {
        Description = "Device memory for expert weights: bytes (512MiB, 2GB) or a share of all expert bytes (25%); default all",
        DefaultValueFactory = _ => "all",
    };

    public static Option<EvictionPolicyKind> Policy() => new("--policy")
    {
        Description = "Expert cache eviction: Lru, Lfu or LifoInactiveFirst (Predicted and Belady: emoe bench residency)",
        DefaultValueFactory = _ => EvictionPolicyKind.LifoInactiveFirst,
    };

    public static Option<MissMode> OnMiss() => new("--on-miss")
    {
        Description = "When a token's expert is absent: Load it (exact output) or Reroute the token to its best resident expert (no stall)",
        DefaultValueFactory = _ => MissMode.Load,
    };

    public static Option<bool> Pregate() => new("--pregate")
    {
        Description = "Pre-gated lookahead: during layer L, run layer L+1's router on layer L's input and prefetch its experts",
    };

    public static Option<FileInfo?> Stats() => new("--stats")
    {
        Description = "Write the expert cache counters (per layer and overall) to this JSON file",
    };

    /// <summary>The options of the expert cache, added to a command.</summary>
    public sealed class ExpertOptions
    {
        private readonly Option<string> _memory = ExpertMemory();
        private readonly Option<EvictionPolicyKind> _policy = Policy();
        private readonly Option<MissMode> _onMiss = OnMiss();
        private readonly Option<bool> _pregate = Pregate();

        public ExpertOptions(Command command)
        {
            command.Options.Add(_memory);
            command.Options.Add(_policy);
            command.Options.Add(_onMiss);
            command.Options.Add(_pregate);
        }

        public ExpertCacheOptions Read(ParseResult parse)
        {
            var policy = parse.GetValue(_policy);
            if (policy is EvictionPolicyKind.Belady or EvictionPolicyKind.Predicted)
                throw new CliException($"--policy {policy} needs a recorded trace or a predictor over a stream of prompts; see `emoe bench residency`");
            return new ExpertCacheOptions
            {
                Budget = ExpertBudget.Parse(parse.GetValue(_memory)!),
                Policy = policy,
                OnMiss = parse.GetValue(_onMiss),
                Pregate = parse.GetValue(_pregate),
            };
        }
    }

    /// <summary>One line on the expert cache, and the full counters to --stats when given.</summary>
    public static void ReportExperts(MoeModel model, FileInfo? statsFile)
    {
        var s = model.ExpertStats;
        var o = s.Overall;
        Console.Error.WriteLine(
            $"experts: {s.Slots}/{s.TotalExperts} slots ({Units.Bytes(s.SlotBytes)}, {s.Policy}), requests {o.Requests}, " +
            $"hit rate {o.HitRate:P1}, late prefetches {o.LatePrefetches}, misses {o.Misses}, copied {Units.Bytes(o.BytesCopied)}, " +
            $"stalled {o.StallSeconds * 1000:0.0} ms, rerouted {o.Rerouted}" +
            (o.LookaheadActual > 0 ? $", pre-gate accuracy {o.LookaheadAccuracy:P1}" : ""));
        if (statsFile is not null)
            File.WriteAllText(statsFile.FullName, JsonSerializer.Serialize(s, new JsonSerializerOptions { WriteIndented = true }));
    }

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
