using System.CommandLine;
using System.Globalization;
using eMoE.Cli.Bench;
using eMoE.Inference;
using eMoE.Prediction;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe profile</c>: per task and layer, how much perplexity rises when the layer's routing is random.</summary>
internal static class ProfileCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var texts = new Option<string[]>("--text")
        {
            Description = "TASK=FILE: UTF-8 text of a task (repeatable); default: the last --tokens tokens of each eval/<task>.test.txt in the model directory",
            AllowMultipleArgumentsPerToken = false,
        };
        var tokens = new Option<int>("--tokens") { Description = "Tokens scored per task", DefaultValueFactory = _ => 2048 };
        var context = new Option<int>("--context") { Description = "Window length in tokens", DefaultValueFactory = _ => 256 };
        var threshold = new Option<double>("--threshold")
        {
            Description = "Relative perplexity increase (0.05 = +5%) at or above which a layer's routing counts as mattering for the task",
            DefaultValueFactory = _ => 0.05,
        };
        var seed = new Option<int>("--seed") { Description = "Seed of the random routing", DefaultValueFactory = _ => 0 };
        var output = new Option<FileInfo>("--out") { Description = "Profile to write (JSON), for --layer-profile", Required = true };
        var command = new Command("profile",
            "eMoE's offline task profiling: per task and MoE layer, perplexity with that layer's tokens sent to random experts; " +
            "layers below --threshold are insensitive and skip prediction when the profile is given to --layer-profile")
        {
            model, device, texts, tokens, context, threshold, seed, output,
        };
        command.SetAction((parse, cancel) =>
        {
            int count = parse.GetValue(tokens);
            if (count < 2) throw new CliException($"--tokens must be at least 2, got {count}");
            if (parse.GetValue(threshold) < 0) throw new CliException("--threshold must be >= 0");
            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var files = TaskFiles(directory, parse.GetValue(texts) ?? []);
            using var moe = ModelLoading.Load(directory, new ModelOptions { Device = parse.GetValue(device), ContextLength = parse.GetValue(context) });
            var tokenizer = moe.RequireTokenizer();
            var byTask = new Dictionary<string, IReadOnlyList<int>>(StringComparer.Ordinal);
            foreach (var (task, file) in files)
            {
                var ids = tokenizer.Encode(File.ReadAllText(file), addSpecialTokens: false);
                byTask[task] = ids.Count > count ? ids.Skip(ids.Count - count).ToArray() : ids.ToArray();
            }
            var progress = new Progress<string>(Console.Error.WriteLine);
            var profile = LayerProfiler.Measure(moe, byTask, parse.GetValue(threshold), parse.GetValue(context), parse.GetValue(seed), progress, cancel);
            profile.Save(parse.GetValue(output)!.FullName);
            var inv = CultureInfo.InvariantCulture;
            Console.Out.WriteLine("| task | perplexity | " + string.Join(" | ", Enumerable.Range(0, profile.NumLayers).Select(l => $"layer {l}")) + " |");
            Console.Out.WriteLine("|---|---|" + string.Concat(Enumerable.Repeat("---|", profile.NumLayers)));
            foreach (var (task, t) in profile.Tasks)
            {
                Console.Out.WriteLine(string.Create(inv, $"| {task} | {t.Perplexity:0.00} | ") +
                    string.Join(" | ", t.Layers.Select(l => string.Create(inv, $"{l.Increase:+0.0%;-0.0%}{(l.Sensitive ? "" : " (insensitive)")}"))) + " |");
            }
            return Task.FromResult(0);
        });
        return command;
    }

    private static List<(string Task, string File)> TaskFiles(string modelDirectory, string[] texts)
    {
        var result = new List<(string, string)>();
        foreach (string spec in texts)
        {
            int eq = spec.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == spec.Length - 1) throw new CliException($"--text '{spec}': expected TASK=FILE");
            string file = spec[(eq + 1)..];
            if (!File.Exists(file)) throw new CliException($"{Path.GetFullPath(file)}: not found");
            result.Add((spec[..eq], file));
        }
        return result.Count > 0 ? result : EvalPrompts.TestTexts(modelDirectory);
    }
}
