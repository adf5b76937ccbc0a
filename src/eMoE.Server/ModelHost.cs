using eMoE.Inference;
using eMoE.Model;

namespace eMoE.Server;

/// <summary>
/// The model behind the server, loaded in the background once Kestrel listens: until it is ready
/// every endpoint but /metrics answers 503 (llama.cpp's "Loading model"); a failed load stays a 503
/// naming the failure (the command line then exits). Also the shutdown state: once draining, new
/// requests are refused and, after the deadline, running ones are cancelled.
/// </summary>
internal sealed class ModelHost : IDisposable
{
    private readonly TaskCompletionSource _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _abort = new();
    private readonly CancellationTokenSource _loadCancel = new();
    private volatile MoeModel? _model;
    private volatile Exception? _failure;
    private volatile bool _draining;

    public ModelHost(string servedName, string directory)
    {
        ServedName = servedName;
        Defaults = SamplingDefaults.Read(directory);
        Template = ChatTemplate.ForModel(directory);
    }

    public string ServedName { get; }
    public SamplingDefaults Defaults { get; }
    public ChatTemplate Template { get; }
    public MoeModel? Model => _model;
    public DateTimeOffset CreatedAt { get; } = DateTimeOffset.UtcNow;

    /// <summary>Completes when the model is ready; faults with the load's exception.</summary>
    public Task Loaded => _loaded.Task;

    /// <summary>Cancelled when the shutdown deadline passes: running requests stop.</summary>
    public CancellationToken Aborted => _abort.Token;

    public bool Draining => _draining;

    public void StartLoading(Func<CancellationToken, MoeModel> load)
    {
        _ = Task.Run(() =>
        {
            try
            {
                var model = load(_loadCancel.Token);
                if (_draining)
                {
                    model.Dispose();
                    throw new OperationCanceledException("the server stopped while the model was loading");
                }
                _model = model;
                _loaded.TrySetResult();
            }
            catch (Exception e)
            {
                _failure = e;
                _loaded.TrySetException(e);
            }
        });
    }

    /// <summary>The model, or a 503: loading, failed, or shutting down.</summary>
    public MoeModel RequireReady()
    {
        if (_draining) throw new ApiException(503, "The server is shutting down");
        if (_model is { } model) return model;
        if (_failure is { } failure) throw new ApiException(503, $"The model failed to load: {failure.Message}");
        throw new ApiException(503, "Loading model");
    }

    /// <summary>Shutdown begins: refuse new requests, cancel running ones after <paramref name="deadline"/>.</summary>
    public void Drain(TimeSpan deadline)
    {
        _draining = true;
        _loadCancel.Cancel();
        _abort.CancelAfter(deadline);
    }

    public void Dispose()
    {
        _draining = true;
        _abort.Cancel();
        _model?.Dispose();
        _model = null;
        _abort.Dispose();
        _loadCancel.Dispose();
    }
}
