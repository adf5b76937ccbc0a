using System.Diagnostics;
using System.Runtime.CompilerServices;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Model;
using eMoE.Prediction;

namespace eMoE.Inference;

/// <summary>
/// A MoE language model loaded onto a device: configuration, device weights and one inference
/// state (KV cache and activations). Generation and scoring on one model run one at a time.
/// </summary>
public sealed class MoeModel : IDisposable
{
    private readonly ModelWeights _weights;
    private readonly ForwardPass _forward;
    private readonly ResidencyPlanner? _planner;
    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>The model's configuration.</summary>
    public ModelConfig Config { get; }

    /// <summary>The tokenizer from the model directory, or null when it has no tokenizer.json.</summary>
    public MoeTokenizer? Tokenizer { get; }

    /// <summary>The device it runs on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The directory it was loaded from.</summary>
    public string Directory { get; }

    /// <summary>KV-cache positions available to one sequence.</summary>
    public int ContextLength => _forward.ContextLength;

    /// <summary>Bytes of expert weights (the part that can be offloaded).</summary>
    public long ExpertBytes => _weights.ExpertBytes;

    /// <summary>Counters of the device expert cache: hits, misses, bytes copied, stalls, per layer.</summary>
    public ResidencyStats ExpertStats => _weights.Experts.Snapshot();

    /// <summary>Hints the expert cache to start copying these experts now (prefetch); never blocks on the copies.</summary>
    public void PrefetchExperts(IEnumerable<ExpertKey> experts) => _weights.Experts.Prefetch(experts);

    /// <summary>
    /// Tells the expert cache which experts a predictor expects the coming prompt to need: they are
    /// prefetched, and the <see cref="EvictionPolicyKind.Predicted"/> policy keeps them resident.
    /// </summary>
    public void SetPredictedExperts(IReadOnlyCollection<ExpertKey> experts)
    {
        // Between requests only: a running generation holds the gate and its kernels may use any pinned slot.
        _gate.Wait();
        try
        {
            _weights.Experts.SetPredictedSet(experts);
        }
        finally
        {
            _gate.Release();
        }
    }

    internal ExpertCache ExpertCache => _weights.Experts;

    /// <summary>The predictor loop (<see cref="ModelOptions.Prediction"/>), or null when off or when every expert is resident.</summary>
    public ResidencyPlanner? Planner => _planner;

    /// <summary>Bytes of all other weights (embedding, attention, norms, routers, LM head).</summary>
    public long DenseBytes => _weights.DenseBytes;

    private MoeModel(string directory, ModelConfig config, MoeTokenizer? tokenizer, ComputeDevice device, ModelWeights weights, ForwardPass forward,
        PredictionOptions? prediction)
    {
        Directory = directory;
        Tokenizer = tokenizer;
        Config = config;
        Device = device;
        _weights = weights;
        _forward = forward;
        var cache = weights.Experts;
        if (prediction is not null && cache.Slots < cache.TotalExperts)
            _planner = new ResidencyPlanner(config.NumLayers, config.NumExperts, cache.Slots, config.TopK, prediction, cache.OnMiss);
    }

    /// <summary>Loads a Hugging Face model directory (config.json and safetensors) onto a device.</summary>
    /// <exception cref="ModelFormatException">A file is missing, malformed or unsupported.</exception>
    /// <exception cref="DeviceNotFoundException">The requested device kind is absent.</exception>
    public static MoeModel Load(string directory, ModelOptions? options = null, IProgress<LoadProgress>? progress = null)
    {
        options ??= new ModelOptions();
        var config = ModelConfig.Load(directory);
        int context = options.ContextLength ?? Math.Min(config.MaxPositionEmbeddings, 4096);
        if (context <= 0) throw new ArgumentException($"context length must be positive, got {context}");
        if (options.MaxTokensPerStep <= 0) throw new ArgumentException($"tokens per step must be positive, got {options.MaxTokensPerStep}");
        if (options.Prediction is not null && options.Experts.Policy != EvictionPolicyKind.Predicted)
            throw new ArgumentException($"prediction keeps the predicted experts resident with the Predicted eviction policy, not {options.Experts.Policy}");
        options.Prediction?.Validate();

        var tokenizer = File.Exists(Path.Combine(directory, "tokenizer.json")) ? MoeTokenizer.Load(directory) : null;
        if (tokenizer is not null && tokenizer.VocabSize > config.VocabSize)
            throw new ModelFormatException($"{directory}: tokenizer.json has {tokenizer.VocabSize} tokens but config.json's vocab_size is {config.VocabSize}");
        using var checkpoint = Checkpoint.Open(directory);
        var device = ComputeDevice.Create(options.Device);
        ModelWeights? weights = null;
        try
        {
            weights = ModelWeights.Upload(device, config, checkpoint, options.Experts, progress);
            var forward = new ForwardPass(device, config, weights, context, options.MaxTokensPerStep);
            device.Synchronize();
            return new MoeModel(directory, config, tokenizer, device, weights, forward, options.Prediction);
        }
        catch
        {
            weights?.Dispose();
            device.Dispose();
            throw;
        }
    }

    /// <summary>The tokenizer, or a clear error when the model directory has none.</summary>
    public MoeTokenizer RequireTokenizer() =>
        Tokenizer ?? throw new ModelFormatException($"{Directory}: no tokenizer.json; text cannot be encoded");

    /// <summary>
    /// Starts generating a continuation of <paramref name="prompt"/>; enumerate the result to
    /// stream tokens. The prompt gets the special tokens the tokenizer's configuration adds
    /// (e.g. BOS) unless <see cref="GenerationOptions.AddSpecialTokens"/> is false.
    /// </summary>
    public Generation Generate(string prompt, GenerationOptions? options = null)
    {
        options ??= new GenerationOptions();
        var tokenizer = RequireTokenizer();
        return new Generation(this, tokenizer, tokenizer.Encode(prompt, options.AddSpecialTokens), options);
    }

    /// <summary>
    /// Logits [ids.Length, V] for every position of one sequence starting at position 0
    /// (for tests and tools; generation reads only the last row).
    /// </summary>
    public float[] ComputeLogits(IReadOnlyList<int> ids)
    {
        CheckIds(ids);
        if (ids.Count > ContextLength) throw new ArgumentException($"{ids.Count} tokens exceed the context length {ContextLength}");
        var result = new float[(long)ids.Count * Config.VocabSize];
        _gate.Wait();
        try
        {
            Device.Accelerator.Bind();
            int step = _forward.MaxTokensPerStep;
            for (int start = 0; start < ids.Count; start += step)
            {
                int n = Math.Min(step, ids.Count - start);
                _forward.Run(ids.Skip(start).Take(n).ToArray(), start, allLogits: true);
                _forward.ReadLogits(result.AsSpan(start * Config.VocabSize, n * Config.VocabSize));
            }
        }
        finally
        {
            _gate.Release();
        }
        return result;
    }

    /// <summary>
    /// Perplexity of a token sequence: cut into consecutive windows of <see cref="PerplexityOptions.Context"/>
    /// tokens; in each window every token after the first is scored given the ones before it. With
    /// prediction on, each window is one request of <see cref="PerplexityOptions.Task"/>.
    /// </summary>
    public PerplexityResult ScorePerplexity(IReadOnlyList<int> ids, PerplexityOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new PerplexityOptions();
        CheckIds(ids);
        int context = options.Context;
        if (context < 2 || context > ContextLength)
            throw new ArgumentException($"context must be between 2 and {ContextLength} tokens, got {context}");
        if (options.RandomRoutingLayer is int randomLayer && (randomLayer < 0 || randomLayer >= Config.NumLayers))
            throw new ArgumentException($"layer {randomLayer} does not exist: the model has {Config.NumLayers} MoE layers");
        double sum = 0;
        long scored = 0;
        var nll = new float[_forward.MaxTokensPerStep];
        _gate.Wait(cancellationToken);
        try
        {
            Device.Accelerator.Bind();
            _forward.RandomRoutingLayer = options.RandomRoutingLayer ?? -1;
            _forward.RoutingNoise = new Random(options.Seed);
            for (int window = 0; window < ids.Count; window += context)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var tokens = ids.Skip(window).Take(context).ToArray();
                var recorder = BeginRequest(options.Task, record: false);
                _forward.SetTargets(tokens);
                for (int start = 0; start < tokens.Length - 1; start += _forward.MaxTokensPerStep)
                {
                    int n = Math.Min(_forward.MaxTokensPerStep, tokens.Length - start);
                    _forward.Run(tokens.AsSpan(start, n), start, allLogits: true);
                    int count = Math.Min(n, tokens.Length - 1 - start); // the window's last token predicts nothing
                    _forward.ScoreNextTokens(start, count, nll);
                    for (int i = 0; i < count; i++) sum += nll[i];
                    scored += count;
                }
                EndRequest(recorder);
            }
        }
        finally
        {
            _forward.Observer = null;
            _forward.RandomRoutingLayer = -1;
            _gate.Release();
        }
        if (scored == 0) throw new ArgumentException("nothing to score: every window holds a single token");
        return new PerplexityResult(scored, sum / scored);
    }

    /// <summary>
    /// Runs <paramref name="ids"/> (windows of the context length, each from position 0) and shows
    /// every layer's MoE input and router logits to <paramref name="observer"/> (pre-gate fitting).
    /// </summary>
    internal void ObserveRouterInputs(IReadOnlyList<int> ids, IRouterInputObserver observer, CancellationToken cancellationToken)
    {
        CheckIds(ids);
        _gate.Wait(cancellationToken);
        try
        {
            Device.Accelerator.Bind();
            _forward.RouterInputs = observer;
            for (int window = 0; window < ids.Count; window += ContextLength)
            {
                var tokens = ids.Skip(window).Take(ContextLength).ToArray();
                for (int start = 0; start < tokens.Length; start += _forward.MaxTokensPerStep)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    _forward.Run(tokens.AsSpan(start, Math.Min(_forward.MaxTokensPerStep, tokens.Length - start)), start, allLogits: false);
                }
            }
        }
        finally
        {
            _forward.RouterInputs = null;
            _gate.Release();
        }
    }

    /// <summary>
    /// A request of <paramref name="task"/> starts (the gate is held): the planner's resident set is
    /// applied, and the routing is recorded when asked or when the planner learns from it.
    /// </summary>
    private TraceRecorder? BeginRequest(string? task, bool record)
    {
        if (_planner?.BeginPrompt(task) is { } plan) ApplyPlan(plan);
        var recorder = record || _planner is not null ? new TraceRecorder(Config.NumLayers, Config.NumExperts, Config.TopK) : null;
        if (recorder is not null) recorder.Trace.Task = task;
        _forward.Observer = recorder;
        return recorder;
    }

    /// <summary>The request's prefill has run: the planner may refine the resident set for its decode.</summary>
    private void AfterPrefill(TraceRecorder? recorder)
    {
        if (_planner is null || recorder is null) return;
        if (_planner.AfterPrefill(recorder.Trace.Task, RoutingCounts.Prefill(recorder.Trace)) is { } plan) ApplyPlan(plan);
    }

    /// <summary>The request has ended: the planner learns its routing.</summary>
    private void EndRequest(TraceRecorder? recorder)
    {
        _forward.Observer = null;
        if (recorder is not null) _planner?.EndPrompt(recorder.Trace);
    }

    // Reroute mode routes only to experts that have landed, so it waits for the set (eMoE's ΔE).
    private void ApplyPlan(IReadOnlyList<ExpertKey> plan) =>
        _weights.Experts.SetPredictedSet(plan, waitForCopies: _weights.Experts.OnMiss == MissMode.Reroute);

    /// <summary>
    /// Generates token ids after <paramref name="promptIds"/>, streaming each as soon as it is
    /// chosen. <paramref name="stats"/> is filled in as generation runs.
    /// </summary>
    public async IAsyncEnumerable<int> GenerateIdsAsync(IReadOnlyList<int> promptIds, GenerationOptions options, GenerationStats stats,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        CheckIds(promptIds);
        options.Sampling.Validate();
        if (promptIds.Count == 0) throw new ArgumentException("the prompt has no tokens");
        if (options.MaxTokens < 0) throw new ArgumentException($"max tokens must be >= 0, got {options.MaxTokens}");
        if (promptIds.Count >= ContextLength)
            throw new ArgumentException($"the prompt has {promptIds.Count} tokens; the context holds {ContextLength}");

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        TraceRecorder? recorder = null;
        try
        {
            recorder = BeginRequest(options.Task, options.RecordRouting);
            if (options.RecordRouting) stats.Trace = recorder!.Trace;
            var random = options.Sampling.Seed is int seed ? new Random(seed) : new Random();
            stats.PromptTokens = promptIds.Count;
            var clock = Stopwatch.StartNew();
            int position = 0;
            int step = _forward.MaxTokensPerStep;
            int next = -1;
            for (int generated = 0; generated < options.MaxTokens; generated++)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    stats.FinishReason = FinishReason.Cancelled;
                    yield break;
                }
                if (position >= ContextLength)
                {
                    stats.FinishReason = FinishReason.ContextFull;
                    yield break;
                }
                // Off the caller's thread: the device work is synchronous.
                next = await Task.Run(() =>
                {
                    Device.Accelerator.Bind();
                    if (generated == 0)
                    {
                        for (; position < promptIds.Count; position += step)
                        {
                            int n = Math.Min(step, promptIds.Count - position);
                            _forward.Run(promptIds.Skip(position).Take(n).ToArray(), position, allLogits: false);
                        }
                        position = promptIds.Count;
                        int first = _forward.Sample(0, options.Sampling, (float)random.NextDouble());
                        AfterPrefill(recorder);
                        return first;
                    }
                    _forward.Run([next], position++, allLogits: false);
                    return _forward.Sample(0, options.Sampling, (float)random.NextDouble());
                }, CancellationToken.None).ConfigureAwait(false);

                if (generated == 0) stats.PrefillTime = clock.Elapsed;
                else stats.DecodeTime = clock.Elapsed - stats.PrefillTime;
                stats.GeneratedTokens = generated + 1;
                if (options.StopAtEndOfSequence && Config.EosTokenIds.Contains(next))
                {
                    stats.FinishReason = FinishReason.EndOfSequence;
                    yield break;
                }
                yield return next;
            }
            stats.FinishReason = FinishReason.MaxTokens;
        }
        finally
        {
            EndRequest(recorder);
            _gate.Release();
        }
    }

    private void CheckIds(IReadOnlyList<int> ids)
    {
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)Config.VocabSize)
                throw new ArgumentException($"token id {id} is outside the vocabulary (0..{Config.VocabSize - 1})");
        }
    }

    /// <summary>Frees the device memory and the device.</summary>
    public void Dispose()
    {
        _forward.Dispose();
        _weights.Dispose();
        Device.Dispose();
        _gate.Dispose();
    }
}
