using eMoE.Inference;

namespace eMoE.Server;

/// <summary>How <see cref="EmoeServer"/> listens, what it serves and its limits.</summary>
public sealed record ServerOptions
{
    /// <summary>The model directory (config.json, safetensors, tokenizer.json, optionally a chat template).</summary>
    public required string ModelDirectory { get; init; }

    /// <summary>Device, expert cache, engine (batch, KV memory, scheduler): as <see cref="MoeModel.Load"/> takes them.</summary>
    public ModelOptions Model { get; init; } = new();

    /// <summary>The address to listen on: an IP address or <c>localhost</c> (default 127.0.0.1).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>The port; 0 lets the system pick a free one (see <see cref="EmoeServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>When set, /v1 endpoints need <c>Authorization: Bearer KEY</c>; /health and /metrics never do.</summary>
    public string? ApiKey { get; init; }

    /// <summary>
    /// Requests that may wait beyond those running (<see cref="Scheduling.EngineOptions.MaxBatch"/>):
    /// one more is answered 429 with Retry-After.
    /// </summary>
    public int MaxWaiting { get; init; } = 64;

    /// <summary>The model name clients send and see (/v1/models); default the directory's name.</summary>
    public string? ServedModelName { get; init; }

    /// <summary>Largest request body in bytes (default 1 MiB); a larger one is answered 413.</summary>
    public long MaxRequestBodyBytes { get; init; } = 1 << 20;

    /// <summary>
    /// On shutdown (SIGTERM, or <see cref="EmoeServer.StopAsync"/>), how long running requests may go on
    /// before they are cancelled (default 10 s); new requests are refused at once.
    /// </summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Seconds a 429 answer tells the client to wait (Retry-After).</summary>
    public int RetryAfterSeconds { get; init; } = 1;

    /// <summary>Stop on SIGTERM / Ctrl+C (the command line sets it; in-process hosts leave it off).</summary>
    public bool HandleShutdownSignals { get; init; }

    /// <summary>
    /// How the model is loaded, in the background once the server listens; default
    /// <see cref="MoeModel.Load"/> of <see cref="ModelDirectory"/> with <see cref="Model"/>.
    /// </summary>
    public Func<CancellationToken, MoeModel>? LoadModel { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting that cannot work.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelDirectory)) throw new ArgumentException("the model directory is missing");
        if (Port is < 0 or > 65535) throw new ArgumentException($"the port must be between 0 and 65535, got {Port}");
        if (MaxWaiting < 0) throw new ArgumentException($"max waiting must be >= 0, got {MaxWaiting}");
        if (MaxRequestBodyBytes < 1024) throw new ArgumentException($"the request body limit must be at least 1024 bytes, got {MaxRequestBodyBytes}");
        if (ShutdownTimeout < TimeSpan.Zero) throw new ArgumentException($"the shutdown timeout must be >= 0, got {ShutdownTimeout}");
        if (RetryAfterSeconds < 1) throw new ArgumentException($"Retry-After must be at least 1 second, got {RetryAfterSeconds}");
        if (ApiKey is { Length: 0 }) throw new ArgumentException("the API key must not be empty");
        if (ServedModelName is { } name && string.IsNullOrWhiteSpace(name)) throw new ArgumentException("the served model name must not be empty");
    }
}
