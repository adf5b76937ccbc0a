using System.Runtime.CompilerServices;
using System.Threading.Channels;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Model;
using eMoE.Prediction;
using eMoE.Scheduling;

namespace eMoE.Inference;

/// <summary>
/// A MoE language model loaded onto a device, with its engine: weights, a paged KV cache and a
/// background step loop that batches every request in flight. Any number of callers may generate
/// and score concurrently; their sequences share the forward steps (continuous batching).
/// </summary>
public sealed class MoeModel : IDisposable
{
    private readonly ModelWeights _weights;
    private readonly PagedKvCache _kv;
    private readonly ForwardPass _forward;
    private readonly InferenceEngine _engine;
    private readonly ResidencyPlanner? _planner;
    private readonly HashSet<int> _eos;

    /// <summary>The model's configuration.</summary>
    public ModelConfig Config { get; }

    /// <summary>The tokenizer from the model directory, or null when it has no tokenizer.json.</summary>
    public MoeTokenizer? Tokenizer { get; }

    /// <summary>The backend it runs on (a GPU, ILGPU's CPU accelerator, or the host).</summary>
    public ComputeBackend Device { get; }

    /// <summary>The directory it was loaded from.</summary>
    public string Directory { get; }

    /// <summary>KV-cache positions available to one sequence.</summary>
    public int ContextLength => _forward.ContextLength;

    /// <summary>Bytes of expert weights (the part that can be offloaded).</summary>
    public long ExpertBytes => _weights.ExpertBytes;

    /// <summary>Counters of the device expert cache: hits, misses, bytes copied, stalls, per layer.</summary>
    public ResidencyStats ExpertStats => _weights.Experts.Snapshot();

    /// <summary>Counters of the engine: batch sizes, steps, preemptions, KV blocks.</summary>
    public EngineStats EngineStats => _engine.Stats();

    /// <summary>The output lengths per task the scheduler has learned (and was seeded with).</summary>
    public OutputLengthProfile OutputLengths => _engine.OutputLengths;

    /// <summary>Hints the expert cache to start copying these experts now (prefetch); never blocks on the copies.</summary>
    public void PrefetchExperts(IEnumerable<ExpertKey> experts) => _weights.Experts.Prefetch(experts);

    /// <summary>
    /// Tells the expert cache which experts a predictor expects the coming requests to need: they
    /// are prefetched, and the <see cref="EvictionPolicyKind.Predicted"/> policy keeps them resident.
    /// Applied between steps (a running step's kernels may use any pinned slot).
    /// </summary>
    public void SetPredictedExperts(IReadOnlyCollection<ExpertKey> experts) => _engine.BetweenSteps(() => _weights.Experts.SetPredictedSet(experts));

    internal IExpertResidency ExpertCache => _weights.Experts;

    /// <summary>The predictor loop (<see cref="ModelOptions.Prediction"/>), or null when off or when every expert is resident.</summary>
    public ResidencyPlanner? Planner => _planner;

    /// <summary>Bytes of all other weights (embedding, attention, norms, routers, LM head).</summary>
    public long DenseBytes => _weights.DenseBytes;

    /// <summary>Device bytes of the KV cache's block pool.</summary>
    public long KvPoolBytes => _kv.PoolBytes;

    private MoeModel(string directory, ModelConfig config, MoeTokenizer? tokenizer, ComputeBackend device, ModelWeights weights, PagedKvCache kv,
        ForwardPass forward, PredictionOptions? prediction, EngineOptions engine)
    {
        Directory = directory;
        Tokenizer = tokenizer;
        Config = config;
        Device = device;
        _weights = weights;
        _kv = kv;
        _forward = forward;
        _eos = [.. config.EosTokenIds];
        var cache = weights.Experts;
        if (prediction is not null && cache.Slots < cache.TotalExperts)
            _planner = new ResidencyPlanner(config.NumLayers, config.NumExperts, cache.Slots, config.TopK, prediction, cache.OnMiss);
        _engine = new InferenceEngine(forward, cache, _planner, engine);
    }

    /// <summary>Loads a Hugging Face model directory (config.json and safetensors) onto a device.</summary>
    /// <exception cref="ModelFormatException">A file is missing, malformed or unsupported.</exception>
    /// <exception cref="DeviceNotFoundException">The requested device kind is absent.</exception>
    /// <exception cref="ArgumentException">An option cannot work (the message names it), e.g. KV memory below one sequence.</exception>
    public static MoeModel Load(string directory, ModelOptions? options = null, IProgress<LoadProgress>? progress = null)
    {
        options ??= new ModelOptions();
        var config = ModelConfig.Load(directory);
        int context = options.ContextLength ?? Math.Min(config.MaxPositionEmbeddings, 4096);
        if (context <= 0) throw new ArgumentException($"context length must be positive, got {context}");
        options.Engine.Validate();
        if (options.Prediction is not null && options.Experts.Policy != EvictionPolicyKind.Predicted)
            throw new ArgumentException($"prediction keeps the predicted experts resident with the Predicted eviction policy, not {options.Experts.Policy}");
        options.Prediction?.Validate();

        var tokenizer = File.Exists(Path.Combine(directory, "tokenizer.json")) ? MoeTokenizer.Load(directory) : null;
        if (tokenizer is not null && tokenizer.VocabSize > config.VocabSize)
            throw new ModelFormatException($"{directory}: tokenizer.json has {tokenizer.VocabSize} tokens but config.json's vocab_size is {config.VocabSize}");
        int blocks = KvBlocks(config, context, options.Engine);
        var parallel = ExpertParallelism.Resolve(config, options);
        var checkpoint = Checkpoint.Open(directory);
        var devices = new List<ComputeBackend>();
        try
        {
            foreach (var spec in parallel?.Devices ?? [options.Devices is [var one] ? one : options.Device]) devices.Add(ComputeBackend.Create(spec, options.Threads));
        }
        catch
        {
            foreach (var opened in devices) opened.Dispose();
            checkpoint.Dispose();
            throw;
        }
        var device = devices[0];
        ModelWeights? weights = null;
        PagedKvCache? kv = null;
        ForwardPass? forward = null;
        try
        {
            Func<IExpertResidency>? experts = parallel is null ? null : () => parallel.CreateResidency(devices, config, checkpoint, options.Experts);
            weights = ModelWeights.Upload(device, config, checkpoint, options.Experts, progress, experts);
            kv = new PagedKvCache(device, config, context, blocks);
            int tokensPerStep = Math.Min(options.Engine.MaxTokensPerStep, context);
            forward = new ForwardPass(device, config, weights, kv, context, tokensPerStep, Math.Min(options.Engine.MaxBatch, tokensPerStep));
            device.Synchronize();
            return new MoeModel(directory, config, tokenizer, device, weights, kv, forward, options.Prediction, options.Engine);
        }
        catch
        {
            forward?.Dispose();
            kv?.Dispose();
            if (weights is null)
            {
                checkpoint.Dispose();
                // The expert residency owns the other devices once it exists.
                foreach (var peer in devices.Skip(1)) peer.Dispose();
            }
            else weights.Dispose();
            device.Dispose();
            throw;
        }
    }

    /// <summary>KV blocks for the options: the given memory, or room for a full batch of whole-context sequences.</summary>
    private static int KvBlocks(ModelConfig config, int context, EngineOptions engine)
    {
        long blockBytes = PagedKvCache.BytesPerBlock(config, PagedKvCache.DefaultBlockSize);
        int perSequence = (context + PagedKvCache.DefaultBlockSize - 1) / PagedKvCache.DefaultBlockSize;
        long blocks = engine.KvMemoryBytes is long bytes ? bytes / blockBytes : (long)perSequence * Math.Min(engine.MaxBatch, engine.MaxTokensPerStep);
        return (int)Math.Min(blocks, int.MaxValue);
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
    /// Starts generating a continuation of a prompt given as token ids (nothing is added to them);
    /// enumerate the result to stream tokens.
    /// </summary>
    /// <exception cref="ArgumentException">An id is outside the vocabulary.</exception>
    public Generation Generate(IReadOnlyList<int> promptIds, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        options ??= new GenerationOptions();
        var tokenizer = RequireTokenizer();
        CheckIds(promptIds);
        return new Generation(this, tokenizer, [.. promptIds], options);
    }

    /// <summary>
    /// Logits [ids.Length, V] for every position of one sequence starting at position 0
    /// (for tests and tools; generation reads only the last row). Blocks until done.
    /// </summary>
    public float[] ComputeLogits(IReadOnlyList<int> ids)
    {
        CheckIds(ids);
        if (ids.Count == 0) throw new ArgumentException("no tokens to compute logits for");
        if (ids.Count > ContextLength) throw new ArgumentException($"{ids.Count} tokens exceed the context length {ContextLength}");
        var result = new float[(long)ids.Count * Config.VocabSize];
        RunAll([new ScoringSequence(_engine.NextId(), ids, null, _engine.Now, null, result, score: true, CancellationToken.None) { Planned = true }]);
        return result;
    }

    /// <summary>
    /// Perplexity of a token sequence: cut into consecutive windows of <see cref="PerplexityOptions.Context"/>
    /// tokens; in each window every token after the first is scored given the ones before it. With
    /// prediction on, each window is one request of <see cref="PerplexityOptions.Task"/>. Blocks until done.
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
        // One generator for the whole text, drawn window after window: the same seed routes the same way.
        var noise = new Random(options.Seed);
        var windows = new List<ScoringSequence>();
        for (int window = 0; window < ids.Count; window += context)
        {
            var hooks = new SequenceHooks
            {
                Routing = _planner is null ? null : NewRecorder(options.Task),
                RandomRoutingLayer = options.RandomRoutingLayer ?? -1,
                RoutingNoise = noise,
            };
            windows.Add(new ScoringSequence(_engine.NextId(), ids.Skip(window).Take(context).ToArray(), options.Task, _engine.Now, hooks, null,
                score: true, cancellationToken));
        }
        // Windows are independent, so they share steps, unless the predictor must see them as successive
        // requests or their random routing must draw from one generator in window order.
        if (_planner is null && options.RandomRoutingLayer is null) RunAll(windows);
        else foreach (var window in windows) RunAll([window]);
        double sum = 0;
        long scored = 0;
        foreach (var window in windows)
        {
            sum += window.NllSum;
            scored += window.Scored;
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
        for (int window = 0; window < ids.Count; window += ContextLength)
        {
            var tokens = ids.Skip(window).Take(ContextLength).ToArray();
            var sequence = new ScoringSequence(_engine.NextId(), tokens, null, _engine.Now, new SequenceHooks { RouterInputs = observer }, null,
                score: false, cancellationToken)
            { Planned = true };
            RunAll([sequence]);
        }
    }

    /// <summary>Submits scoring sequences together and blocks until all have run (cancellation and engine failures surface as exceptions).</summary>
    private void RunAll(IReadOnlyList<ScoringSequence> sequences)
    {
        foreach (var s in sequences) _engine.Submit(s);
        Task.WhenAll(sequences.Select(s => s.Completion)).GetAwaiter().GetResult();
    }

    private TraceRecorder NewRecorder(string? task)
    {
        var recorder = new TraceRecorder(Config.NumLayers, Config.NumExperts, Config.TopK);
        recorder.Trace.Task = task;
        return recorder;
    }

    /// <summary>
    /// Generates token ids after <paramref name="promptIds"/>, streaming each as soon as it is
    /// chosen. <paramref name="stats"/> is filled in as generation runs. Concurrent calls are
    /// batched by the engine; cancelling (or leaving the enumeration early) frees the request's
    /// KV blocks within one step.
    /// </summary>
    public async IAsyncEnumerable<int> GenerateIdsAsync(IReadOnlyList<int> promptIds, GenerationOptions options, GenerationStats stats,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        CheckIds(promptIds);
        options.Sampling.Validate();
        options.Slo?.Validate();
        if (promptIds.Count == 0) throw new ArgumentException("the prompt has no tokens");
        if (options.MaxTokens < 0) throw new ArgumentException($"max tokens must be >= 0, got {options.MaxTokens}");
        if (promptIds.Count >= ContextLength)
            throw new ArgumentException($"the prompt has {promptIds.Count} tokens; the context holds {ContextLength}");
        stats.PromptTokens = promptIds.Count;
        if (options.MaxTokens == 0)
        {
            stats.FinishReason = FinishReason.MaxTokens;
            yield break;
        }

        var recorder = options.RecordRouting || _planner is not null ? NewRecorder(options.Task) : null;
        if (options.RecordRouting) stats.Trace = recorder!.Trace;
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var sequence = new GenerationSequence(_engine.NextId(), promptIds, options, _eos, ContextLength, _engine.Now,
            recorder is null ? null : new SequenceHooks { Routing = recorder }, cancel.Token);
        _engine.Submit(sequence);
        var reader = sequence.Output;
        TimeSpan? first = null;
        try
        {
            while (await WaitForTokens(reader, cancellationToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var token))
                {
                    if (cancellationToken.IsCancellationRequested) break;
                    first ??= token.At;
                    stats.GeneratedTokens++;
                    stats.PrefillTime = first.Value - (sequence.AdmittedAt ?? first.Value);
                    stats.TimeToFirstToken = first.Value - sequence.ArrivedAt;
                    stats.DecodeTime = token.At - first.Value;
                    yield return token.Token;
                }
                if (cancellationToken.IsCancellationRequested) break;
            }
            if (cancellationToken.IsCancellationRequested)
            {
                stats.FinishReason = FinishReason.Cancelled;
                yield break;
            }
            // The engine has finished the sequence: its last counts include an end-of-sequence token, which is not streamed.
            stats.FinishReason = sequence.FinishReason;
            stats.GeneratedTokens = sequence.SampledTokens;
            stats.Preemptions = sequence.Preemptions;
            if (sequence.LastSampleAt is { } last && first is { } f) stats.DecodeTime = last - f;
            if (first is null && sequence.LastSampleAt is { } only)
            {
                stats.PrefillTime = only - (sequence.AdmittedAt ?? only);
                stats.TimeToFirstToken = only - sequence.ArrivedAt;
            }
        }
        finally
        {
            // Leaving early (cancelled, or the caller stopped enumerating): the engine frees the sequence.
            if (!sequence.Finished) await cancel.CancelAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Waits for tokens or the end; false at the end or when the caller cancelled (an engine failure is rethrown).</summary>
    private static async ValueTask<bool> WaitForTokens(ChannelReader<TokenEvent> reader, CancellationToken cancellationToken)
    {
        try
        {
            return await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return false;
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

    /// <summary>Stops the engine (unfinished requests end with <see cref="ObjectDisposedException"/>) and frees the device memory and the device.</summary>
    public void Dispose()
    {
        _engine.Dispose();
        _forward.Dispose();
        _kv.Dispose();
        _weights.Dispose();
        Device.Dispose();
    }
}
