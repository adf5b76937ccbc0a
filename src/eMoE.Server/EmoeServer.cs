using System.Net;
using eMoE.Inference;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Prometheus;

namespace eMoE.Server;

/// <summary>
/// eMoE's OpenAI-compatible HTTP server (ASP.NET Core, Kestrel, minimal APIs):
/// <c>POST /v1/chat/completions</c>, <c>POST /v1/completions</c> (whole or streamed as Server-Sent
/// Events), <c>GET /v1/models</c>, <c>GET /health</c> and <c>GET /metrics</c> (Prometheus). It listens
/// first and loads the model in the background (503 until it is ready). Stopping refuses new
/// requests, lets running ones finish until <see cref="ServerOptions.ShutdownTimeout"/>, cancels the
/// rest, and frees the model.
/// </summary>
public sealed class EmoeServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ModelHost _host;
    private readonly ServerOptions _options;
    private readonly AdmissionQueue _queue;
    private int _started, _stopped;

    private EmoeServer(WebApplication app, ModelHost host, AdmissionQueue queue, ServerOptions options)
    {
        _app = app;
        _host = host;
        _queue = queue;
        _options = options;
    }

    /// <summary>The name clients use for the model (<see cref="ServerOptions.ServedModelName"/> or the directory's name).</summary>
    public string ServedModelName => _host.ServedName;

    /// <summary>Where the server listens (with the port the system chose for port 0); set by <see cref="StartAsync"/>.</summary>
    public Uri BaseAddress { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Completes once the model is loaded and serving; faults with the load's error.</summary>
    public Task ModelLoaded => _host.Loaded;

    /// <summary>The model once loaded (null before); its <see cref="MoeModel.EngineStats"/> show what runs.</summary>
    public MoeModel? Model => _host.Model;

    /// <summary>Generation requests admitted now (running, waiting or being answered).</summary>
    public int RequestsInFlight => _queue.InFlight;

    /// <summary>Builds the server (nothing listens until <see cref="StartAsync"/> or <see cref="RunAsync"/>).</summary>
    /// <exception cref="ArgumentException">An option cannot work (the message names it).</exception>
    public static EmoeServer Build(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var address = ParseHost(options.Host);
        string served = options.ServedModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.ModelDirectory)));
        var host = new ModelHost(served, options.ModelDirectory);
        var engine = options.Model.Engine;
        var queue = new AdmissionQueue(Math.Min(engine.MaxBatch, engine.MaxTokensPerStep) + options.MaxWaiting, options.RetryAfterSeconds);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = [],
            ApplicationName = typeof(EmoeServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        // Connection resets by clients that cancel are expected, not warnings.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Server.Kestrel", LogLevel.Error);
        builder.WebHost.UseKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            kestrel.Listen(address, options.Port);
        });
        // Our own deadline cancels what still runs; the host's is a little later so handlers end cleanly.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout + TimeSpan.FromSeconds(5));
        if (options.HandleShutdownSignals) builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        else builder.Services.AddSingleton<IHostLifetime, NoSignalsLifetime>();

        var app = builder.Build();
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("eMoE.Server");
        var metrics = new ServerMetrics(() => host.Model, () => queue.InFlight);
        var generation = new GenerationEndpoints(host, queue, metrics, options.MaxRequestBodyBytes, logger);
        var info = new InfoEndpoints(host);
        var keyCheck = options.ApiKey is { } key ? new ApiKeyCheck(key) : null;

        app.UseOpenAiErrors(logger);
        app.Use(async (context, next) =>
        {
            if (keyCheck is not null && context.Request.Path.StartsWithSegments("/v1") && !keyCheck.Allows(context.Request))
                throw ApiKeyCheck.Unauthorized(context.Request);
            if (host.Draining) context.Response.Headers.Connection = "close";
            await next(context).ConfigureAwait(false);
        });
        app.UseRouting();
        app.MapPost("/v1/chat/completions", generation.ChatAsync);
        app.MapPost("/v1/completions", generation.CompletionsAsync);
        app.MapGet("/v1/models", info.ModelsAsync);
        app.MapGet("/v1/models/{id}", (HttpContext context, string id) => info.ModelAsync(context, id));
        app.MapGet("/health", info.HealthAsync);
        app.MapMetrics("/metrics", metrics.Registry);

        var lifetime = app.Services.GetRequiredService<IHostApplicationLifetime>();
        lifetime.ApplicationStopping.Register(() => host.Drain(options.ShutdownTimeout));
        return new EmoeServer(app, host, queue, options);
    }

    private static IPAddress ParseHost(string host)
    {
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        return IPAddress.TryParse(host, out var address) ? address : throw new ArgumentException($"--host must be an IP address or localhost, got '{host}'");
    }

    /// <summary>Starts listening, then loads the model in the background (see <see cref="ModelLoaded"/>). Only the first call starts.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        await _app.StartAsync(cancellationToken).ConfigureAwait(false);
        var addresses = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        if (addresses?.FirstOrDefault() is string first) BaseAddress = new Uri(first.TrimEnd('/') + "/");
        var options = _options;
        _host.StartLoading(options.LoadModel ?? (_ => MoeModel.Load(options.ModelDirectory, options.Model)));
    }

    /// <summary>
    /// Starts, serves until <paramref name="cancellationToken"/> is cancelled or (with
    /// <see cref="ServerOptions.HandleShutdownSignals"/>) SIGTERM or Ctrl+C arrives, then stops
    /// gracefully. It starts the server unless <see cref="StartAsync"/> already did. A model that fails to load stops the server and its exception is rethrown.
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        await StartAsync(cancellationToken).ConfigureAwait(false);
        var lifetime = _app.Services.GetRequiredService<IHostApplicationLifetime>();
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (cancellationToken.Register(() => stop.TrySetResult()))
        using (lifetime.ApplicationStopping.Register(() => stop.TrySetResult()))
        {
            _ = _host.Loaded.ContinueWith(t =>
            {
                if (t.IsFaulted) stop.TrySetResult();
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            await stop.Task.ConfigureAwait(false);
        }
        await StopAsync().ConfigureAwait(false);
        if (_host.Loaded.IsFaulted && _host.Loaded.Exception!.InnerException is { } error and not OperationCanceledException)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
    }

    /// <summary>
    /// Stops: no new requests, running ones may finish until the shutdown timeout and are cancelled
    /// then; the model is freed. Safe to call more than once.
    /// </summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0) return;
        _host.Drain(_options.ShutdownTimeout);
        await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        _host.Dispose();
    }

    /// <summary>Stops (if running) and releases the server.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>A host lifetime that ignores process signals (the server runs inside another program).</summary>
    private sealed class NoSignalsLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
