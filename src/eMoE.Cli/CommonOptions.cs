using System.CommandLine;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Prediction;
using eMoE.Scheduling;

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

    public static Option<DeviceSpec> Device() => new("--device")
    {
        Description = "auto (CUDA, then an OpenCL GPU, else the host), cpu (the host: SIMD on the CPU cores), ilgpu-cpu (ILGPU's CPU accelerator, " +
            "which runs the GPU kernels), cuda[:N] or opencl[:N]",
        DefaultValueFactory = _ => DeviceKind.Auto,
        CustomParser = result => Parsed(result, DeviceSpec.Parse),
    };

    /// <summary>
    /// --device for the expert-cache benchmarks: they measure a device's cache, so the default is a GPU
    /// when one is present and ILGPU's CPU accelerator otherwise (the host keeps every expert in place).
    /// </summary>
    public static Option<DeviceSpec> CacheDevice()
    {
        var option = Device();
        option.Description = "A device with an expert cache: cuda[:N], opencl[:N] or ilgpu-cpu (default: a GPU if present, else ilgpu-cpu)";
        option.DefaultValueFactory = _ => ComputeBackend.IsGpuPresent() ? DeviceKind.Auto : DeviceKind.IlgpuCpu;
        return option;
    }

    public static Option<int?> Threads() => new("--threads")
    {
        Description = "Threads of the host backend (--device cpu); default: one per core",
    };

    /// <summary>
    /// A value parsed by <paramref name="parse"/>; its <see cref="ArgumentException"/> becomes the
    /// option's parse error (one line, naming the value).
    /// </summary>
    private static T Parsed<T>(System.CommandLine.Parsing.ArgumentResult result, Func<string, T> parse)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
        try
        {
            return parse(text);
        }
        catch (ArgumentException e)
        {
            result.AddError($"{((System.CommandLine.Parsing.OptionResult)result.Parent!).Option.Name}: {e.Message}");
            return default!;
        }
    }

    /// <summary>
    /// Parses an enum value by the short names people type (case-insensitive), e.g. <c>lifo</c> for
    /// <c>LifoInactiveFirst</c>; the full name works too.
    /// </summary>
    private static T ParseNamed<T>(string text, IReadOnlyDictionary<string, T> names) where T : struct, Enum
    {
        if (names.TryGetValue(text.Trim(), out var value)) return value;
        if (Enum.TryParse<T>(text.Trim(), ignoreCase: true, out var full) && Enum.IsDefined(full)) return full;
        throw new ArgumentException($"'{text}' is not one of {string.Join(", ", names.Keys)}");
    }

    private static readonly Dictionary<string, EvictionPolicyKind> PolicyNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["lru"] = EvictionPolicyKind.Lru, ["lfu"] = EvictionPolicyKind.Lfu, ["lifo"] = EvictionPolicyKind.LifoInactiveFirst,
        ["predicted"] = EvictionPolicyKind.Predicted, ["belady"] = EvictionPolicyKind.Belady,
    };

    private static readonly Dictionary<string, MissMode> MissNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["load"] = MissMode.Load, ["reroute"] = MissMode.Reroute,
    };

    private static readonly Dictionary<string, ExpertExecution> ExecutionNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["device"] = ExpertExecution.Device, ["host"] = ExpertExecution.Host, ["auto"] = ExpertExecution.Auto,
    };

    private static readonly Dictionary<string, SchedulerKind> SchedulerNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["fcfs"] = SchedulerKind.Fcfs, ["emoe"] = SchedulerKind.Emoe,
    };

    public static Option<string> ExpertMemory() => new("--expert-memory")
    {
        Description = "Device memory for expert weights: bytes (512MiB, 2GB) or a share of all expert bytes (25%); default all",
        DefaultValueFactory = _ => "all",
    };

    public static Option<EvictionPolicyKind?> Policy() => new("--policy")
    {
        Description = "Expert cache eviction: lru, lfu, lifo (LIFO with inactive-first, the default) or predicted (the default with --predict-every); belady: emoe bench residency",
        CustomParser = result => Parsed<EvictionPolicyKind?>(result, text => ParseNamed(text, PolicyNames)),
    };

    public static Option<int?> PregateWidth() => new("--pregate-width")
    {
        Description = "Experts per token the pre-gate prefetches for the next layer (its top-w); default: the model's top-k",
    };

    public static Option<FileInfo?> PregateWeights() => new("--pregate-weights")
    {
        Description = "Fitted pre-gates from `emoe fit-pregate`, used instead of the next layer's own router (needs --pregate)",
    };

    /// <summary>The fitted pre-gates of a --pregate-weights file, or null when none is given.</summary>
    public static FittedPregate? LoadPregate(FileInfo? file) => file switch
    {
        null => null,
        { Exists: false } => throw new CliException($"{file.FullName}: not found"),
        _ => FittedPregate.Load(file.FullName),
    };

    public static Option<int?> PredictEvery() => new("--predict-every")
    {
        Description = "eMoE's predictor: before requests, keep the experts it predicts for the request's --task resident, " +
            "running it every N requests of a task (it learns from the requests of this process: windows of perplexity, prompts of bench)",
    };

    public static Option<FileInfo?> LayerProfile() => new("--layer-profile")
    {
        Description = "Layer sensitivity profile from `emoe profile`: layers insensitive for a task skip prediction (needs --predict-every)",
    };

    public static Option<string?> Task() => new("--task")
    {
        Description = "Task label of the request (recorded in traces; prediction is per task)",
    };

    public static Option<MissMode> OnMiss() => new("--on-miss")
    {
        Description = "When a token's expert is absent: load it (exact output, the default) or reroute the token to its best resident expert (no stall)",
        DefaultValueFactory = _ => MissMode.Load,
        CustomParser = result => Parsed(result, text => ParseNamed(text, MissNames)),
    };

    /// <summary>--on-miss values for a list option (bench engine --modes).</summary>
    public static MissMode ParseMissMode(string text) => ParseNamed(text, MissNames);

    public static Option<float?> RerouteMaxWeight() => new("--reroute-max-weight")
    {
        Description = "With --on-miss Reroute: an absent expert weighted above this for the token (top-k weights sum to 1) is loaded instead; " +
            "0.5 reroutes only the minor experts of top-2; default: reroute every absent expert",
    };

    /// <summary>--reroute-max-weight is a weight between 0 and 1 and applies to reroute mode only.</summary>
    public static void CheckRerouteMaxWeight(float? limit, MissMode mode)
    {
        if (limit is float w && (mode != MissMode.Reroute || !(w >= 0 && w <= 1)))
            throw new CliException($"--reroute-max-weight needs --on-miss reroute and a weight between 0 and 1, got {w}");
    }

    public static Option<bool> Pregate() => new("--pregate")
    {
        Description = "Pre-gated lookahead: during layer L, run layer L+1's router on layer L's input and prefetch its experts",
    };

    public static Option<FileInfo?> Stats() => new("--stats")
    {
        Description = "Write the expert cache counters (per layer and overall) to this JSON file",
    };

    /// <summary>The options of the expert cache and the predictor, added to a command.</summary>
    public sealed class ExpertOptions
    {
        private readonly Option<string> _memory = ExpertMemory();
        private readonly Option<EvictionPolicyKind?> _policy = Policy();
        private readonly Option<MissMode> _onMiss = OnMiss();
        private readonly Option<float?> _rerouteMaxWeight = RerouteMaxWeight();
        private readonly Option<bool> _pregate = Pregate();
        private readonly Option<int?> _pregateWidth = PregateWidth();
        private readonly Option<FileInfo?> _pregateWeights = PregateWeights();
        private readonly Option<int?> _predictEvery = PredictEvery();
        private readonly Option<FileInfo?> _layerProfile = LayerProfile();
        private readonly Option<ExpertExecution> _execution = new("--expert-exec")
        {
            Description = "Where an expert that is not on the device runs: device (copy it in, the default), host (compute it where its weights are; " +
                "only activations cross the link) or auto (per miss, whichever the measured costs say is cheaper)",
            DefaultValueFactory = _ => ExpertExecution.Device,
            CustomParser = result => Parsed(result, text => ParseNamed(text, ExecutionNames)),
        };
        private readonly Option<int> _cpuMoeLayers = new("--cpu-moe-layers")
        {
            Description = "Keep the experts of the first N MoE layers on the host, computed there (llama.cpp's --n-cpu-moe)",
            DefaultValueFactory = _ => 0,
        };
        private readonly Option<string?> _linkBandwidth = new("--link-bandwidth")
        {
            Description = "Host-to-device bandwidth --expert-exec auto decides by (e.g. 25GB for PCIe 4 x16, per second); default: measured",
        };

        private readonly Option<IReadOnlyList<DeviceSpec>?> _devices = new("--devices")
        {
            Description = "Expert parallelism: spread the experts over these devices (comma list, e.g. cuda:0,cuda:1 or ilgpu-cpu,ilgpu-cpu); " +
                "the first runs attention, routing and the combine; --expert-memory applies to each (or give a comma list)",
            CustomParser = result => Parsed<IReadOnlyList<DeviceSpec>?>(result, text => [.. text.Split(',').Select(DeviceSpec.Parse)]),
        };
        private readonly Option<FileInfo?> _placement = new("--placement")
        {
            Description = "Which device serves each expert with --devices: a placement file from `emoe place`; default: round-robin",
        };

        public ExpertOptions(Command command)
        {
            foreach (var option in new Option[]
                     {
                         _memory, _policy, _onMiss, _rerouteMaxWeight, _pregate, _pregateWidth, _pregateWeights, _predictEvery, _layerProfile,
                         _execution, _cpuMoeLayers, _linkBandwidth, _devices, _placement,
                     })
                command.Options.Add(option);
        }

        /// <summary>Model options with the expert cache and predictor the command line asks for.</summary>
        public ModelOptions Read(ParseResult parse, ModelOptions options)
        {
            int? every = parse.GetValue(_predictEvery);
            var policy = parse.GetValue(_policy) ?? (every is null ? EvictionPolicyKind.LifoInactiveFirst : EvictionPolicyKind.Predicted);
            if (policy == EvictionPolicyKind.Belady)
                throw new CliException("--policy belady needs the future routing; it is measured offline by `emoe bench residency`");
            if (every is null && policy == EvictionPolicyKind.Predicted)
                throw new CliException("--policy predicted keeps a predictor's experts resident: give --predict-every N");
            if (every is not null && policy != EvictionPolicyKind.Predicted)
                throw new CliException($"--predict-every keeps the predicted experts resident with --policy predicted, not {policy}");
            if (parse.GetValue(_pregateWidth) is not null && !parse.GetValue(_pregate)) throw new CliException("--pregate-width needs --pregate");
            if (parse.GetValue(_pregateWeights) is not null && !parse.GetValue(_pregate)) throw new CliException("--pregate-weights needs --pregate");
            CheckRerouteMaxWeight(parse.GetValue(_rerouteMaxWeight), parse.GetValue(_onMiss));
            if (every <= 0) throw new CliException($"--predict-every must be at least 1, got {every}");
            var profileFile = parse.GetValue(_layerProfile);
            if (profileFile is not null && every is null) throw new CliException("--layer-profile is used by the predictor: give --predict-every N");
            if (profileFile is { Exists: false }) throw new CliException($"{profileFile.FullName}: not found");
            var devices = parse.GetValue(_devices);
            var placementFile = parse.GetValue(_placement);
            if (placementFile is not null && devices is null) throw new CliException("--placement spreads the experts over --devices: give --devices");
            if (placementFile is { Exists: false }) throw new CliException($"{placementFile.FullName}: not found");
            var budgets = parse.GetValue(_memory)!.Split(',').Select(ExpertBudget.Parse).ToList();
            if (budgets.Count > 1 && budgets.Count != (devices?.Count ?? 1))
                throw new CliException($"--expert-memory has {budgets.Count} budgets for {devices?.Count ?? 1} device(s): give one, or one per device");
            return options with
            {
                Devices = devices,
                Placement = placementFile is null ? null : ExpertPlacement.Load(placementFile.FullName),
                DeviceBudgets = budgets.Count > 1 ? budgets : null,
                Experts = new ExpertCacheOptions
                {
                    Budget = budgets[0],
                    Policy = policy,
                    OnMiss = parse.GetValue(_onMiss),
                    RerouteMaxWeight = parse.GetValue(_rerouteMaxWeight),
                    Pregate = parse.GetValue(_pregate),
                    PregateWidth = parse.GetValue(_pregateWidth),
                    FittedPregate = LoadPregate(parse.GetValue(_pregateWeights)),
                    Execution = parse.GetValue(_execution),
                    CpuMoeLayers = parse.GetValue(_cpuMoeLayers) is int layers and >= 0 ? layers : throw new CliException($"--cpu-moe-layers must be >= 0, got {parse.GetValue(_cpuMoeLayers)}"),
                    LinkBytesPerSecond = parse.GetValue(_linkBandwidth) is string link ? ByteSize.Parse(link.Replace("/s", "", StringComparison.OrdinalIgnoreCase), "--link-bandwidth") : null,
                },
                Prediction = every is int n
                    ? new PredictionOptions { PredictEvery = n, LayerProfile = profileFile is null ? null : LayerSensitivityProfile.Load(profileFile.FullName) }
                    : null,
            };
        }
    }

    /// <summary>The engine's batching options, added to a command.</summary>
    public sealed class EngineOptionsReader
    {
        private readonly Option<int> _maxBatch = new("--max-batch")
        {
            Description = "Most sequences running at once (continuous batching); the rest wait", DefaultValueFactory = _ => 16,
        };
        private readonly Option<int> _tokensPerStep = new("--max-tokens-per-step")
        {
            Description = "Most tokens in one forward step: decode tokens first, then prefill chunks", DefaultValueFactory = _ => 256,
        };
        private readonly Option<string?> _kvMemory = new("--kv-memory")
        {
            Description = "Device memory for the paged KV cache (e.g. 64MiB); default: room for --max-batch sequences of the whole context",
        };
        private readonly Option<SchedulerKind> _scheduler = new("--scheduler")
        {
            Description = "fcfs (arrival order) or emoe (eMoE's task-aware SLO scheduler: deadline order, SLO-checked admission)",
            DefaultValueFactory = _ => SchedulerKind.Fcfs,
            CustomParser = result => Parsed(result, text => ParseNamed(text, SchedulerNames)),
        };

        private readonly Option<int?> _threads = Threads();

        public EngineOptionsReader(Command command)
        {
            foreach (var option in new Option[] { _maxBatch, _tokensPerStep, _kvMemory, _scheduler, _threads }) command.Options.Add(option);
        }

        /// <summary>
        /// <paramref name="options"/> with the engine and host threads the command line asks for;
        /// expected output lengths seeded from the model's evaluation prompts, if any.
        /// </summary>
        public ModelOptions Read(ParseResult parse, string modelDirectory, ModelOptions options)
        {
            if (parse.GetValue(_threads) is int t && t < 1) throw new CliException($"--threads must be at least 1, got {t}");
            return options with { Engine = ReadEngine(parse, modelDirectory), Threads = parse.GetValue(_threads) };
        }

        private EngineOptions ReadEngine(ParseResult parse, string modelDirectory)
        {
            int batch = parse.GetValue(_maxBatch), tokens = parse.GetValue(_tokensPerStep);
            if (batch < 1) throw new CliException($"--max-batch must be at least 1, got {batch}");
            if (tokens < 1) throw new CliException($"--max-tokens-per-step must be at least 1, got {tokens}");
            string? kv = parse.GetValue(_kvMemory);
            return new EngineOptions
            {
                MaxBatch = batch,
                MaxTokensPerStep = tokens,
                KvMemoryBytes = kv is null ? null : ByteSize.Parse(kv, "--kv-memory"),
                Scheduler = parse.GetValue(_scheduler),
                ExpectedOutputTokens = Bench.EvalPrompts.MeanMaxTokens(modelDirectory),
            };
        }
    }

    /// <summary>One line on the expert cache, and the full counters to --stats when given.</summary>
    public static void ReportExperts(MoeModel model, FileInfo? statsFile)
    {
        var s = model.ExpertStats;
        var o = s.Overall;
        Console.Error.WriteLine(
            $"experts: {s.Slots}/{s.TotalExperts} slots ({ByteSize.Format(s.SlotBytes)}, {s.Policy}), requests {o.Requests}, " +
            $"hit rate {o.HitRate:P1}, late prefetches {o.LatePrefetches}, misses {o.Misses}, copied {ByteSize.Format(o.BytesCopied)}, " +
            $"stalled {o.StallSeconds * 1000:0.0} ms, rerouted {o.Rerouted}" +
            (o.HostExperts > 0 ? $", on the host {o.HostAssignments} assignments of {o.HostExperts} experts ({o.HostSeconds * 1000:0.0} ms, {ByteSize.Format(o.BytesNotCopied)} not copied)" : "") +
            (o.LookaheadActual > 0 ? $", pre-gate accuracy {o.LookaheadAccuracy:P1}" : "") +
            (model.Planner is { } p ? $", predictor runs {p.Invocations} ({p.PredictTime.TotalMilliseconds:0.00} ms), waited for predicted sets {s.PredictedSetWaitSeconds * 1000:0.0} ms" : "") +
            (s.Devices is { } devices ? $", per device: slots {string.Join("/", devices.Select(d => d.Slots))}, requests {string.Join("/", devices.Select(d => d.Overall.Requests))}, " +
                $"misses {string.Join("/", devices.Select(d => d.Overall.Misses))}" : ""));
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
