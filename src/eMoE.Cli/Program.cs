using System.CommandLine;
using eMoE.Cli;
using eMoE.Cli.Commands;

// `emoe`: generate, score, tokenize and inspect MoE models on ILGPU.
var root = new RootCommand("eMoE: Mixture-of-Experts inference on ILGPU (CUDA, or the CPU accelerator)");
root.Options.Add(CommonOptions.Verbose);
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(PerplexityCommand.Create());
root.Subcommands.Add(TokenizeCommand.Create());
root.Subcommands.Add(InspectCommand.Create());

var parse = root.Parse(args);
return await CliErrors.RunAsync(parse, parse.GetValue(CommonOptions.Verbose));
