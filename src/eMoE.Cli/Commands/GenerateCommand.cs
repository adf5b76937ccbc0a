using System.CommandLine;
using eMoE.Compute;
using eMoE.Inference;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe generate</c>: stream a continuation of a prompt, then one summary line.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var prompt = new Option<string>("--prompt") { Description = "Text to continue", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens; 0 = off", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass; 1 = off", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Random seed (same seed, same text)" };
        var stats = CommonOptions.Stats();
        var trace = new Option<FileInfo?>("--trace") { Description = "Append this prompt's routing (per layer, per token: experts and weights) to a JSON Lines file" };
        var task = CommonOptions.Task();
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Generate --max-tokens tokens even past end-of-sequence (fixed-length runs, as llama-bench does)" };

        var command = new Command("generate", "Generate text from a prompt, streaming tokens as they come")
        {
            model, device, prompt, maxTokens, temperature, topK, topP, seed, stats, trace, task, ignoreEos,
        };
        var expertOptions = new CommonOptions.ExpertOptions(command);
        var engineOptions = new CommonOptions.EngineOptionsReader(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var options = new GenerationOptions
            {
                MaxTokens = parse.GetValue(maxTokens),
                Sampling = new SamplingOptions
                {
                    Temperature = parse.GetValue(temperature),
                    TopK = parse.GetValue(topK),
                    TopP = parse.GetValue(topP),
                    Seed = parse.GetValue(seed),
                },
                RecordRouting = parse.GetValue(trace) is not null,
                Task = parse.GetValue(task),
                StopAtEndOfSequence = !parse.GetValue(ignoreEos),
            };
            options.Sampling.Validate();
            if (options.MaxTokens < 0) throw new CliException($"--max-tokens must be >= 0, got {options.MaxTokens}");

            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var modelOptions = engineOptions.Read(parse, directory, expertOptions.Read(parse, new ModelOptions { Device = parse.GetValue(device) }));
            using var moe = ModelLoading.Load(directory, modelOptions);
            var generation = moe.Generate(parse.GetValue(prompt)!, options);
            await foreach (var token in generation.WithCancellation(cancellationToken))
            {
                Console.Out.Write(token.Text);
                Console.Out.Flush();
            }
            Console.Out.WriteLine(generation.FlushText());
            var s = generation.Stats;
            Console.Error.WriteLine(
                $"prompt tokens: {s.PromptTokens}, generated tokens: {s.GeneratedTokens}, " +
                $"prefill: {s.PrefillTokensPerSecond:0.0} tok/s, decode: {s.DecodeTokensPerSecond:0.0} tok/s, " +
                $"device memory: {ByteSize.Format(moe.Device.PeakAllocatedBytes)} ({moe.Device.Kind}: {moe.Device.Name}), " +
                $"finish: {s.FinishReason}");
            CommonOptions.ReportExperts(moe, parse.GetValue(stats));
            if (parse.GetValue(trace) is { } traceFile)
            {
                using var writer = File.AppendText(traceFile.FullName);
                s.Trace!.WriteLine(writer);
            }
            return 0;
        });
        return command;
    }
}
