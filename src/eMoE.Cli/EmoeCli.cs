using System.CommandLine;
using eMoE.Cli.Commands;

namespace eMoE.Cli;

/// <summary>`emoe`: generate, score, tokenize and inspect MoE models on ILGPU.</summary>
public static class EmoeCli
{
    /// <summary>Runs one command line; returns the process exit code (0 success, 1 bad input, 2 internal error).</summary>
    public static Task<int> RunAsync(string[] args)
    {
        // Named emoe in usage and help (a RootCommand takes the assembly's name, eMoE.Cli).
        var root = new Command("emoe", "eMoE: Mixture-of-Experts inference on GPUs that cannot hold the whole model (CUDA, OpenCL, or the host)")
        {
            new System.CommandLine.Help.HelpOption(), new VersionOption(),
        };
        root.Options.Add(CommonOptions.Verbose);
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(BatchCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(PerplexityCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(TemplateCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(ProfileCommand.Create());
        root.Subcommands.Add(FitPregateCommand.Create());
        root.Subcommands.Add(PlaceCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        var parse = root.Parse(args);
        return CliErrors.RunAsync(parse, parse.GetValue(CommonOptions.Verbose));
    }
}
