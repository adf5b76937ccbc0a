using System.CommandLine;
using eMoE.Cli.Bench;
using eMoE.Inference;
using eMoE.Prediction;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe fit-pregate</c>: fits pre-gates on the model's own routing, for <c>--pregate-weights</c>.</summary>
internal static class FitPregateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var texts = new Option<FileInfo[]>("--text")
        {
            Description = "UTF-8 text to fit on (repeatable); default: evaluation prompts --skip.. of every task in the model's eval/*.jsonl",
        };
        var prompts = new Option<int>("--prompts") { Description = "Evaluation prompts per task to fit on", DefaultValueFactory = _ => 40 };
        var skip = new Option<int>("--skip")
        {
            Description = "Evaluation prompts per task left out first (the benchmarks use the first ones)", DefaultValueFactory = _ => 120,
        };
        var ridge = new Option<double>("--ridge")
        {
            Description = "Pull toward the training-free pre-gate (the next layer's own router); 0 = least squares",
            DefaultValueFactory = _ => new PregateFitOptions().Ridge,
        };
        var output = new Option<FileInfo>("--out") { Description = "Pre-gate file to write (safetensors), for --pregate-weights", Required = true };
        var command = new Command("fit-pregate",
            "Fit the pre-gates (Pre-gated MoE): per layer L+1, a linear gate on layer L's MoE input fitted to layer L+1's router logits " +
            "(ridge regression toward the training-free pre-gate)")
        {
            model, device, texts, prompts, skip, ridge, output,
        };
        command.SetAction((parse, cancel) =>
        {
            if (parse.GetValue(prompts) <= 0 || parse.GetValue(skip) < 0) throw new CliException("--prompts must be positive and --skip at least 0");
            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var files = parse.GetValue(texts) ?? [];
            foreach (var file in files.Where(f => !f.Exists)) throw new CliException($"{file.FullName}: not found");
            using var moe = ModelLoading.Load(directory, new ModelOptions { Device = parse.GetValue(device) });
            var tokenizer = moe.RequireTokenizer();
            var sequences = files.Length > 0
                ? files.Select(f => (IReadOnlyList<int>)tokenizer.Encode(File.ReadAllText(f.FullName), addSpecialTokens: true).ToArray()).ToList()
                : EvalPrompts.LoadInterleaved(directory, parse.GetValue(prompts), parse.GetValue(skip))
                    .Select(p => (IReadOnlyList<int>)tokenizer.Encode(p.Prompt + p.Reference, addSpecialTokens: true).ToArray()).ToList();
            if (sequences.Count == 0) throw new CliException($"no evaluation prompts after the first {parse.GetValue(skip)} of each task");
            var progress = new Progress<string>(Console.Error.WriteLine);
            var fitted = PregateFitter.Fit(moe, sequences, new PregateFitOptions { Ridge = parse.GetValue(ridge) }, progress, cancel);
            fitted.Save(parse.GetValue(output)!.FullName);
            Console.Out.WriteLine($"fitted pre-gates for layers 1..{fitted.NumLayers - 1} on {fitted.Tokens} tokens of {sequences.Count} sequences -> {parse.GetValue(output)!.FullName}");
            return Task.FromResult(0);
        });
        return command;
    }
}
