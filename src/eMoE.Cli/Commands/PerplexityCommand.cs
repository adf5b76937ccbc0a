using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using eMoE.Inference;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe perplexity</c>: mean NLL and perplexity of a text file.</summary>
internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var file = new Option<FileInfo>("--file") { Description = "UTF-8 text to score", Required = true };
        var context = new Option<int>("--context") { Description = "Window length in tokens", DefaultValueFactory = _ => 256 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: tokens, nll, perplexity" };
        var stats = CommonOptions.Stats();
        var task = CommonOptions.Task();

        var command = new Command("perplexity",
            "Perplexity of a text: tokenized without special tokens, cut into consecutive windows of --context tokens; " +
            "every token after the first of a window is scored given the ones before it")
        {
            model, device, file, context, json, stats, task,
        };
        var expertOptions = new CommonOptions.ExpertOptions(command);
        var engineOptions = new CommonOptions.EngineOptionsReader(command);
        command.SetAction((parse, cancellationToken) =>
        {
            var path = parse.GetValue(file)!;
            if (!path.Exists) throw new CliException($"{path.FullName}: not found");
            string text = File.ReadAllText(path.FullName);
            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var modelOptions = engineOptions.Read(parse, directory, expertOptions.Read(parse, new ModelOptions
            {
                Device = parse.GetValue(device), ContextLength = parse.GetValue(context),
            }));
            using var moe = ModelLoading.Load(directory, modelOptions);
            var ids = moe.RequireTokenizer().Encode(text, addSpecialTokens: false);
            var result = moe.ScorePerplexity(ids, new PerplexityOptions { Context = parse.GetValue(context), Task = parse.GetValue(task) }, cancellationToken);
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["tokens"] = result.Tokens,
                    ["nll"] = result.MeanNll,
                    ["perplexity"] = result.Perplexity,
                }));
            }
            else
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"tokens: {result.Tokens}, mean nll: {result.MeanNll:0.00000} nats/token, perplexity: {result.Perplexity:0.0000}"));
            }
            CommonOptions.ReportExperts(moe, parse.GetValue(stats));
            return Task.FromResult(0);
        });
        return command;
    }
}
