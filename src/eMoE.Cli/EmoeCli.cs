using System.CommandLine;
using eMoE.Cli.Commands;

namespace eMoE.Cli;

/// <summary>`emoe`: generate, score, tokenize and inspect MoE models on ILGPU.</summary>
public static class EmoeCli
{
    /// <summary>Runs one command line; returns the process exit code (0 success, 1 bad input, 2 internal error).</summary>
    public static Task<int> RunAsync(string[] args)
    {
        var root = new RootCommand("eMoE: Mixture-of-Experts inference on ILGPU (CUDA, or the CPU accelerator)");
        root.Options.Add(CommonOptions.Verbose);
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(BatchCommand.Create());
        root.Subcommands.Add(PerplexityCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(ProfileCommand.Create());
        root.Subcommands.Add(FitPregateCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        var parse = root.Parse(args);
        return CliErrors.RunAsync(parse, parse.GetValue(CommonOptions.Verbose));
    }
}
