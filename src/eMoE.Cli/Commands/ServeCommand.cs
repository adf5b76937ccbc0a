using System.CommandLine;
using System.Globalization;
using eMoE.Compute;
using eMoE.Inference;
using eMoE.Server;

namespace eMoE.Cli.Commands;

/// <summary>
/// <c>emoe serve</c>: the OpenAI-compatible HTTP server over the engine. It listens at once and
/// loads the model in the background (/health answers 503 until it is ready); SIGTERM or Ctrl+C
/// stops it gracefully (exit code 0).
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var host = new Option<string>("--host") { Description = "Address to listen on: an IP address or localhost", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on; 0 picks a free one (printed on stderr)", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string?>("--api-key")
        {
            Description = "Require 'Authorization: Bearer KEY' on /v1 endpoints (default: the EMOE_API_KEY environment variable, else none); /health and /metrics stay open",
        };
        var maxWaiting = new Option<int>("--max-waiting")
        {
            Description = "Requests that may wait beyond the --max-batch running ones; the next gets 429 with Retry-After", DefaultValueFactory = _ => 64,
        };
        var servedName = new Option<string?>("--served-model-name") { Description = "Model name clients send and see in /v1/models; default: the model directory's name" };
        var shutdown = new Option<double>("--shutdown-timeout")
        {
            Description = "Seconds running requests may go on after SIGTERM before they are cancelled", DefaultValueFactory = _ => 10,
        };
        var maxBody = new Option<string>("--max-body-size") { Description = "Largest request body (e.g. 1MiB); larger ones get 413", DefaultValueFactory = _ => "1MiB" };

        var command = new Command("serve", "Serve the model over an OpenAI-compatible HTTP API (chat completions, completions, models, health, Prometheus metrics)")
        {
            model, device, host, port, apiKey, maxWaiting, servedName, shutdown, maxBody,
        };
        var expertOptions = new CommonOptions.ExpertOptions(command);
        var engineOptions = new CommonOptions.EngineOptionsReader(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var modelOptions = engineOptions.Read(parse, directory, expertOptions.Read(parse, new ModelOptions { Device = parse.GetValue(device) }));
            double seconds = parse.GetValue(shutdown);
            if (!(seconds >= 0) || double.IsInfinity(seconds)) throw new CliException($"--shutdown-timeout must be a number of seconds >= 0, got {seconds}");
            string? key = parse.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("EMOE_API_KEY");
            var options = new ServerOptions
            {
                ModelDirectory = directory,
                Model = modelOptions,
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                ApiKey = string.IsNullOrEmpty(key) ? null : key,
                MaxWaiting = parse.GetValue(maxWaiting),
                ServedModelName = parse.GetValue(servedName),
                ShutdownTimeout = TimeSpan.FromSeconds(seconds),
                MaxRequestBodyBytes = ByteSize.Parse(parse.GetValue(maxBody)!, "--max-body-size"),
                HandleShutdownSignals = true,
                LoadModel = _ => ModelLoading.Load(directory, modelOptions),
            };
            await using var server = EmoeServer.Build(options);
            await server.StartAsync(cancellationToken);
            Console.Error.WriteLine($"emoe: listening on {server.BaseAddress} (model '{server.ServedModelName}' loading from {directory})");
            _ = server.ModelLoaded.ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully && server.Model is { } m)
                {
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"emoe: model '{server.ServedModelName}' ready on {m.Device.Kind} ({m.Device.Name}): context {m.ContextLength} tokens, KV {ByteSize.Format(m.KvPoolBytes)}"));
                }
            }, TaskScheduler.Default);
            await server.RunAsync(cancellationToken);
            Console.Error.WriteLine("emoe: stopped");
            return 0;
        });
        return command;
    }
}
